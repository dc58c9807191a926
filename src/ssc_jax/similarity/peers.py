"""The similarity measures other tools report, from activations or from Grams: mutual
nearest neighbours (platonic-rep), RSA (rsatoolbox's defaults) and the Procrustes shape
distance (netrep's ``LinearMetric(alpha=1)``).

Each works from (n, n) Grams, never from an (n, n, D) tensor, so that a layer of any width
costs O(n^2) memory:

* ``mutual_knn_gram`` takes the plain Grams ``X X^T``: cosine neighbours are
  ``K_ij / sqrt(K_ii K_jj)``.
* ``rsa_gram`` takes the Grams of the *row-centred* activations, ``X X^T - u u^T`` with
  ``u = X 1 / sqrt(D)`` (``row_centred_gram``): the Pearson correlation of inputs i and j
  is that Gram's cosine.
* ``procrustes_gram`` takes the plain Grams and centres their columns itself
  (``H K H``): the nuclear norm ``||X~^T Y~||_*`` is the sum of the singular values of
  ``Fx^T Fy`` for any factors ``F F^T`` of the centred, trace-normalised Grams.

Each splits into a per-layer step and a cheap comparison (``cosine_neighbours`` and
``neighbour_overlap``, ``rdm_ranks`` and ``rank_correlation``, ``shape_factor`` and
``shape_distance``), so that L layers against L others take L per-layer steps, not L^2.

The functions of activations, ``mutual_knn``, ``rsa`` and ``procrustes``, form those Grams
in float64 and call them.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, stats

# Rows of the (rows, n) similarity block that ``mutual_knn_gram`` holds at a time.
NEIGHBOUR_BLOCK_ROWS = 1024
# The first subspace ``shape_factor`` tries on a Gram of low rank.
LOW_RANK_START = 128
_OVERSAMPLE = 10
_POWER_STEPS = 2
_CHECK_VECTORS = 10
_CHECK_FACTOR = 10.0 * np.sqrt(2.0 / np.pi)


def _checked_pair(name: str, X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, np.float64).reshape(len(Y), -1)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{name}: X and Y must hold the same inputs; got {len(X)} and {len(Y)}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError(f"{name}: the activations hold NaN or Inf")
    return X, Y


def _checked_grams(name: str, K, L) -> tuple[np.ndarray, np.ndarray]:
    K, L = np.asarray(K), np.asarray(L)
    n = K.shape[0]
    if K.shape != (n, n) or L.shape != (n, n):
        raise ValueError(f"{name}: Grams must be two (n, n) arrays; got {K.shape} and {L.shape}")
    return K, L


def cosine_neighbours(gram, k: int) -> np.ndarray:
    """(n, k) indices of each input's k most cosine-similar other inputs, given the Gram
    (n, n) of their activations; an all-zero activation is at cosine 0 from every other.
    Holds (``NEIGHBOUR_BLOCK_ROWS``, n) similarities at a time."""
    n = gram.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}]; got {k}")
    norms = np.sqrt(np.clip(np.diagonal(gram).astype(np.float64), 0.0, None))
    inverse = 1.0 / np.maximum(norms, 1e-12)
    neighbours = np.empty((n, k), np.int64)
    for start in range(0, n, NEIGHBOUR_BLOCK_ROWS):
        rows = np.arange(start, min(n, start + NEIGHBOUR_BLOCK_ROWS))
        cosine = np.asarray(gram[rows], np.float64) * inverse[rows, None] * inverse[None, :]
        cosine[np.arange(len(rows)), rows] = -np.inf
        neighbours[rows] = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
    return neighbours


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The mean over inputs of the fraction of shared neighbours, given two layers'
    ``cosine_neighbours`` (n, k)."""
    shared = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return float(np.mean(shared / a.shape[1]))


def mutual_knn_gram(gram_x, gram_y, k: int = 10) -> float:
    """``mutual_knn`` from the Grams ``X X^T`` and ``Y Y^T`` (n, n)."""
    gram_x, gram_y = _checked_grams("mutual_knn", gram_x, gram_y)
    return neighbour_overlap(cosine_neighbours(gram_x, k), cosine_neighbours(gram_y, k))


def mutual_knn(X, Y, k: int = 10) -> float:
    """The mean over the n inputs of ``|N_k^X(i) ∩ N_k^Y(i)| / k``, where ``N_k^X(i)`` are
    the k inputs whose activations in ``X`` (n, Dx) are most cosine-similar to input i's, i
    itself excluded (Huh et al. 2024). In [0, 1]; 1 when both layers give every input the
    same neighbours. Ties between equally similar neighbours are broken arbitrarily."""
    X, Y = _checked_pair("mutual_knn", X, Y)
    return mutual_knn_gram(X @ X.T, Y @ Y.T, k)


def row_centred_gram(gram, feature_sums, dim: int) -> np.ndarray:
    """Float64 Gram (n, n) of the activations with each input's mean feature subtracted,
    ``K - u u^T`` with ``u = feature_sums / sqrt(dim)``, from their Gram ``K`` (n, n), each
    input's feature sum (n,) and the feature count ``dim``."""
    u = np.asarray(feature_sums, np.float64) / np.sqrt(dim)
    return np.asarray(gram, np.float64) - np.outer(u, u)


def correlation_rdm(centred_gram) -> np.ndarray:
    """The upper triangle (i < j, row-major) of the RDM ``1 - Pearson(x_i, x_j)``, given
    the Gram of the row-centred activations (``row_centred_gram``); float64 (n (n-1) / 2,).
    An input whose activations are constant correlates 0 with every other."""
    scale = 1.0 / np.maximum(np.sqrt(np.clip(np.diagonal(centred_gram), 0.0, None)), 1e-300)
    i, j = np.triu_indices(centred_gram.shape[0], k=1)
    return 1.0 - np.asarray(centred_gram, np.float64)[i, j] * scale[i] * scale[j]


def rdm_ranks(centred_gram) -> np.ndarray:
    """The ranks (ties averaged) of ``correlation_rdm``'s entries, centred and scaled to unit
    norm, so that the Spearman correlation of two RDMs is their ranks' dot product; zeros
    for a constant RDM."""
    if centred_gram.shape[0] < 3:
        raise ValueError("rsa: an RDM's upper triangle needs at least 3 inputs for a correlation")
    ranks = stats.rankdata(correlation_rdm(centred_gram))
    ranks -= ranks.mean()
    norm = np.linalg.norm(ranks)
    return ranks / norm if norm > 0 else ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The Spearman correlation of two RDMs from their ``rdm_ranks``; NaN when one is
    constant."""
    if not (a.any() and b.any()):
        return float("nan")
    return float(np.dot(a, b))


def rsa_gram(centred_gram_x, centred_gram_y) -> float:
    """``rsa`` from the Grams (n, n) of the two layers' row-centred activations
    (``row_centred_gram``)."""
    centred_gram_x, centred_gram_y = _checked_grams("rsa", centred_gram_x, centred_gram_y)
    return rank_correlation(rdm_ranks(centred_gram_x), rdm_ranks(centred_gram_y))


def rsa(X, Y) -> float:
    """Representational similarity analysis with rsatoolbox's defaults: the Spearman
    correlation of the upper triangles of the two layers' RDMs, each RDM ``1 - r_ij`` with
    ``r_ij`` the Pearson correlation of inputs i and j's activation vectors (rows of ``X``
    (n, Dx) and ``Y`` (n, Dy)). In [-1, 1]; NaN when an RDM is constant. Memory: a few
    float64 arrays of n (n - 1) / 2 entries."""
    X, Y = _checked_pair("rsa", X, Y)
    X = X - X.mean(axis=1, keepdims=True)
    Y = Y - Y.mean(axis=1, keepdims=True)
    return rsa_gram(X @ X.T, Y @ Y.T)


def shape_factor(gram, eps: float | None = None) -> np.ndarray:
    """Float64 F (n, r) with ``F F^T`` the column-centred Gram (n, n) scaled to unit trace,
    its eigenvalues below ``n * eps`` of the largest dropped as rounding: ``eps`` defaults
    to the Gram's float precision (float32's for a float32 Gram, which holds no more about
    those directions).

    A Gram of low rank (a layer narrower than n) is factored in O(n^2 r) by
    ``low_rank_factor``, trying subspaces of ``LOW_RANK_START`` directions, then twice as
    many, while they are under half of n; otherwise by a full eigendecomposition, O(n^3)."""
    eps = np.finfo(np.result_type(gram, np.float32)).eps if eps is None else eps
    centred = column_centred_gram(gram)
    n = centred.shape[0]
    total = float(np.trace(centred))
    if total <= 0:
        raise ValueError("procrustes: a layer's activations are the same for every input")
    rank = LOW_RANK_START
    while 2 * (rank + _OVERSAMPLE) < n:
        factor = low_rank_factor(centred, rank, eps)
        if factor is not None:
            return factor / np.sqrt(total)
        rank *= 2
    values, vectors = np.linalg.eigh(centred)
    keep = values > n * eps * values[-1]
    return vectors[:, keep] * np.sqrt(values[keep] / total)


def low_rank_factor(centred, rank: int, eps: float, seed: int = 0) -> np.ndarray | None:
    """F (n, r) with ``F F^T`` the symmetric PSD ``centred`` (n, n) restricted to its
    eigenvalues above ``n * eps`` of the largest, from a random subspace of ``rank`` (plus a
    few) directions sharpened by power steps (Halko, Martinsson and Tropp 2011, Alg. 4.4);
    None when the subspace may miss such an eigenvalue.

    Every eigenvalue of ``centred`` that the subspace's Ritz values leave out is at most
    ``||R||``, R being ``centred`` projected off the subspace (Courant-Fischer); the
    subspace is accepted when 10 sqrt(2/pi) times the largest ``||R w||`` over 10 Gaussian
    vectors w, an upper bound on ``||R||`` with probability 1 - 1e-10 (ibid., Lemma 4.1),
    is below that threshold, so the factor keeps what a full eigendecomposition keeps."""
    n = centred.shape[0]
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((n, rank + _OVERSAMPLE))
    for _ in range(_POWER_STEPS + 1):
        basis = linalg.qr(centred @ basis, mode="economic", check_finite=False)[0]
    values, vectors = np.linalg.eigh(basis.T @ centred @ basis)
    threshold = n * eps * values[-1]
    probes = rng.standard_normal((n, _CHECK_VECTORS))
    probes -= basis @ (basis.T @ probes)
    residual = centred @ probes
    residual -= basis @ (basis.T @ residual)
    if _CHECK_FACTOR * np.linalg.norm(residual, axis=0).max() > threshold:
        return None
    keep = values > threshold
    return (basis @ vectors[:, keep]) * np.sqrt(values[keep])


def column_centred_gram(gram) -> np.ndarray:
    """The Gram (n, n) of the column-centred activations, ``H K H``, symmetric, in float64."""
    centred = np.array(gram, np.float64)
    centred -= centred.mean(axis=0, keepdims=True)
    centred -= centred.mean(axis=1, keepdims=True)
    centred += centred.T
    centred /= 2
    return centred


def shape_distance(fx: np.ndarray, fy: np.ndarray) -> float:
    """``arccos(||Fx^T Fy||_*)``, the angular shape distance of two layers from their
    ``shape_factor`` s (n, rx) and (n, ry)."""
    nuclear = np.linalg.svd(fx.T @ fy, compute_uv=False).sum()
    return float(np.arccos(np.clip(nuclear, -1.0, 1.0)))


def procrustes_gram(gram_x, gram_y) -> float:
    """``procrustes`` from the plain Grams ``X X^T`` and ``Y Y^T`` (n, n), through their
    ``shape_factor`` s."""
    gram_x, gram_y = _checked_grams("procrustes", gram_x, gram_y)
    return shape_distance(shape_factor(gram_x), shape_factor(gram_y))


def procrustes(X, Y) -> float:
    """The angular Procrustes shape distance ``arccos(||X~^T Y~||_*)`` (Williams et al.
    2021): ``X~`` is ``X`` (n, Dx) with centred columns scaled to unit Frobenius norm, the
    narrower of ``X~`` and ``Y~`` zero-padded to the wider. In [0, pi / 2]; 0 when one
    layer is a rotation (and scaling, and shift) of the other. A distance: smaller is more
    similar."""
    X, Y = _checked_pair("procrustes", X, Y)
    return shape_distance(_unit_shape(X), _unit_shape(Y))


def _unit_shape(X: np.ndarray) -> np.ndarray:
    """X with centred columns and unit Frobenius norm, as a factor with at most n columns
    (an (n, D) X with D > n is replaced by its Gram's factor, with the same X~ X~^T)."""
    Xc = X - X.mean(axis=0)
    norm = np.linalg.norm(Xc)
    if norm == 0:
        raise ValueError("procrustes: a layer's activations are the same for every input")
    Xc /= norm
    return Xc if Xc.shape[1] <= Xc.shape[0] else shape_factor(Xc @ Xc.T)
