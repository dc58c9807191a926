"""Spectral embedding against SciPy / scikit-learn, and spectral clustering on planted blocks."""

import jax
import numpy as np
import pytest
import scipy.linalg
from sklearn.manifold import spectral_embedding as sk_spectral_embedding
from sklearn.metrics import adjusted_rand_score

from ssc_jax import spectral_clustering, spectral_embedding


def dense_graph(seed, n=40):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n))
    A = A + A.T
    np.fill_diagonal(A, 0)
    return A


def blocks(seed, sizes=(15, 12, 10), inside=1.0, outside=0.05):
    """Noisy block-diagonal affinities, shuffled; returns (A, block of each node)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    same = truth[:, None] == truth[None, :]
    A = rng.random((len(truth),) * 2) * np.where(same, inside, outside)
    A = A + A.T
    np.fill_diagonal(A, 0)
    perm = rng.permutation(len(truth))
    return A[perm][:, perm], truth[perm]


def align_signs(got, ref):
    return got * np.sign(np.sum(got * ref, axis=0))


def test_njw_embedding_matches_scipy_and_sklearn():
    A = dense_graph(0)
    d = A.sum(1)
    _, vectors = scipy.linalg.eigh(A / np.sqrt(np.outer(d, d)))
    top = vectors[:, ::-1][:, :3]
    expected = top / np.linalg.norm(top, axis=1, keepdims=True)
    with jax.enable_x64(True):
        got = np.asarray(spectral_embedding(A, 3))
    np.testing.assert_allclose(align_signs(got, expected), expected, atol=1e-8)
    # scikit-learn returns D^-1/2 v; scaling rows to unit length removes the D^-1/2.
    sk = sk_spectral_embedding(A, n_components=3, drop_first=False, random_state=0)
    sk = sk / np.linalg.norm(sk, axis=1, keepdims=True)
    got32 = np.asarray(spectral_embedding(A.astype(np.float32), 3))
    np.testing.assert_allclose(align_signs(got32, sk), sk, atol=1e-5)


def test_unnormalized_embedding_is_top_eigenvectors_of_A():
    A = dense_graph(1)
    _, vectors = scipy.linalg.eigh(A)
    expected = vectors[:, ::-1][:, :2]
    got = np.asarray(spectral_embedding(A, 2, normalized=False))
    np.testing.assert_allclose(align_signs(got, expected), expected, atol=1e-5)
    peaks = got[np.abs(got).argmax(0), np.arange(2)]
    assert np.all(peaks > 0)  # deterministic sign


def test_isolated_nodes_give_zero_rows_not_nan():
    A, _ = blocks(2)
    A[[3, 7], :] = A[:, [3, 7]] = 0
    got = np.asarray(spectral_embedding(A, 3))
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got[[3, 7]], 0)
    rows = np.linalg.norm(np.delete(got, [3, 7], axis=0), axis=1)
    np.testing.assert_allclose(rows, 1, atol=1e-5)


def test_spectral_clustering_recovers_blocks():
    A, truth = blocks(3)
    labels = spectral_clustering(A, 3, seed=0)
    assert labels.shape == truth.shape and labels.dtype.kind == "i"
    assert set(labels.tolist()) == {0, 1, 2}
    assert adjusted_rand_score(truth, labels) == 1.0
    np.testing.assert_array_equal(labels, spectral_clustering(A, 3, seed=0))


def test_embedding_jit_and_bad_input():
    A = dense_graph(4, n=20)
    jitted = jax.jit(spectral_embedding, static_argnames=("n_components", "normalized"))
    np.testing.assert_allclose(
        np.asarray(jitted(A, n_components=2)), np.asarray(spectral_embedding(A, 2)), atol=1e-6
    )
    with pytest.raises(ValueError, match="n_components"):
        spectral_embedding(A, 0)
    with pytest.raises(ValueError, match="square"):
        spectral_embedding(A[:, :-1])
    A[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        spectral_clustering(A, 2)
