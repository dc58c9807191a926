"""Similarity between layers: HSIC and CKA (the paper's SSC-CKA and linear CKA), and the
measures peers report (mutual kNN, RSA, Procrustes)."""

from ssc_jax.similarity.cka import MinibatchCKA, cka, cka_matrix, linear_cka, minibatch_cka
from ssc_jax.similarity.hsic import HSICStack, hsic
from ssc_jax.similarity.peers import mutual_knn, procrustes, rsa
from ssc_jax.similarity.streamed import streamed_cka_matrix

__all__ = [
    "HSICStack",
    "MinibatchCKA",
    "cka",
    "cka_matrix",
    "hsic",
    "linear_cka",
    "minibatch_cka",
    "mutual_knn",
    "procrustes",
    "rsa",
    "streamed_cka_matrix",
]
