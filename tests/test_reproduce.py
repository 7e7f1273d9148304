"""The reproduction harness: one run per (method, sweep value, seed), mean +- std table."""

import numpy as np

from experiments import reproduce
from experiments.tables import TABLES


def test_run_table_wires_rows_and_aggregates(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, workdir):  # accuracy depends on method, ratio and seed
        seen.append((cfg.method, cfg.split.mismatch_ratio, cfg.seed, cfg.optimizer.lr,
                     cfg.num_steps))
        acc = 0.9 - 0.1 * cfg.split.mismatch_ratio + 0.01 * cfg.seed
        acc += 0.02 * (cfg.method == "pi_model")
        return {"test_accuracy_at_best_val": acc}

    monkeypatch.setattr("sslj.train.loop.train_and_evaluate", fake_train)
    md = reproduce.run_table("oliver_mismatch", "embedded", 2, str(tmp_path),
                             sets=["num_steps=7"])
    table = TABLES["oliver_mismatch"]
    assert len(seen) == len(table.methods) * len(table.sweep_values) * 2
    assert all(s[4] == 7 for s in seen)
    assert {s[3] for s in seen if s[0] == "pi_model"} == {3e-4}  # method override kept
    # supervised at ratio 0.5: accuracies 0.85, 0.86 -> error 14.5 +- 0.5
    row = next(line for line in md.splitlines() if line.startswith("| supervised"))
    assert "14.50 +- 0.50" in row
    pi_row = next(line for line in md.splitlines() if line.startswith("| pi_model"))
    assert pi_row.split("|")[2].strip() == f"{100 * (1 - 0.925):.2f} +- 0.50"
    assert (tmp_path / "oliver_mismatch_embedded.md").read_text() == md
    assert (tmp_path / "oliver_mismatch_embedded.png").stat().st_size > 1000
    assert np.isclose(0.925, 0.9 + 0.005 + 0.02)


def test_oliver_table1_configs_validate_and_split_at_paper_sizes():
    """Full-scale rows: every method validates and the split has the paper's sizes
    (labels drawn like CIFAR-10's / SVHN's training sets, no TFDS needed)."""
    import importlib

    from sslj.config import for_method, parse_methods, validate
    from sslj.data.splits import class_mismatch

    sizes = {"oliver_cifar10_4000": (np.repeat(np.arange(10), 5000), 4000, 41000, 5000),
             "oliver_svhn_1000": (np.random.default_rng(0).choice(
                 10, 73257, p=np.r_[0.07, 0.19, np.full(8, 0.74 / 8)]), 1000, 64932, 7325)}
    for name, (labels, n_labeled, n_unlabeled, n_val) in sizes.items():
        module = importlib.import_module(f"experiments.configs.{name}")
        c = module.get_config()
        assert set(parse_methods(c.compare)) == set(module.EXPECTED_ERROR)
        for m in parse_methods(c.compare):
            validate(for_method(c, m), device_count=1)
            assert module.get_config(m).method == m and module.get_config(m).compare == ""
        sp = class_mismatch(labels, seen_classes=c.split.seen_classes,
                            mismatch_ratio=c.split.mismatch_ratio,
                            labels_per_class=c.split.labels_per_class,
                            unlabeled_size=c.split.unlabeled_size,
                            num_validation=c.split.num_validation)
        assert (len(sp.labeled), len(sp.unlabeled), len(sp.validation)) == (
            n_labeled, n_unlabeled, n_val)
        assert len(np.intersect1d(sp.labeled, sp.unlabeled)) == 0
    assert TABLES["oliver_table1"].paper["vat_entmin"] == 13.13
    assert set(TABLES["oliver_mismatch"].methods) >= {"vat", "mean_teacher", "pseudo_label"}
