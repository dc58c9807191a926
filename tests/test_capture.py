"""Activation capture, layer names, Gram matrices and prediction."""

import jax
import numpy as np
import pytest
from flax import nnx

from ssc_jax import activation_grams, capture_activations, create_model, layer_names, predict
from ssc_jax.nets.capture import _plan


@pytest.fixture(scope="module")
def resnet():
    return create_model("resnet18", width=0.0625, in_channels=1)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(10, 8, 8, 1)).astype(np.float32)


def test_conv_names_shapes_in_forward_order(resnet, images):
    acts = capture_activations(resnet, images, batch_size=4)
    names = list(acts)
    assert names == layer_names(resnet, input_shape=(1, 8, 8, 1))
    assert names[:6] == [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.1.conv1",
        "layer1.1.conv2",
        "layer2.0.conv1",
    ]
    assert names[6:8] == ["layer2.0.conv2", "layer2.0.shortcut.conv"]
    assert len(names) == 20
    assert acts["conv1"].shape == (10, 8, 8, 4)
    assert acts["layer2.0.shortcut.conv"].shape == (10, 4, 4, 8)
    assert acts["layer4.1.conv2"].shape == (10, 1, 1, 32)
    assert all(a.dtype == np.float32 for a in acts.values())


def test_blocks_and_explicit_names(resnet, images):
    blocks = layer_names(resnet, "blocks", input_shape=(1, 8, 8, 1))
    assert blocks == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)] + ["classifier"]
    acts = capture_activations(resnet, images, ["classifier", "layer1.0.conv1", "layer3.1"])
    assert list(acts) == ["layer1.0.conv1", "layer3.1", "classifier"]
    np.testing.assert_allclose(
        predict(resnet, images), jax.nn.softmax(acts["classifier"]), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="unknown layer names \\['layer9'\\]"):
        capture_activations(resnet, images, ["layer9"])
    with pytest.raises(ValueError, match="layers must be one of"):
        layer_names(resnet, "pools", input_shape=(1, 8, 8, 1))


def test_capture_uses_eval_mode_and_leaves_model_unchanged(resnet, images):
    before = jax.tree.leaves(nnx.state(resnet))
    first = capture_activations(resnet, images, ["layer1.0"], batch_size=3)["layer1.0"]
    single = capture_activations(resnet, images[:1], ["layer1.0"])["layer1.0"]
    np.testing.assert_allclose(first[:1], single, rtol=1e-5, atol=1e-6)  # no batch statistics
    for a, b in zip(before, jax.tree.leaves(nnx.state(resnet)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("budget", [None, 20_000, 3_000])
def test_grams_equal_xxt_of_captured_activations(budget):
    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 1)).astype(np.float32)
    acts = capture_activations(model, x)
    names, grams = activation_grams(model, x, batch_size=5, memory_budget_bytes=budget)
    assert names == list(acts)
    assert grams.shape == (len(names), 12, 12)
    assert grams.dtype == np.float32
    for name, gram in zip(names, grams, strict=True):
        flat = acts[name].reshape(12, -1).astype(np.float64)
        np.testing.assert_allclose(gram, flat @ flat.T, rtol=1e-4, atol=1e-4 * np.abs(gram).max())


def test_plan_keeps_each_group_within_budget():
    dims, n, budget = [100, 300, 50, 5000, 10], 20, 40_000
    groups = _plan(dims, n, budget)
    assert sorted(i for group, _ in groups for i in group) == list(range(len(dims)))
    for group, rows in groups:
        held = 4 * sum(dims[i] for i in group) * rows * (1 if rows == n else 2)
        assert held <= budget
    assert ([3], 1) in groups  # 5000 floats x 20 rows exceed the budget: row blocks


def test_input_validation(resnet):
    with pytest.raises(ValueError, match="images must be a batch of images"):
        capture_activations(resnet, np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="NaN"):
        activation_grams(resnet, np.full((2, 8, 8, 1), np.nan))
