"""The one-off factorisation behind the solver: ``G = U diag(l) U^T``, dense or low rank.

The eigendecomposition (or a thin SVD of the features) is taken once per problem, in float64
for float32 input when asked, and gives the exact ``(tau G + mu I)^-1`` for every mu the
solver picks. Its numerical rank decides between the dense and the Woodbury update, which
are the two factor types here: each prepares its inverse for one mu and applies it in the
z-update ``Z = (tau G + mu C - Lam) (tau G + mu I)^-1`` (see ``ssc_jax.solver.admm``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.solver.distributed import to_host

Array = jax.Array


class DenseFactor(NamedTuple):
    """``G = U diag(l) U^T`` with a full basis: U (n, n), l (n,).

    For a given mu, ``prepare`` forms ``M = (tau G + mu I)^-1`` (one n^3 matmul); then
    ``Z = (tau G + D) M = (D - mu E) M + E``, with ``E`` the rows of the identity, because
    ``tau G M = I - mu M``. ``z_update`` takes ``D - mu E``: one (b, n) x (n, n) matmul per
    iteration, and E is an index comparison that XLA fuses into the elementwise work.
    """

    vectors: Array
    values: Array

    def prepare(self, tau: float, mu: Array) -> Array:
        """(n, n) ``M = (tau G + mu I)^-1``."""
        return (self.vectors / (tau * self.values + mu)) @ self.vectors.T

    def z_update(self, inverse: Array, shifted_rhs: Array, mu: Array, diagonal: Array) -> Array:
        """(b, n) Z from ``shifted_rhs = D - mu E`` and the (b, n) mask ``diagonal`` of E."""
        return _plus_eye(shifted_rhs @ inverse, diagonal)


class LowRankFactor(NamedTuple):
    """``G = U diag(l) U^T`` with a thin basis: U (n, r), l (r,), r < n.

    Woodbury gives ``(tau G + mu I)^-1 B = (B - U diag(w) U^T B) / mu`` with
    ``w = tau l / (tau l + mu)``, and ``tau G (tau G + mu I)^-1 = U diag(w) U^T``. So with
    ``B = D - mu E``, ``Z = B / mu + E - ((B U) * w / mu) U^T``: 4 b n r flops per iteration
    and no n x n matrix besides the state.
    """

    vectors: Array
    values: Array

    def prepare(self, tau: float, mu: Array) -> Array:
        """(r,) the Woodbury weights w."""
        return tau * self.values / (tau * self.values + mu)

    def z_update(self, weights: Array, shifted_rhs: Array, mu: Array, diagonal: Array) -> Array:
        """(b, n) Z from ``shifted_rhs = D - mu E`` and the (b, n) mask ``diagonal`` of E."""
        u = self.vectors
        return _plus_eye(shifted_rhs / mu - ((shifted_rhs @ u) * (weights / mu)) @ u.T, diagonal)


class GramFactor(NamedTuple):
    """``G`` itself, (n, n), for the working-set solver (``ssc_jax.solver.working_set``),
    which reads entries and products of G and needs no inverse: no eigendecomposition."""

    gram: Array


Factor = DenseFactor | LowRankFactor | GramFactor


def sample_count(factor: Factor) -> int:
    """n, the samples of the problem(s) ``factor`` describes (its last batch axes aside)."""
    return factor.gram.shape[-1] if isinstance(factor, GramFactor) else factor.vectors.shape[-2]


def _plus_eye(matrix: Array, diagonal: Array) -> Array:
    """(b, n) ``matrix`` plus the rows of the identity that ``diagonal`` marks."""
    return jnp.where(diagonal, matrix + 1, matrix)


def normalize_rows(x: Array) -> Array:
    """Scale each row of (..., n, d) ``x`` to unit l2 norm; zero rows stay zero."""
    norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(norms > 0, norms, 1)


def normalize_gram(gram: Array) -> Array:
    """The Gram of the unit-normalised samples, ``G_ij / sqrt(G_ii G_jj)``; zero rows stay zero."""
    diag = jnp.diagonal(gram, axis1=-2, axis2=-1)
    scale = jnp.where(diag > 0, jax.lax.rsqrt(jnp.where(diag > 0, diag, 1)), 0)
    return gram * scale[..., :, None] * scale[..., None, :]


@functools.partial(jax.jit, static_argnums=1)
def gram_eigh(gram: Array, normalize: bool) -> tuple[Array, Array]:
    """Eigenvalues (ascending) and vectors of (B, n, n) Grams, normalised first if asked."""
    return jnp.linalg.eigh(normalize_gram(gram) if normalize else gram)


@functools.partial(jax.jit, static_argnums=1)
def thin_svd(x: Array, normalize: bool) -> tuple[Array, Array]:
    """``(U, s^2)`` of (n, d) features, so that ``X X^T = U diag(s^2) U^T``."""
    u, s, _ = jnp.linalg.svd(normalize_rows(x) if normalize else x, full_matrices=False)
    return u, s**2


def factor_eps(dtype, precise: bool) -> float:
    """Machine epsilon of the precision ``factorize`` works in for ``dtype`` input."""
    return float(np.finfo(np.float64 if precise else dtype).eps)


def factorize(fn, a: Array, normalize: bool, precise: bool) -> tuple[Array, Array]:
    """``fn(a, normalize)``, an eigh or a thin SVD, in float64 when ``precise`` and ``a`` is
    float32; the factors come back in ``a``'s dtype.

    Float32 normalisation and eigendecomposition of an ill-conditioned Gram (activations of
    neighbouring samples) put a floor near 1e-4 on the objective's accuracy, whatever the
    ADMM tolerance; factoring in float64 and iterating in float32 removes it.
    """
    if not precise or a.dtype != jnp.float32:
        return fn(a, normalize)
    with jax.enable_x64(True):
        first, second = fn(a.astype(jnp.float64), normalize)
        return first.astype(jnp.float32), second.astype(jnp.float32)


def choose_factor(
    values: Array,
    vectors: Array,
    low_rank: bool | None,
    eps: float,
    *,
    gram_eps: float = 0.0,
    rank: int | None = None,
) -> Factor:
    """A dense or low-rank factor from a batch of eigendecompositions (ascending values).

    The numerical rank counts eigenvalues above ``n * max(eps * l_max, gram_eps * g_max)``:
    ``eps`` is the precision the decomposition was computed in, whose errors scale with the
    largest eigenvalue ``l_max``; ``gram_eps`` that of the Gram's own entries, at most
    ``g_max`` (the largest diagonal entry) in size, whose rounding (float32 activations)
    bounds the spectrum's resolution by ``n * gram_eps * g_max`` (its Frobenius norm). Dropping
    more would solve a truncated problem; keeping less would count rounding noise as rank,
    and a float32 Gram of d < n / 2 features would never take the low-rank path.

    ``rank``, a known bound on the rank (the feature dimension), takes the top ``rank``
    eigenpairs when ``rank <= n / 2`` and ``low_rank`` is not False, instead of judging it.

    Raises:
      ValueError: for a G that is not positive semidefinite.
    """
    n = values.shape[-1]
    host = np.asarray(to_host(values), np.float64)  # all-gathered over the processes of a job
    top = host.max(axis=-1, keepdims=True)
    if np.any(host.min(axis=-1, keepdims=True) < -1e-3 * np.maximum(top, 1e-30)):
        raise ValueError("G must be positive semidefinite (a Gram matrix X X^T)")
    values = jnp.maximum(values, 0)
    if rank is None or low_rank is False:
        diagonal = jnp.einsum("...ik,...k->...i", vectors**2, values)
        largest_entry = np.asarray(to_host(jnp.max(diagonal, axis=-1, keepdims=True)), np.float64)
        tol = n * np.maximum(np.maximum(top, 1e-30) * eps, largest_entry * gram_eps)
        rank = max(1, int((host > tol).sum(axis=-1).max()))
    else:
        rank = min(rank, n)
    if low_rank is None:
        low_rank = rank <= n // 2
    if low_rank:
        return LowRankFactor(vectors[..., -rank:], values[..., -rank:])
    return DenseFactor(vectors, values)
