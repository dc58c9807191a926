"""Training steps, checkpoints and resuming."""

import dataclasses
import hashlib
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ssc_jax import (
    TrainConfig,
    create_model,
    list_checkpoints,
    load_checkpoint,
    load_dataset,
    train,
)
from ssc_jax.nets.capture import predict
from ssc_jax.training.augment import channel_stats, normalize_images, random_crop_flip
from ssc_jax.training.checkpoints import restore_checkpoint, save_checkpoint
from ssc_jax.training.trainer import (
    YNN_FUSIONS,
    cpu_compiler_options,
    evaluate,
    make_optimizer,
    make_train_step,
)

TINY = TrainConfig(
    model="small_cnn",
    dataset="digits",
    width=0.25,
    epochs=1,
    batch_size=32,
    data_fraction=0.2,
    augment=False,
)


def half_written(run, name: str):
    """Fake a save killed mid-way: a copy of epoch 1's step folder under
    ``name`` whose model file is cut in half and which has no commit marker."""
    step = run / "checkpoints" / name
    shutil.copytree(run / "checkpoints" / "1", step)
    (step / ocp.path.atomicity.COMMIT_SUCCESS_FILE).unlink()
    files = [p for p in (step / "model").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    return step


def files_digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    history = train(TINY, run, progress=False)
    return run, history


@pytest.mark.slow
def test_train_steps_reduce_the_loss():
    images, labels, _ = load_dataset("digits")
    images, labels = images[:64], labels[:64]
    config = dataclasses.replace(TINY, learning_rate=0.05)
    model = create_model("small_cnn", width=0.25, in_channels=1)
    optimizer = make_optimizer(model, config, steps_per_epoch=1)
    step = make_train_step(config, *channel_stats(images))
    losses = [float(step(model, optimizer, images, labels, jax.random.key(i))[0]) for i in range(5)]
    assert losses[-1] < 0.8 * losses[0]


def reference_steps(model, config, mean, std, batches):
    """Train steps by hand: ``jax.value_and_grad`` over the Params and optax's SGD, jitted
    with XLA's default options; returns each step's loss and the final (params, rest)."""
    graphdef, params, rest = nnx.as_pure(nnx.split(model, nnx.Param, ...))
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(config.learning_rate, momentum=config.momentum),
    )
    opt_state = tx.init(params)

    @jax.jit
    def step(params, rest, opt_state, images, labels, key):
        def loss_fn(params, rest):
            net = nnx.merge(graphdef, params, rest)
            x = normalize_images(random_crop_flip(key, jnp.asarray(images, jnp.float32)), mean, std)
            loss = optax.softmax_cross_entropy_with_integer_labels(net(x), labels).mean()
            return loss, nnx.as_pure(nnx.split(net, nnx.Param, ...)[2])

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss

    losses = []
    for images, labels, key in batches:
        params, rest, opt_state, loss = step(params, rest, opt_state, images, labels, key)
        losses.append(float(loss))
    return losses, (params, rest)


def test_train_step_matches_value_and_grad_and_optax_by_hand():
    # a ResNet (strided blocks, projection shortcuts) with augmentation, where the CPU
    # compiler options of the step change how XLA fuses BatchNorm, ReLU and residual adds
    config = TrainConfig(model="resnet18", width=0.125, batch_size=16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    batches = [(images[i : i + 16], labels[i : i + 16], jax.random.key(i)) for i in (0, 16)]
    mean, std = channel_stats(images)
    model = create_model("resnet18", width=0.125)
    expected_losses, (params, rest) = reference_steps(model, config, mean, std, batches)

    optimizer = make_optimizer(model, config, steps_per_epoch=2)
    step = make_train_step(config, mean, std)
    losses = [float(step(model, optimizer, *batch)[0]) for batch in batches]
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    _, got_params, got_rest = nnx.split(model, nnx.Param, ...)
    for got, want in ((got_params, params), (got_rest, rest)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(optimizer.step[...]) == 2


def test_only_resnets_get_the_cpu_fusion_options():
    assert cpu_compiler_options("resnet18") == cpu_compiler_options("ResNet53") == YNN_FUSIONS
    assert cpu_compiler_options("small_cnn") == cpu_compiler_options("wrn28_2") == {}


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = create_model("small_cnn", width=0.25, in_channels=1)
    optimizer = make_optimizer(model, TINY, steps_per_epoch=3)
    images, labels, _ = load_dataset("digits")
    step = make_train_step(TINY, *channel_stats(images))
    step(model, optimizer, images[:16], labels[:16], jax.random.key(0))  # non-trivial momentum
    save_checkpoint(tmp_path, 1, model, optimizer, {"epoch": 1})
    other = create_model("small_cnn", width=0.25, in_channels=1, seed=5)
    other_optimizer = make_optimizer(other, TINY, steps_per_epoch=3)
    assert restore_checkpoint(tmp_path, 1, other, other_optimizer) == {"epoch": 1}
    pairs = [
        (nnx.state(model), nnx.state(other)),
        (nnx.state(optimizer), nnx.state(other_optimizer)),
    ]
    for saved, restored in pairs:
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_run_folder_and_load_checkpoint(one_epoch_run):
    run, history = one_epoch_run
    assert list_checkpoints(run) == [1]
    assert [m["epoch"] for m in history] == [1]
    assert history[0]["lr"] == 0.1
    assert history[0]["test_accuracy"] > 0.3
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"] == "small_cnn"
    assert config["in_channels"] == 1
    assert len(config["mean"]) == 1
    model, info = load_checkpoint(run)
    assert info["epoch"] == 1
    assert info["metrics"] == history[0]
    x_test, y_test, _ = load_dataset("digits", "test")
    _, accuracy = evaluate(model, x_test, y_test, info, batch_size=100)
    assert accuracy == pytest.approx(history[0]["test_accuracy"])


def test_evaluate_matches_predict_by_hand(one_epoch_run):
    model, info = load_checkpoint(one_epoch_run[0])
    images, labels, _ = load_dataset("digits", "test")
    images, labels = images[:150], labels[:150]
    loss, accuracy = evaluate(model, images, labels, info, batch_size=64)
    x = (images / np.float32(255) - np.float32(info["mean"])) / np.float32(info["std"])
    probs = np.asarray(predict(model, x, batch_size=150))
    assert accuracy == np.count_nonzero(probs.argmax(-1) == labels) / 150
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(150), labels])), rel=1e-5)
    assert 0.3 < accuracy < 1  # one epoch on 20% of digits: better than chance, not perfect


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch(one_epoch_run, tmp_path):
    run, _ = one_epoch_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    epoch_one = files_digest(resumed / "checkpoints" / "1")
    # a save killed half-way through epoch 2 left orbax's temporary folder behind
    temp = half_written(resumed, "2" + ocp.utils.TMP_DIR_SUFFIX)
    assert list_checkpoints(resumed) == [1]
    history = train(dataclasses.replace(TINY, epochs=2), resumed, progress=False)
    assert [m["epoch"] for m in history] == [1, 2]
    assert list_checkpoints(resumed) == [1, 2]
    assert files_digest(resumed / "checkpoints" / "1") == epoch_one
    assert not temp.exists()
    # the resumed run equals an uninterrupted one
    straight = train(dataclasses.replace(TINY, epochs=2), tmp_path / "straight", progress=False)
    assert straight[1]["train_loss"] == pytest.approx(history[1]["train_loss"], rel=1e-6)
    a, _ = load_checkpoint(resumed)
    b, _ = load_checkpoint(tmp_path / "straight")
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # a finished run is returned as is
    assert train(dataclasses.replace(TINY, epochs=2), resumed, progress=False) == history


@pytest.mark.slow
def test_a_step_without_commit_marker_is_redone(one_epoch_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run[0], run)
    half_written(run, "2")
    assert list_checkpoints(run) == [1]
    assert load_checkpoint(run)[1]["epoch"] == 1
    with pytest.raises(ValueError, match=r"no checkpoint of epoch 2 .* available epochs: \[1\]"):
        load_checkpoint(run, 2)
    history = train(dataclasses.replace(TINY, epochs=2), run, progress=False)
    assert [m["epoch"] for m in history] == [1, 2]
    assert list_checkpoints(run) == [1, 2]
    model, info = load_checkpoint(run)
    assert info["metrics"] == history[1]
    x_test, y_test, _ = load_dataset("digits", "test")
    _, accuracy = evaluate(model, x_test, y_test, info, batch_size=100)
    assert accuracy == pytest.approx(history[1]["test_accuracy"])


def test_runs_in_the_old_layout_are_refused(one_epoch_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(one_epoch_run[0], run)
    (run / "checkpoints" / "1").rename(run / "checkpoints" / "epoch_0001")
    with pytest.raises(ValueError, match="layout of ssc-jax before orbax's CheckpointManager"):
        list_checkpoints(run)
    with pytest.raises(ValueError, match="retrain it into a new folder"):
        train(TINY, run, progress=False)


def test_errors(one_epoch_run, tmp_path):
    run, _ = one_epoch_run
    with pytest.raises(ValueError, match=r"another config \(width: 0.25 -> 0.5\)"):
        train(dataclasses.replace(TINY, width=0.5), run, progress=False)
    with pytest.raises(ValueError, match=r"no checkpoint of epoch 7 .* available epochs: \[1\]"):
        load_checkpoint(run, 7)
    with pytest.raises(ValueError, match="not a training run folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="test_dataset must name the test set"):
        train(dataclasses.replace(TINY, dataset=str(tmp_path)), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train(dataclasses.replace(TINY, epochs=0), tmp_path / "y", progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        train(dataclasses.replace(TINY, model="resnet7"), tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()
