"""The model zoo (names, conv counts, shapes, width, BatchNorm modes) and the public API."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import adjusted_rand_score

import ssc_jax
from ssc_jax import create_model, layer_names, list_models
from ssc_jax.nets.zoo.densenet import DenseNet
from ssc_jax.solver.synthetic import union_of_subspaces

CONV_COUNTS = {
    "resnet18": 20,
    "resnet34": 36,
    "resnet50": 53,
    "resnet101": 104,
    "resnet152": 155,
    "wrn28_2": 28,
    "wrn64_2": 64,
    "wrn64_10": 64,
    "wrn10_1": 10,
    "densenet121": 120,
    "densenet169": 168,
    "densenet201": 200,
    "densenet161": 160,
    "vgg11": 8,
    "vgg13": 10,
    "vgg16": 13,
    "vgg19": 16,
    "vgg24": 21,
    "vgg29": 26,
    "small_cnn": 5,
}


def logits_shape(model: nnx.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the eval-mode output, traced without computing."""
    graphdef, state = nnx.split(model)

    def forward(state, x):
        m = nnx.merge(graphdef, state)
        m.eval()
        return m(x)

    return jax.eval_shape(forward, state, jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape


@pytest.mark.parametrize(
    ("name", "count"),
    # Tracing a DenseNet takes 2-3 s.
    [
        pytest.param(name, count, marks=pytest.mark.slow if name.startswith("densenet") else ())
        for name, count in CONV_COUNTS.items()
    ],
)
def test_conv_count_and_output_shape(name, count):
    model = create_model(name, num_classes=7, width=0.0625)
    assert len(layer_names(model, "conv")) == count
    assert logits_shape(model, (2, 32, 32, 3)) == (2, 7)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("resnet36", "resnet34"), ("resnet53", "resnet50"), ("ResNet104", "resnet101")],
)
def test_paper_aliases(alias, name):
    a = layer_names(create_model(alias, width=0.0625))
    assert a == layer_names(create_model(name, width=0.0625))


def test_list_models_and_unknown_name():
    names = list_models()
    for name in ("small_cnn", "vgg29", "resnet152", "resnet53", "wrn28_2", "densenet121"):
        assert name in names
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*vgg16.*densenet121"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("wrn27_2")
    with pytest.raises(ValueError, match="width"):
        create_model("small_cnn", width=0)


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [
        ("small_cnn", 8, 1),
        ("small_cnn", 32, 3),
        ("vgg11", 32, 3),
        ("resnet18", 8, 1),
        ("resnet50", 8, 3),
        ("wrn10_2", 8, 3),
        pytest.param("tiny_densenet", 8, 3, marks=pytest.mark.slow),
    ],
)
def test_forward_runs_and_batchnorm_modes(name, size, channels):
    # Every architecture's forward is traced above; here one net per family computes.
    # tiny_densenet runs densenet121's code with one layer per dense block.
    if name == "tiny_densenet":
        model = DenseNet(
            (1, 1, 1, 1), 4, num_classes=5, in_channels=channels, width=1.0, rngs=nnx.Rngs(0)
        )
    else:
        model = create_model(name, num_classes=5, width=0.0625, in_channels=channels)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, size, size, channels)), jnp.float32)
    before = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    logits = model(x)  # training mode: batch statistics, running averages updated
    assert logits.shape == (3, 5)
    assert np.all(np.isfinite(logits))
    after = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    model.eval()  # running averages: deterministic, and the averages stay put
    np.testing.assert_array_equal(model(x), model(x))
    for a, b in zip(after, jax.tree.leaves(nnx.state(model, nnx.BatchStat)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vgg_rejects_inputs_too_small_to_pool():
    model = create_model("vgg11", width=0.0625)
    with pytest.raises(ValueError, match="at least 32x32"):
        model(jnp.zeros((1, 16, 16, 3)))


def test_width_scales_channels_and_seed_sets_weights():
    def n_params(model):
        return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

    assert (
        n_params(create_model("resnet18", width=0.25))
        < n_params(create_model("resnet18", width=0.5)) / 3
    )
    a, b, c = (create_model("small_cnn", seed=s) for s in (0, 0, 1))
    kernel = lambda m: np.asarray(m.block1[0].conv.kernel[...])
    np.testing.assert_array_equal(kernel(a), kernel(b))
    assert not np.array_equal(kernel(a), kernel(c))


def test_public_api_builds_and_captures_a_zoo_model():
    model = ssc_jax.create_model("small_cnn", num_classes=10, seed=0)
    names = ssc_jax.layer_names(model, layers="conv")
    assert len(names) == 5
    assert "small_cnn" in ssc_jax.list_models()
    images = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype(np.float32)
    captured, grams = ssc_jax.activation_grams(model, images, layers="conv")
    assert captured == names and grams.shape == (5, 6, 6)
    acts = ssc_jax.capture_activations(model, images, layers=[names[0]])
    flat = np.asarray(acts[names[0]]).reshape(6, -1)
    np.testing.assert_allclose(grams[0], flat @ flat.T, rtol=1e-4, atol=1e-4)


def test_each_public_name_is_the_object_its_room_defines():
    for name in ssc_jax.__all__:
        if name == "__version__":
            continue
        value = getattr(ssc_jax, name)
        module = value.__module__
        assert module.startswith("ssc_jax."), (name, module)
        assert getattr(importlib.import_module(module), name) is value, name
        room = importlib.import_module(".".join(module.split(".")[:2]))
        assert name in room.__all__, (name, room.__name__)
        assert getattr(room, name) is value, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ssc_jax.not_a_name  # noqa: B018


def test_public_entry_points_cluster_a_union_of_subspaces():
    x, truth = union_of_subspaces(10, 3, 2, 12, noise=0.01, seed=0)
    result = ssc_jax.ssc(x)
    assert result.coef.shape == (30, 30) and bool(result.converged)
    A = ssc_jax.affinity(result.coef)
    np.testing.assert_array_equal(A, A.T)
    clusters = ssc_jax.spectral_clustering(A, 3)
    assert clusters.shape == (30,)
    assert adjusted_rand_score(truth, clusters) == 1.0
    agreement = ssc_jax.label_agreement(A, truth, truth)
    assert float(agreement.ssc_label_accuracy) == 1.0
    grams = np.stack([x @ x.T, np.abs(x) @ np.abs(x).T])
    similarity = np.asarray(ssc_jax.cka_matrix(grams))
    assert similarity.shape == (2, 2)
    np.testing.assert_allclose(np.diag(similarity), 1.0, rtol=1e-5)
    assert similarity[0, 1] == pytest.approx(float(ssc_jax.cka(grams[0], grams[1])), rel=1e-5)
