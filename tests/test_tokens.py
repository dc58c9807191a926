"""Token pooling (b, T, D) -> (b, D'), checked against per-input loops over the real tokens."""

import numpy as np
import pytest

from ssc_jax.nets.tokens import DEFAULT_TOKENS, TOKEN_POOLINGS, pool_tokens

B, T, D = 4, 6, 5


@pytest.fixture
def acts():
    return np.random.default_rng(0).standard_normal((B, T, D)).astype(np.float32)


@pytest.fixture
def mask():
    """Right padding for inputs 0 and 1, left padding for input 2, none for input 3."""
    mask = np.ones((B, T), np.int64)
    mask[0, 4:] = 0
    mask[1, 1:] = 0
    mask[2, :3] = 0
    return mask


def test_default_is_mean():
    assert DEFAULT_TOKENS == "mean" and DEFAULT_TOKENS in TOKEN_POOLINGS


def test_mean_averages_only_the_real_tokens(acts, mask):
    pooled = pool_tokens(acts, "mean", mask)
    expected = [acts[i][mask[i] == 1].astype(np.float64).mean(axis=0) for i in range(B)]
    # float32 rounding of a float64 mean: one unit in the last place of the values' scale.
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=np.finfo(np.float32).eps * 4)
    assert pooled.dtype == np.float32 and pooled.shape == (B, D)


def test_mean_without_mask_is_the_plain_mean(acts):
    np.testing.assert_allclose(pool_tokens(acts), acts.mean(axis=1), rtol=1e-6, atol=1e-7)


def test_last_takes_each_inputs_last_real_token(acts, mask):
    expected = [acts[i][np.flatnonzero(mask[i])[-1]] for i in range(B)]
    np.testing.assert_array_equal(pool_tokens(acts, "last", mask), expected)
    np.testing.assert_array_equal(pool_tokens(acts, "last"), acts[:, -1])


def test_cls_and_flatten_read_positions(acts, mask):
    np.testing.assert_array_equal(pool_tokens(acts, "cls", mask), acts[:, 0])
    flat = pool_tokens(acts, "flatten", mask)
    assert flat.shape == (B, T * D)
    np.testing.assert_array_equal(flat[:, D : 2 * D], acts[:, 1])


def test_vectors_pass_and_maps_flatten(acts):
    vectors = acts[:, 0]
    for tokens in TOKEN_POOLINGS:
        np.testing.assert_array_equal(pool_tokens(vectors, tokens), vectors)
    maps = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(pool_tokens(maps, "mean"), maps.reshape(2, -1))


def test_integers_become_float():
    assert pool_tokens(np.ones((2, 3, 4), np.int32), "cls").dtype == np.float32


@pytest.mark.parametrize(
    ("tokens", "mask", "message"),
    [
        ("max", None, "tokens must be one of mean, cls, last, flatten; got 'max'"),
        ("mean", np.ones((B, T + 1)), "the padding mask has shape"),
        ("last", np.zeros((B, T)), "keeps no token of input 0"),
    ],
)
def test_bad_input_is_one_line(acts, tokens, mask, message):
    with pytest.raises(ValueError, match=message) as caught:
        pool_tokens(acts, tokens, mask)
    assert "\n" not in str(caught.value)
