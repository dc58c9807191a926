"""`streamed_cka_matrix` against the dense float64 `cka_matrix`."""

import jax
import numpy as np
import pytest
import scipy.sparse as sp

import ssc_jax
from ssc_jax.similarity.streamed import streamed_cka_matrix


def dense_cka(Ks, Ls=None):
    with jax.enable_x64(True):
        stack = lambda ms: np.stack([m.toarray() if sp.issparse(m) else m for m in ms]).astype(
            float
        )
        return np.asarray(ssc_jax.cka_matrix(stack(Ks), None if Ls is None else stack(Ls)))


def random_sparse(rng, count, n, density):
    return [
        sp.random_array((n, n), density=density, rng=rng, dtype=np.float64) for _ in range(count)
    ]


@pytest.mark.parametrize("symmetric", [False, True])
def test_sparse_matches_dense(symmetric):
    rng = np.random.default_rng(0)
    Ks = random_sparse(rng, 4, 50, 0.1)
    if symmetric:
        Ks = [k + k.T for k in Ks]
    Ls = random_sparse(rng, 3, 50, 0.05)
    np.testing.assert_allclose(streamed_cka_matrix(Ks), dense_cka(Ks), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        streamed_cka_matrix(Ks, Ls), dense_cka(Ks, Ls), rtol=1e-12, atol=1e-12
    )


def test_sparse_on_ssc_graphs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 80, 12)).astype(np.float32)
    grams = np.einsum("lnd,lmd->lnm", x, x)
    result = ssc_jax.ssc_gram(grams, progress=False)
    A = [abs(c) + abs(c).T for c in result.sparse_coef()]
    assert all(a.nnz < 0.5 * 80 * 80 for a in A)
    np.testing.assert_allclose(streamed_cka_matrix(A), dense_cka(A), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block_bytes", [8 * 3 * 40 * 7, 2**28])
def test_dense_blocks_match_dense(tmp_path, block_bytes):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 40, 9)) + 5.0
    grams = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", shape=(3, 40, 40))
    grams[:] = np.einsum("lnd,lmd->lnm", x, x) + 1e4
    other = np.einsum("lnd,lmd->lnm", x[:2], x[:2]) ** 2
    np.testing.assert_allclose(
        streamed_cka_matrix(grams, block_bytes=block_bytes), dense_cka(grams), rtol=1e-10
    )
    np.testing.assert_allclose(
        streamed_cka_matrix(grams, other, block_bytes=block_bytes),
        dense_cka(grams, other),
        rtol=1e-10,
    )


def test_zero_variance_and_errors():
    rng = np.random.default_rng(3)
    K = random_sparse(rng, 1, 20, 0.2)[0]
    zero = sp.csr_array((20, 20))
    assert streamed_cka_matrix([K, zero])[0, 1] == 0
    constant = np.full((20, 20), 3.0)
    assert streamed_cka_matrix([K.toarray(), constant])[0, 1] == 0
    with pytest.raises(ValueError, match="both sparse or both dense"):
        streamed_cka_matrix([K], [K.toarray()])
    with pytest.raises(ValueError, match="one n"):
        streamed_cka_matrix([K], [sp.csr_array((21, 21))])
    with pytest.raises(ValueError, match="finite"):
        streamed_cka_matrix([sp.csr_array(np.where(K.toarray() > 0, np.nan, 0))])
