"""CKA and HSIC against plain float64 NumPy transcriptions of the published formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssc_jax import cka, cka_matrix, hsic, linear_cka, minibatch_cka
from ssc_jax.similarity.hsic import hsic_stack


def ref_hsic(K, L, unbiased=False):
    """Eq. 4 with an explicit H, or the unbiased estimator of Song et al. (2012), Eq. 5."""
    K, L = np.asarray(K, np.float64), np.asarray(L, np.float64)
    n = K.shape[0]
    if not unbiased:
        H = np.eye(n) - np.ones((n, n)) / n
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def ref_cka(K, L, unbiased=False):
    return ref_hsic(K, L, unbiased) / np.sqrt(ref_hsic(K, K, unbiased) * ref_hsic(L, L, unbiased))


def ref_linear_cka(X, Y):
    """Kornblith et al. (2019), Eq. 6: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centered."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


N = 24  # one sample count everywhere keeps the number of XLA compilations (and runtime) low


def features(seed, d1=6, d2=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d1))
    Y = np.tanh(X @ rng.standard_normal((d1, d2))) + 0.7 * rng.standard_normal((N, d2))
    return X, Y


def kernels(seed):
    X, Y = features(seed)
    rbf = np.exp(-((Y[:, None] - Y[None]) ** 2).sum(-1) / Y.shape[1])
    return X @ X.T, rbf


def stack(seed, n_layers=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 6))
    out = []
    for _ in range(n_layers):
        X = np.tanh(X @ rng.standard_normal((6, 6))) + 0.3 * rng.standard_normal((N, 6))
        out.append(X @ X.T)
    return np.stack(out)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_matches_formula(unbiased):
    K, L = kernels(0)
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            float(hsic(K, L, unbiased=unbiased)), ref_hsic(K, L, unbiased), rtol=1e-10
        )
        np.testing.assert_allclose(
            float(cka(K, L, unbiased=unbiased)), ref_cka(K, L, unbiased), atol=1e-10
        )
    got = cka(K.astype(np.float32), jnp.asarray(L, jnp.float32), unbiased=unbiased)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), ref_cka(K, L, unbiased), atol=1e-5)


def test_cka_of_non_symmetric_matrices_is_frobenius_alignment():
    K, L = np.random.default_rng(2).random((2, N, N))
    H = np.eye(N) - 1 / N
    Kc, Lc = H @ K @ H, H @ L @ H
    expected = np.sum(Kc * Lc) / (np.linalg.norm(Kc) * np.linalg.norm(Lc))
    np.testing.assert_allclose(float(cka(K, L)), expected, atol=1e-5)


def test_unbiased_hsic_can_be_negative():
    pairs = np.random.default_rng(3).standard_normal((10, 2, N, N))
    pairs = pairs + pairs.swapaxes(-1, -2)  # symmetric but indefinite, as Song et al. allow
    got = [float(hsic(K, L, unbiased=True)) for K, L in pairs]
    assert min(got) < 0
    np.testing.assert_allclose(got, [ref_hsic(K, L, True) for K, L in pairs], atol=1e-5)


@pytest.mark.parametrize(("d1", "d2"), [(6, 4), (30, 40)])  # feature-space form, then Grams
def test_linear_cka_matches_formula(d1, d2):
    X, Y = features(4, d1, d2)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(linear_cka(X, Y)), ref_linear_cka(X, Y), atol=1e-10)
        np.testing.assert_allclose(
            float(linear_cka(X, Y, unbiased=True)), ref_cka(X @ X.T, Y @ Y.T, True), atol=1e-10
        )
    np.testing.assert_allclose(float(linear_cka(X, Y)), ref_linear_cka(X, Y), atol=1e-5)


def test_linear_cka_invariances():
    X, Y = features(5)
    Q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((6, 6)))
    assert float(linear_cka(X, X @ Q)) == pytest.approx(1, abs=1e-5)
    assert float(linear_cka(X, 7.5 * X)) == pytest.approx(1, abs=1e-5)
    assert float(linear_cka(X, X @ Q, unbiased=True)) == pytest.approx(1, abs=1e-5)
    base = float(linear_cka(X, Y))
    assert float(linear_cka(X @ Q, 0.01 * Y + 3.0)) == pytest.approx(base, abs=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
def test_large_offsets_keep_float32_digits(unbiased):
    X, Y = features(6)
    X32, Y32 = (X + 1e4).astype(np.float32), (Y - 1e4).astype(np.float32)
    # The reference sees the same rounded inputs, so only the algorithm's error remains.
    Xr, Yr = X32.astype(np.float64), Y32.astype(np.float64)
    Xr, Yr = Xr - Xr.mean(0), Yr - Yr.mean(0)
    expected = ref_cka(Xr @ Xr.T, Yr @ Yr.T, unbiased)
    np.testing.assert_allclose(float(linear_cka(X32, Y32, unbiased=unbiased)), expected, atol=1e-5)
    K, L = kernels(6)
    for offset in (1e5, 1e4):
        K32, L32 = (K + offset).astype(np.float32), (L + offset).astype(np.float32)
        # CKA ignores a constant; removing it (exactly, in float64) spares the reference's
        # own cancellation.
        expected = ref_cka(K32.astype(float) - offset, L32.astype(float) - offset, unbiased)
        np.testing.assert_allclose(float(cka(K32, L32, unbiased=unbiased)), expected, atol=1e-5)
    got = cka_matrix(np.stack([K32, L32, K32, L32, K32]), unbiased=unbiased, chunk_size=5)
    np.testing.assert_allclose(float(got[0, 1]), expected, atol=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_cka_matrix_equals_pairwise_loop(unbiased, chunk_size):
    Ks = stack(7)
    loop = np.array([[ref_cka(a, b, unbiased) for b in Ks] for a in Ks])
    got = np.asarray(cka_matrix(Ks, unbiased=unbiased, chunk_size=chunk_size))
    np.testing.assert_allclose(got, loop, atol=1e-5)
    np.testing.assert_allclose(got, got.T, atol=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_matrix_cross_version(unbiased):
    Ks, Ls = stack(8), stack(9, n_layers=3)
    expected = np.array([[ref_cka(a, b, unbiased) for b in Ls] for a in Ks])
    got = cka_matrix(Ks, jnp.asarray(Ls), unbiased=unbiased, chunk_size=5)
    assert got.shape == (5, 3)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_float64_hsic_stack_and_cka_matrix():
    Ks = stack(10)
    with jax.enable_x64(True):
        h = hsic_stack(Ks, Ks[:3], unbiased=True, chunk_size=5)
        expected = [[ref_hsic(a, b, True) for b in Ks[:3]] for a in Ks]
        np.testing.assert_allclose(np.asarray(h.cross), expected, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(h.self_k), [ref_hsic(a, a, True) for a in Ks])
        got = cka_matrix(Ks)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(got), [[ref_cka(a, b) for b in Ks] for a in Ks], atol=1e-12
        )


def test_jit():
    K, L = kernels(11)
    Ks = stack(11)
    np.testing.assert_allclose(float(jax.jit(cka)(K, L)), ref_cka(K, L), atol=1e-5)
    matrix = jax.jit(cka_matrix, static_argnames=("unbiased", "chunk_size"))
    np.testing.assert_allclose(
        np.asarray(matrix(Ks, chunk_size=5)), np.asarray(cka_matrix(Ks)), atol=1e-6
    )
    X, Y = features(11)
    np.testing.assert_allclose(float(jax.jit(linear_cka)(X, Y)), ref_linear_cka(X, Y), atol=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
def test_minibatch_equals_full_batch_when_batch_is_everything(unbiased):
    Ks = stack(12)
    acc = minibatch_cka(unbiased=unbiased)
    state = acc.update(acc.init(len(Ks)), Ks)
    np.testing.assert_allclose(
        np.asarray(acc.result(state)), np.asarray(cka_matrix(Ks, unbiased=unbiased)), atol=1e-6
    )


def test_minibatch_is_ratio_of_summed_hsics():
    rng = np.random.default_rng(13)
    X = rng.standard_normal((3 * N, 8))
    Y = np.tanh(X @ rng.standard_normal((8, 5))) + rng.standard_normal((3 * N, 5))
    acc = minibatch_cka()
    update = jax.jit(acc.update)
    state = acc.init(1, 1)
    sums, ratios = np.zeros(3), []
    for b in (slice(0, N), slice(N, 2 * N), slice(2 * N, 3 * N)):
        K, L = X[b] @ X[b].T, Y[b] @ Y[b].T
        state = update(state, K[None], L[None])
        parts = np.array([ref_hsic(K, L, True), ref_hsic(K, K, True), ref_hsic(L, L, True)])
        sums += parts
        ratios.append(parts[0] / np.sqrt(parts[1] * parts[2]))
    expected = sums[0] / np.sqrt(sums[1] * sums[2])
    np.testing.assert_allclose(float(acc.result(state)[0, 0]), expected, atol=1e-5)
    assert abs(expected - np.mean(ratios)) > 1e-3  # the two estimators differ on this data


def test_zero_variance_gives_zero_not_nan():
    K, L = kernels(14)
    for constant in (np.zeros((N, N)), np.full((N, N), 0.1), np.full((N, N), 3e4, np.float32)):
        assert float(cka(constant, L)) == 0.0
        assert float(cka(L, constant, unbiased=True)) == 0.0
    assert float(cka(np.eye(N), L, unbiased=True)) == 0.0  # U-centering removes a diagonal
    a, b = np.random.default_rng(14).standard_normal((2, N))
    assert float(cka(a[:, None] + b[None, :], L)) == 0.0  # centering removes a_i + b_j
    Ks = np.stack([K, np.full((N, N), 0.1), L])
    got = np.asarray(cka_matrix(Ks))
    assert np.all(np.isfinite(got))
    assert np.all(got[1] == 0) and np.all(got[:, 1] == 0)
    acc = minibatch_cka(unbiased=False)
    state = acc.update(acc.init(3), Ks)
    np.testing.assert_array_equal(np.asarray(acc.result(state)), got)
    X, Y = features(14)
    assert float(linear_cka(np.full_like(X, 0.1), Y)) == 0.0
    X, Y = features(14, 30, 40)
    assert float(linear_cka(X, np.full_like(Y, 7.0), unbiased=True)) == 0.0


def test_bad_input_raises():
    K, L = kernels(15)
    bad = K.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        cka(bad, L)
    with pytest.raises(ValueError, match="NaN or Inf"):
        cka_matrix(np.stack([K, np.where(K > 0, np.inf, K)]))
    with pytest.raises(ValueError, match="same samples"):
        cka(K, L[:-1, :-1])
    with pytest.raises(ValueError, match="same samples"):
        cka_matrix(K[None], L[None, :-1, :-1])
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(np.ones((10, 3)), np.ones((11, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        cka(K[:3, :3], L[:3, :3], unbiased=True)
    with pytest.raises(ValueError, match="at least 4"):
        minibatch_cka().update(minibatch_cka().init(1), K[None, :3, :3])
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(np.eye(3), np.eye(3), unbiased=True)
    with pytest.raises(ValueError, match="square"):
        cka(K[:, :-1], L[:, :-1])
    with pytest.raises(ValueError, match="stack"):
        cka_matrix(K)
    with pytest.raises(ValueError, match="chunk_size"):
        cka_matrix(K[None], chunk_size=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        linear_cka(np.full((10, 3), np.inf), np.ones((10, 3)))
