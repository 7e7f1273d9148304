"""ICN (Jin, Lazarow & Tu, "Introspective classification with convolutional nets",
NeurIPS 2017): the synthesis sampler, the pseudo-negative pool, the reclassification
losses (softmax Eq. 9, one-vs-all Eq. 5), FGSM robustness and the figure of synthesized
pseudo-negatives. The procedure that runs them in rounds is `sslj.procedures.icn`.
"""
