"""Activation capture, layer names, Gram matrices and prediction."""

import tracemalloc

import jax
import numpy as np
import pytest
from flax import nnx

from ssc_jax import activation_grams, capture_activations, create_model, layer_names, predict
from ssc_jax.nets import capture
from ssc_jax.nets.capture import LayerGroup, plan_layer_groups


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


# small_cnn at width 0.25 on 8 x 8 inputs: conv widths 512, 512, 256, 256, 128. For 12
# inputs, 20,000 bytes puts each 256-wide layer in a group of its own and row-blocks the
# 512-wide ones (4 inputs per block); 4,096 bytes, the least possible, blocks them by one input.
@pytest.mark.parametrize("budget", [None, 20_000, 4_096])
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


def test_a_budget_below_two_inputs_of_a_layer_is_refused(monkeypatch):
    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.zeros((12, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="at least 4,096 bytes"):
        activation_grams(model, x, memory_budget_bytes=4_095)
    # The default budget is the memory policy's.
    monkeypatch.setattr(capture, "default_memory_budget", lambda: 4_095)
    with pytest.raises(ValueError, match="the budget is 4,095"):
        activation_grams(model, x)


def test_layer_groups_follow_the_budget():
    n = 10  # one layer of width w holds 40 w bytes of features
    assert plan_layer_groups([100, 50, 25], n, budget=7_000) == [LayerGroup((0, 1, 2), n)]
    assert plan_layer_groups([100, 50, 25], n, budget=6_999) == [
        LayerGroup((0, 1), n),
        LayerGroup((2,), n),
    ]
    assert plan_layer_groups([100, 100], n, budget=4_000) == [
        LayerGroup((0,), n),
        LayerGroup((1,), n),
    ]
    # 5,000 floats for 10 inputs exceed the budget: blocks of 3 inputs, two at a time; the
    # layers around it share a group.
    groups = plan_layer_groups([10, 5_000, 10], n, budget=120_000)
    assert groups == [LayerGroup((1,), 3), LayerGroup((0, 2), n)]
    with pytest.raises(ValueError, match="at least 40,000 bytes"):
        plan_layer_groups([5_000], n, budget=39_999)


def test_grams_hold_no_more_features_than_the_budget():
    """Host memory that NumPy allocates during the capture, by tracemalloc: besides the
    result and one batch (32 inputs of one 512-wide layer), the budget's features, and at
    most as many again while the last host-to-device copy lets go of its source (JAX holds
    it until the asynchronous transfer is done). Holding all features would exceed it."""
    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.random.default_rng(2).normal(size=(256, 8, 8, 1)).astype(np.float32)
    wide = ["block1.0.conv", "block1.1.conv"]  # 512 features: 512 KiB per layer, 1 MiB in all
    one_batch = 4 * 32 * 512
    for budget in (1 << 17, 1 << 18):  # row blocks of 32 and of 64 inputs
        activation_grams(model, x, wide, batch_size=32, memory_budget_bytes=budget)  # compile
        tracemalloc.start()
        try:
            _, grams = activation_grams(model, x, wide, batch_size=32, memory_budget_bytes=budget)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        held = peak - grams.nbytes
        assert held <= 2 * budget + one_batch + 2**15 < 1 << 20, (budget, held)


def test_input_validation(resnet):
    with pytest.raises(ValueError, match="images must be a batch of images"):
        capture_activations(resnet, np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="NaN"):
        activation_grams(resnet, np.full((2, 8, 8, 1), np.nan))
