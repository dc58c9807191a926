"""Centered kernel alignment (paper Eq. 3): pairwise, on features, as a matrix, by minibatch.

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with HSIC from `ssc_jax.hsic`
(biased, Eq. 4, or the unbiased estimator of Song et al. 2012). When either side has zero
HSIC with itself (a numerically constant matrix, constant features) the CKA is 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.core.checks import check_finite, check_ndim, check_same_n
from ssc_jax.similarity.hsic import (
    ZERO_ULPS,
    HSICStack,
    check_samples,
    checked_hsic_stack,
    hsic_stack,
    hsic_stack_core,
)


def cka(K, L, *, unbiased: bool = False) -> jax.Array:
    """CKA between two n x n matrices (kernels or SSC affinities); a scalar.

    Args:
      K: (n, n) matrix over n samples.
      L: (n, n) matrix over the same samples.
      unbiased: use the unbiased HSIC (n >= 4); the result can then be negative.
    """
    return _cka_from_hsic(checked_hsic_stack(K, L, ("K", "L"), 2, unbiased=unbiased))[0, 0]


def cka_matrix(Ks, Ls=None, *, unbiased: bool = False, chunk_size: int | None = None) -> jax.Array:
    """CKA between every pair of a stack, or across two stacks, in one chunked matmul.

    Each matrix is centered once and the pairwise HSICs are a single
    ``(L1, n^2) @ (n^2, L2)`` product over blocks of ``chunk_size`` rows, so memory beyond
    the inputs stays within ``(L1 + L2) * chunk_size * n`` entries, ``L1 * chunk_size * n``
    without ``Ls`` (see `ssc_jax.hsic`).

    Args:
      Ks: (L1, n, n) stack, e.g. the SSC affinities of L1 layers.
      Ls: (L2, n, n) stack on the same samples (another network or epoch); ``None`` compares
        Ks with itself.
      unbiased: use the unbiased HSIC (n >= 4).
      chunk_size: most rows per block; by default from the memory policy's block budget,
        see `ssc_jax.similarity.hsic.block_rows`.

    Returns:
      (L1, L2) CKA matrix; (L1, L1) and symmetric when ``Ls`` is ``None``.
    """
    return _cka_from_hsic(hsic_stack(Ks, Ls, unbiased=unbiased, chunk_size=chunk_size))


def linear_cka(X, Y, *, unbiased: bool = False) -> jax.Array:
    """Linear CKA between two activation matrices over the same samples; a scalar.

    Features are mean-centered first. The biased estimator uses the feature-space form
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` whenever it costs fewer flops than the
    n x n Grams (``d1 * d2 < n * (d1 + d2)``, always so when min(d1, d2) < n); the unbiased
    estimator goes through the Grams ``Xc Xc^T`` and ``Yc Yc^T``.

    Args:
      X: (n, d1) activations, samples as rows.
      Y: (n, d2) activations of the same n samples.
      unbiased: use the unbiased HSIC (n >= 4).
    """
    X, Y = _as_features("X", X), _as_features("Y", Y)
    check_same_n(("X", "Y"), X.shape[0], Y.shape[0])
    check_samples(X.shape[0], unbiased)
    dtype = jnp.result_type(X, Y)
    return _linear_cka(X.astype(dtype), Y.astype(dtype), unbiased)


class MinibatchCKA(NamedTuple):
    """Minibatch CKA (Nguyen et al. 2020): CKA of HSICs summed over minibatches.

    The state is an `HSICStack` of running sums; ``result`` is the ratio of the sums, not a
    mean of per-batch CKAs. Made by `minibatch_cka`.

    Attributes:
      init: ``(n_k, n_l=None, dtype=None) -> HSICStack`` zero sums for n_k matrices against
        n_l (``None``: the n_k matrices against themselves).
      update: ``(state, Ks, Ls=None) -> HSICStack`` adds the HSICs of one minibatch, Ks
        (n_k, b, b) and Ls (n_l, b, b) kernels of the batch's b samples.
      result: ``(state) -> (n_k, n_l)`` CKA matrix.
    """

    init: Callable[..., HSICStack]
    update: Callable[..., HSICStack]
    result: Callable[[HSICStack], jax.Array]


def minibatch_cka(*, unbiased: bool = True, chunk_size: int | None = None) -> MinibatchCKA:
    """An accumulator of minibatch CKA between stacks of per-batch kernels.

    The unbiased HSIC (the default, as in Nguyen et al. 2020) makes the summed estimate
    independent of the batch size; every batch then needs b >= 4 samples. ``update`` is
    jit-compatible.

    Example::

        acc = minibatch_cka()
        state = acc.init(n_layers)
        for feats in batches:  # feats: list of (b, d_l) activations of one batch
            state = acc.update(state, jnp.stack([f @ f.T for f in feats]))
        similarity = acc.result(state)  # (n_layers, n_layers)
    """

    def init(n_k: int, n_l: int | None = None, dtype=None) -> HSICStack:
        n_l = n_k if n_l is None else n_l
        dtype = jnp.result_type(float) if dtype is None else dtype
        return HSICStack(
            jnp.zeros((n_k, n_l), dtype), jnp.zeros((n_k,), dtype), jnp.zeros((n_l,), dtype)
        )

    def update(state: HSICStack, Ks, Ls=None) -> HSICStack:
        batch = hsic_stack(Ks, Ls, unbiased=unbiased, chunk_size=chunk_size)
        return jax.tree.map(lambda total, new: total + new.astype(total.dtype), state, batch)

    return MinibatchCKA(init, update, _cka_from_hsic)


@jax.jit
def _cka_from_hsic(h: HSICStack) -> jax.Array:
    """(L1, L2) CKA from cross and self HSICs; 0 where either self-HSIC is 0."""
    den = jnp.sqrt(h.self_k)[:, None] * jnp.sqrt(h.self_l)[None, :]
    return jnp.where(den > 0, h.cross / jnp.where(den > 0, den, 1), 0)


def _as_features(name: str, x) -> jax.Array:
    """``x`` as a floating (n, d) JAX array; raise otherwise."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    check_ndim(name, x, 2, "an (n_samples, n_features) matrix")
    check_finite(name, x)
    return x


@partial(jax.jit, static_argnums=2)
def _linear_cka(X: jax.Array, Y: jax.Array, unbiased: bool) -> jax.Array:
    n, d1 = X.shape
    d2 = Y.shape[1]
    (Xc, x_live), (Yc, y_live) = _center_features(X), _center_features(Y)
    dot = partial(jnp.matmul, precision=lax.Precision.HIGHEST)
    if unbiased or d1 * d2 >= n * (d1 + d2):
        h, _ = hsic_stack_core(dot(Xc, Xc.T)[None], dot(Yc, Yc.T)[None], unbiased, None)
        value = _cka_from_hsic(h)[0, 0]
    else:
        cross = jnp.sum(dot(Yc.T, Xc) ** 2)
        value = cross / jnp.sqrt(_gram_energy(Xc, dot) * _gram_energy(Yc, dot))
    return jnp.where(x_live & y_live, value, 0)


def _center_features(X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean-centered features, and whether any variance survives rounding of the mean.

    The first sample is subtracted before the mean is taken (shifted data), so that a large
    offset of the features costs float32 no digits; constant features center to exactly 0.
    """
    shifted = X - X[0]
    mean = jnp.mean(shifted, axis=0)
    Xc = shifted - mean
    eps = jnp.finfo(X.dtype).eps
    live = jnp.sum(Xc**2) > (ZERO_ULPS * eps) ** 2 * X.shape[0] * jnp.sum(mean**2)
    return Xc, live


def _gram_energy(Xc: jax.Array, dot) -> jax.Array:
    """||Xc^T Xc||_F^2 = ||Xc Xc^T||_F^2, through the smaller of the two Grams."""
    n, d = Xc.shape
    gram = dot(Xc.T, Xc) if d <= n else dot(Xc, Xc.T)
    return jnp.sum(gram**2)
