"""Activation capture, layer names, Gram matrices and prediction, from the zoo and from
any NNX or linen model."""

import tracemalloc

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssc_jax import (
    LinenModel,
    activation_grams,
    capture_activations,
    create_model,
    grams_from_activations,
    layer_names,
    predict,
    read_activations,
)
from ssc_jax.core.memory import MemoryBudgetError
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
    with pytest.raises(ValueError, match="layers='layer9' matches no module; the closest"):
        capture_activations(resnet, images, ["layer9"])
    with pytest.raises(ValueError, match="layers must be one of"):
        layer_names(resnet, "pools", input_shape=(1, 8, 8, 1))


def test_capture_uses_eval_mode_and_leaves_model_unchanged(resnet, images):
    before = jax.tree.leaves(nnx.state(resnet))
    with pytest.warns(UserWarning, match=r"only one layer is selected \(layer1\.0\)"):
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


@pytest.mark.parametrize("gram", [capture._host_gram, capture._device_gram])
def test_gram_blocks_are_within_float32_rounding_of_float64(gram):
    """Each entry of a float32 a b^T, in any order of summation, is within gamma_d |a| |b|^T
    of the exact one (Higham, Accuracy and Stability, 3.5), gamma_d = d u / (1 - d u)."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 60, 700)).astype(np.float32)
    unit = np.finfo(np.float32).eps / 2
    gamma = 700 * unit / (1 - 700 * unit)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for got, exact, bound in (
        (gram(a), a64 @ a64.T, gamma * np.abs(a64) @ np.abs(a64).T),
        (gram(a, b[:45]), a64 @ b64[:45].T, gamma * np.abs(a64) @ np.abs(b64[:45]).T),
    ):
        assert got.dtype == np.float32 and got.shape == exact.shape
        assert np.all(np.abs(got - exact) <= bound)


def test_a_gram_written_into_a_block_of_a_larger_array_is_the_same():
    a = np.random.default_rng(4).normal(size=(30, 200)).astype(np.float32)
    whole = np.zeros((2, 50, 50), np.float32)
    written = capture._gram(a, out=whole[1, 10:40, 5:35])
    assert np.shares_memory(written, whole)
    np.testing.assert_array_equal(whole[1, 10:40, 5:35], capture._gram(a))
    whole[1, 10:40, 5:35] = 0
    assert not np.any(whole)


@pytest.mark.parametrize("budget", [None, 20_000])
def test_the_progress_bar_counts_every_input_passed_through_the_model(budget, monkeypatch, capsys):
    from ssc_jax.nets import capture

    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 1)).astype(np.float32)
    passed, features = [], capture._features
    monkeypatch.setattr(
        capture,
        "_features",
        lambda f, images, *a: passed.append(len(images)) or features(f, images, *a),
    )
    activation_grams(model, x, batch_size=5, memory_budget_bytes=budget, progress=True)
    # One pass of the 12 inputs when every layer fits; row blocks pass inputs again.
    assert (sum(passed) == 12) == (budget is None)
    assert f"{sum(passed)}/{sum(passed)}" in capsys.readouterr().err


def test_grams_beyond_the_budget_spill_to_an_unlinked_file(tmp_path):
    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 1)).astype(np.float32)
    x = np.concatenate([x] * 3)
    _, in_memory = activation_grams(model, x, memory_budget_bytes=40_000)
    # 5 layers x 36 x 36 float32 = 25,920 bytes: within 40,000, beyond 20,000.
    _, kept = activation_grams(model, x, memory_budget_bytes=40_000, spill_dir=tmp_path)
    _, spilled = activation_grams(model, x, memory_budget_bytes=20_000, spill_dir=tmp_path)
    assert not isinstance(kept, np.memmap) and isinstance(spilled, np.memmap)
    np.testing.assert_allclose(spilled, in_memory, rtol=1e-5, atol=1e-5)
    assert list(tmp_path.iterdir()) == []


def test_a_budget_below_two_inputs_of_a_layer_is_refused(monkeypatch):
    model = create_model("small_cnn", width=0.25, in_channels=1)
    x = np.zeros((12, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="at least 4,096 bytes"):
        activation_grams(model, x, memory_budget_bytes=4_095)
    # The default budget is the memory policy's.
    monkeypatch.setattr(capture, "default_memory_budget", lambda: 4_095)
    with pytest.raises(MemoryBudgetError, match="the memory budget is 4,095"):
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


# Any Flax model: plain NNX and linen models, captured without changing them.


class Unit(nnx.Module):
    """conv, BatchNorm, ReLU, as the zoo's ConvBNReLU, from plain nnx modules."""

    def __init__(self, c_in: int, c_out: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.bn(self.conv(x)))


class PlainCNN(nnx.Module):
    """The zoo's small_cnn (stages of units, each closed by 2x2 max pooling) in plain nnx."""

    def __init__(self, stages, in_channels: int, rngs: nnx.Rngs):
        c_in = in_channels
        for s, stage in enumerate(stages, start=1):
            units = []
            for c_out in stage:
                units.append(Unit(c_in, c_out, rngs))
                c_in = c_out
            setattr(self, f"block{s}", nnx.List(units))
        self.num_stages = len(stages)
        self.head = nnx.Linear(c_in, 10, rngs=rngs)

    def __call__(self, x):
        for s in range(1, self.num_stages + 1):
            for unit in getattr(self, f"block{s}"):
                x = unit(x)
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.head(x.mean(axis=(1, 2)))


class LinenCNN(nn.Module):
    """The same network in linen, its layers named ``block{s}_{i}_conv``."""

    stages: tuple

    @nn.compact
    def __call__(self, x):
        for s, stage in enumerate(self.stages, start=1):
            for i, c_out in enumerate(stage):
                x = nn.Conv(c_out, (3, 3), use_bias=False, name=f"block{s}_{i}_conv")(x)
                x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=f"block{s}_{i}_bn")(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


STAGES = ((8, 8), (16, 16), (32,))  # small_cnn at width 0.25


@pytest.fixture(scope="module")
def zoo_and_copies():
    """small_cnn (width 0.25, 1 channel) with random BatchNorm statistics, and a PlainCNN
    and a LinenCNN holding the same weights."""
    zoo = create_model("small_cnn", width=0.25, in_channels=1, seed=3)
    rng = np.random.default_rng(3)
    plain = PlainCNN(STAGES, 1, nnx.Rngs(0))
    params, stats = {}, {}
    for s, stage in enumerate(STAGES, start=1):
        for i in range(len(stage)):
            unit = getattr(zoo, f"block{s}")[i]
            width = unit.bn.mean.shape
            unit.bn.mean.set_value(jnp.asarray(rng.normal(size=width), jnp.float32))
            unit.bn.var.set_value(jnp.asarray(rng.uniform(0.5, 2.0, size=width), jnp.float32))
            unit.bn.scale.set_value(jnp.asarray(rng.uniform(0.5, 2.0, size=width), jnp.float32))
            nnx.update(getattr(plain, f"block{s}")[i], nnx.state(unit))
            params[f"block{s}_{i}_conv"] = {"kernel": unit.conv.kernel[...]}
            params[f"block{s}_{i}_bn"] = {"scale": unit.bn.scale[...], "bias": unit.bn.bias[...]}
            stats[f"block{s}_{i}_bn"] = {"mean": unit.bn.mean[...], "var": unit.bn.var[...]}
    params["head"] = {"kernel": zoo.classifier.kernel[...], "bias": zoo.classifier.bias[...]}
    linen = LinenModel(LinenCNN(STAGES), {"params": params, "batch_stats": stats})
    return zoo, plain, linen


def test_every_door_gives_the_same_grams(tmp_path, zoo_and_copies):
    """The zoo's taps, a saved .npz read back, a plain NNX model and a linen model with the
    same weights give the same layers, in the same order, and the same Grams."""
    zoo, plain, linen = zoo_and_copies
    x = np.random.default_rng(4).normal(size=(12, 8, 8, 1)).astype(np.float32)
    names, grams = activation_grams(zoo, x, batch_size=5)
    acts = capture_activations(zoo, x)
    path = tmp_path / "acts.npz"
    np.savez(path, **acts, labels=np.arange(12) % 3)
    file_names, file_grams = grams_from_activations(read_activations(path))
    plain_names, plain_grams = activation_grams(plain, x, batch_size=5)
    linen_names, linen_grams = activation_grams(linen, x, batch_size=5)
    expected = [
        f"block{s}.{i}.conv" for s, stage in enumerate(STAGES, 1) for i in range(len(stage))
    ]
    assert names == file_names == plain_names == expected
    assert linen_names == [name.replace(".", "_") for name in expected]
    for other in (file_grams, plain_grams, linen_grams):
        for gram, got in zip(grams, other, strict=True):
            np.testing.assert_allclose(got, gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())
    for name, gram in zip(names, grams, strict=True):
        flat = acts[name].reshape(12, -1).astype(np.float64)
        np.testing.assert_allclose(gram, flat @ flat.T, rtol=1e-4, atol=1e-5 * np.abs(gram).max())


def test_plain_nnx_model_by_type_and_path_in_forward_order(zoo_and_copies):
    _, plain, _ = zoo_and_copies
    x = np.random.default_rng(5).normal(size=(6, 8, 8, 1)).astype(np.float32)
    assert layer_names(plain, input_shape=x.shape)[:2] == ["block1.0.conv", "block1.1.conv"]
    assert layer_names(plain) == layer_names(plain, input_shape=(1, 32, 32, 1))
    typed = capture_activations(plain, x, (nnx.Conv, nnx.BatchNorm, nnx.Linear))
    assert list(typed)[:4] == ["block1.0.conv", "block1.0.bn", "block1.1.conv", "block1.1.bn"]
    assert list(typed)[-1] == "head" and typed["head"].shape == (6, 10)
    plain.eval()  # what the capture runs, by hand
    unit = plain.block1[0]
    np.testing.assert_allclose(typed["block1.0.conv"], unit.conv(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(typed["block1.0.bn"], unit.bn(unit.conv(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(typed["head"], plain(x), rtol=1e-5, atol=1e-6)
    named = capture_activations(plain, x, ["head", "block2.1", "block1.0.bn"])
    assert list(named) == ["block1.0.bn", "block2.1", "head"]  # forward order, not given order
    assert named["block2.1"].shape == (6, 4, 4, 16)


class Doubled(nnx.Conv):
    """A subclass whose output differs from its base's (``super().__call__`` times two)."""

    def __call__(self, x):
        return 2.0 * super().__call__(x)


class Inherits(nnx.Conv):
    """A subclass with the inherited ``__call__``."""


class Reuse(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.doubled = Doubled(2, 2, (3, 3), rngs=rngs)
        self.conv = Inherits(2, 2, (3, 3), rngs=rngs)
        self.unused = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x):
        return self.conv(self.conv(self.doubled(x)))


def test_subclasses_and_repeated_calls_are_recorded_once_per_call():
    model = Reuse(nnx.Rngs(0))
    x = np.random.default_rng(6).normal(size=(3, 5, 5, 2)).astype(np.float32)
    before = {cls: dict(cls.__dict__) for cls in (nnx.Conv, Doubled, Inherits)}
    acts = capture_activations(model, x)
    assert list(acts) == ["doubled", "conv", "conv#2"]
    once = model.doubled(x)
    np.testing.assert_allclose(acts["doubled"], once, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["conv"], model.conv(once), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["conv#2"], model.conv(model.conv(once)), rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match=r"only one layer is selected \(conv#2\)"):
        assert list(capture_activations(model, x, ["conv#2"])) == ["conv#2"]
    for cls, attributes in before.items():  # the classes are as they were
        assert cls.__dict__.get("__call__") is attributes.get("__call__")
        assert ("__call__" in cls.__dict__) == ("__call__" in attributes)
    with pytest.raises(ValueError, match=r"\['unused'\] are not called in the forward pass"):
        layer_names(model, ["unused"], input_shape=x.shape)


def test_selections_that_match_nothing_name_the_closest_modules():
    mlp = nnx.Sequential(
        nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 2, rngs=nnx.Rngs(1))
    )
    x = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"layers='Conv' matches no module.*layers\.0, layers\.2"):
        capture_activations(mlp, x, nnx.Conv)
    with pytest.raises(ValueError, match=r"layers='layers\.1' matches no module; the closest"):
        capture_activations(mlp, x, ["layers.1"])
    with pytest.raises(ValueError, match=r"layers='head\*' matches no module"):
        capture_activations(mlp, x, ["head*"])
    with pytest.raises(ValueError, match=r"layers='layers\.0#2' matches no module; .*layers\.0"):
        capture_activations(mlp, x, ["layers.0#2"])
    with pytest.raises(ValueError, match="pass input_shape"):
        layer_names(mlp, nnx.Linear)
    with pytest.raises(ValueError, match="mixes module types and names"):
        capture_activations(mlp, x, [nnx.Linear, "layers.0"])
    with pytest.raises(ValueError, match="empty list"):
        capture_activations(mlp, x, [])
    with pytest.raises(ValueError, match=r"model must be a flax\.nnx\.Module or a LinenModel"):
        capture_activations(lambda x: x, x)
    acts = capture_activations(mlp, x, nnx.Linear)
    assert {name: a.shape for name, a in acts.items()} == {"layers.0": (5, 8), "layers.2": (5, 2)}
    assert list(capture_activations(mlp, x, ["layers.*"])) == ["layers.0", "layers.2"]
    # No convolution: the default takes the two Linear layers, its only repeated modules.
    with pytest.warns(UserWarning, match="has 0 Conv layers, so its repeated blocks") as said:
        assert list(capture_activations(mlp, x)) == ["layers.0", "layers.2"]
    assert "\n" not in str(said[0].message)
    with pytest.warns(UserWarning, match=r"only one layer is selected \(layers\.2\)"):
        capture_activations(mlp, x, ["layers.2"])
    with pytest.raises(ValueError, match="no two same-class sibling modules in a row"):
        capture_activations(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), x, "blocks")


def test_zoo_convolutions_are_its_nnx_conv_outputs(resnet, images):
    """The zoo's "conv" taps are its nnx.Conv submodules: same names, order and values."""
    taps = capture_activations(resnet, images)
    modules = capture_activations(resnet, images, nnx.Conv)
    assert list(taps) == list(modules)
    for name, value in taps.items():
        np.testing.assert_array_equal(value, modules[name])
    bns = layer_names(resnet, nnx.BatchNorm, input_shape=images.shape)
    assert bns[:2] == ["bn1", "layer1.0.bn1"] and "layer2.0.shortcut.bn" in bns


def test_linen_models_by_type_and_name(zoo_and_copies):
    _, _, linen = zoo_and_copies
    x = np.random.default_rng(7).normal(size=(4, 8, 8, 1)).astype(np.float32)
    assert layer_names(linen) == layer_names(linen, input_shape=(1, 32, 32, 1))
    dense = capture_activations(linen, x, (nn.Conv, nn.Dense))
    assert list(dense)[-2:] == ["block3_0_conv", "head"]
    logits = linen.module.apply(linen.variables, x)
    np.testing.assert_allclose(dense["head"], logits, rtol=1e-5, atol=1e-6)
    named = capture_activations(linen, x, ["head", "block1_0_bn"])
    assert list(named) == ["block1_0_bn", "head"]
    with pytest.raises(ValueError, match=r"layers='nope' matches no module; .*block1_0_conv"):
        layer_names(linen, ["nope"])
    with pytest.raises(ValueError, match=r"layers='LayerNorm' matches no module; .*block1_0_conv"):
        layer_names(linen, nn.LayerNorm)
    with pytest.raises(ValueError, match=r"LinenModel\.module must be a flax\.linen\.Module"):
        layer_names(LinenModel(object(), {}), input_shape=x.shape)


# Transformers: token outputs (n, T, D) of same-class blocks, with padding masks.


class EncoderLayer(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.attention = nnx.MultiHeadAttention(
            num_heads=2, in_features=width, decode=False, rngs=rngs
        )
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.mlp = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attention(x, mask=mask)
        return x + self.mlp(nnx.gelu(self.norm(x)))


class TinyEncoder(nnx.Module):
    """A text encoder: token embeddings, three encoder layers, a head on the first token."""

    def __init__(self, rngs: nnx.Rngs, width: int = 8, vocab: int = 13):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(width, rngs) for _ in range(3)])
        self.head = nnx.Linear(width, 3, rngs=rngs)

    def __call__(self, input_ids, attention_mask):
        mask = nnx.make_attention_mask(attention_mask, attention_mask)
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x[:, 0])


class LinenEncoderLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(x)
        return x + nn.Dense(x.shape[-1])(nn.gelu(nn.LayerNorm()(x)))


class LinenEncoder(nn.Module):
    """Patch vectors (n, T, P) through three layers; returns its logits and hidden states."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8)(x)
        states = [x]
        for _ in range(3):
            x = LinenEncoderLayer()(x)
            states.append(x)
        return {"logits": nn.Dense(3)(x.mean(axis=1)), "hidden_states": states}


@pytest.fixture(scope="module")
def token_inputs():
    """Token ids (12, 6) of which every third input is padded after 2 tokens."""
    rng = np.random.default_rng(8)
    ids = rng.integers(1, 13, size=(12, 6))
    mask = np.ones((12, 6), np.int32)
    mask[::3, 2:] = 0
    return {"input_ids": np.where(mask, ids, 0), "attention_mask": mask}


def _pooled_by_hand(tokens, mask, how: str) -> np.ndarray:
    """Each input's real tokens (mask), pooled in float64 in a loop over inputs."""
    rows = []
    for values, real in zip(np.asarray(tokens, np.float64), mask.astype(bool), strict=True):
        rows.append({"mean": values[real].mean(axis=0), "last": values[real][-1]}[how])
    return np.stack(rows)


def test_a_transformer_encoder_gives_its_layers_pooled_over_real_tokens(token_inputs):
    model = TinyEncoder(nnx.Rngs(0))
    with pytest.warns(UserWarning, match="has 0 Conv layers, so its repeated blocks are") as said:
        acts = capture_activations(model, token_inputs, batch_size=5)
    assert "the 3 EncoderLayer modules layers.0 ... layers.2" in str(said[0].message)
    assert list(acts) == ["layers.0", "layers.1", "layers.2"]
    ids, mask = token_inputs["input_ids"], token_inputs["attention_mask"]
    x = model.embed(ids)  # the forward pass by hand, layer by layer
    pairwise = nnx.make_attention_mask(mask, mask)
    outputs = []
    for layer in model.layers:
        x = layer(x, pairwise)
        outputs.append(x)
    for name, output in zip(acts, outputs, strict=True):
        np.testing.assert_allclose(
            acts[name], _pooled_by_hand(output, mask, "mean"), rtol=1e-5, atol=1e-6
        )
    with pytest.warns(UserWarning, match="repeated blocks"):
        names, grams = activation_grams(model, token_inputs, tokens="last", batch_size=5)
    last = _pooled_by_hand(outputs[-1], mask, "last")
    np.testing.assert_allclose(grams[-1], last @ last.T, rtol=1e-4, atol=1e-5)
    assert layer_names(model, "blocks", inputs=token_inputs) == names
    # The mask given apart from the inputs is the one the pooling reads.
    everything = np.ones_like(mask)
    with pytest.warns(UserWarning, match=r"only one layer is selected \(layers\.2\)"):
        whole = capture_activations(model, token_inputs, ["layers.2"], mask=everything)
    np.testing.assert_allclose(
        whole["layers.2"], _pooled_by_hand(outputs[-1], everything, "mean"), rtol=1e-5, atol=1e-6
    )


def test_a_linen_transformer_by_blocks_and_by_hidden_states():
    model = LinenEncoder()
    x = np.random.default_rng(9).normal(size=(10, 4, 5)).astype(np.float32)
    linen = LinenModel(model, model.init(jax.random.key(0), x))
    blocks = capture_activations(linen, x, "blocks", tokens="flatten")
    assert list(blocks) == [f"LinenEncoderLayer_{i}" for i in range(3)]
    states = capture_activations(linen, x, "hidden_states", tokens="flatten")
    assert list(states) == [f"hidden_states.{i}" for i in range(4)]
    returned = model.apply(linen.variables, x)["hidden_states"]
    for i, name in enumerate(states):
        np.testing.assert_allclose(
            states[name], np.asarray(returned[i]).reshape(10, -1), rtol=1e-5, atol=1e-6
        )
    for i, name in enumerate(blocks):  # block i's output is hidden state i + 1
        np.testing.assert_allclose(blocks[name], states[f"hidden_states.{i + 1}"], rtol=1e-5)
    with pytest.raises(ValueError, match="layers='hidden_states' needs a model that returns"):
        capture_activations(
            TinyEncoder(nnx.Rngs(1)),
            {"input_ids": np.ones((2, 3), int), "attention_mask": np.ones((2, 3), int)},
            "hidden_states",
        )


class EncoderWithStates(TinyEncoder):
    """TinyEncoder returning its hidden states, as a Hugging Face model's output does."""

    def __call__(self, input_ids, attention_mask):
        mask = nnx.make_attention_mask(attention_mask, attention_mask)
        states = [self.embed(input_ids)]
        for layer in self.layers:
            states.append(layer(states[-1], mask))
        return {"logits": self.head(states[-1][:, 0]), "hidden_states": states}


def test_an_nnx_model_by_the_hidden_states_it_returns(token_inputs):
    model = EncoderWithStates(nnx.Rngs(2))
    states = capture_activations(model, token_inputs, "hidden_states", tokens="last")
    blocks = capture_activations(model, token_inputs, "blocks", tokens="last")
    assert list(states) == [f"hidden_states.{i}" for i in range(4)]
    for i, name in enumerate(blocks):  # layer i's output is hidden state i + 1
        np.testing.assert_allclose(states[f"hidden_states.{i + 1}"], blocks[name], rtol=1e-5)
    returned = model(**token_inputs)["hidden_states"]
    last = _pooled_by_hand(returned[0], token_inputs["attention_mask"], "last")
    np.testing.assert_allclose(states["hidden_states.0"], last, rtol=1e-5, atol=1e-6)
