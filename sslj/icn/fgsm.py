"""FGSM robustness (Goodfellow et al. 2015), as the ICN paper's Sec. 4.1.

x_adv = clip(x + eps * sign(grad_x CE(f(x), y)), -1, 1) in the model's input range
[-1, 1]; the paper's eps = 0.125 is on the [0, 1] pixel scale, i.e. 0.25 here
(`input_eps`). Adversarials are made from the test images the attacked model classifies
correctly; the paper reports how many of them fool it, and how many of the baseline
CNN's adversarials fool ICN (and the reverse). The attack's loss is the softmax
cross-entropy of the model's K logits for both formulations (the paper states none for
its one-vs-all nets; their logits are the K binary nets' scores, argmax-compared).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslj.data.augment import to_float


def input_eps(eps_unit: float) -> float:
    """eps on the [0, 1] pixel scale -> eps on the model's [-1, 1] input scale."""
    return 2.0 * float(eps_unit)


def make_fgsm(model):
    """Jitted `(variables, images uint8, labels, eps) -> (adversarial float images,
    clean predictions, adversarial predictions)`, inference mode."""

    def attack(variables, images, labels, eps):
        x = to_float(images)

        def loss(x):
            logits = model.apply(variables, x, train=False)
            return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                                labels[:, None], axis=1))

        g = jax.grad(loss)(x)
        adv = jnp.clip(x + eps * jnp.sign(g), -1.0, 1.0)
        clean = jnp.argmax(model.apply(variables, x, train=False), -1)
        fooled = jnp.argmax(model.apply(variables, adv, train=False), -1)
        return adv, clean, fooled

    return jax.jit(attack)


def make_classify(model):
    return jax.jit(lambda variables, x: jnp.argmax(model.apply(variables, x, train=False), -1))


def fgsm_set(attack, variables, images, labels, eps: float, batch_size: int = 500):
    """Adversarials of the images `variables` classifies correctly: (adv images, labels,
    indices into `images`, fraction of them the same model misclassifies)."""
    advs, keep = [], []
    for i in range(0, len(labels), batch_size):
        adv, clean, pred = jax.device_get(attack(variables, images[i:i + batch_size],
                                                 labels[i:i + batch_size], eps))
        ok = clean == labels[i:i + batch_size]
        advs.append((adv[ok], pred[ok] != labels[i:i + batch_size][ok]))
        keep.append(np.nonzero(ok)[0] + i)
    adv = np.concatenate([a for a, _ in advs])
    fooled = np.concatenate([f for _, f in advs])
    idx = np.concatenate(keep)
    return adv, labels[idx], idx, float(np.mean(fooled)) if len(fooled) else 0.0


def fooled_fraction(classify, variables, adv, labels, batch_size: int = 500) -> float:
    """Fraction of adversarial images `variables` misclassifies."""
    if len(labels) == 0:
        return 0.0
    preds = np.concatenate([np.asarray(jax.device_get(classify(variables,
                                                               adv[i:i + batch_size])))
                            for i in range(0, len(labels), batch_size)])
    return float(np.mean(preds != labels))
