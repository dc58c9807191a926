"""Training with the paper's recipe (Sec. 3.2), a checkpoint after every epoch, resumable.

``train(config, out_dir)`` trains ``config.model`` on ``config.dataset`` and writes the run
folder described in :mod:`ssc_jax.training.checkpoints`. Running it again on the same folder resumes
after the last complete checkpoint (or extends a finished run to more epochs). Shuffling and
augmentation are seeded per epoch, so a resumed run sees the data an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from ssc_jax.core.checks import check_positive
from ssc_jax.nets.capture import predict
from ssc_jax.nets.zoo.registry import ALIASES
from ssc_jax.nets.zoo.resnet import RESNET_DEPTHS
from ssc_jax.training.augment import channel_stats, normalize_images, random_crop_flip
from ssc_jax.training.checkpoints import (
    CheckpointError,
    list_checkpoints,
    model_from_run_config,
    read_metrics,
    read_run_config,
    readable_epoch,
    restore_checkpoint,
    save_checkpoint,
    write_json,
)
from ssc_jax.training.datasets import TFDS_NAMES, load_dataset, stratified_subset


def _option(default: Any, help: str) -> Any:
    """A config field with its command-line help text."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults are the paper's recipe: SGD, momentum 0.9, lr 0.1, weight
    decay 5e-4 (L2, on every parameter, as PyTorch's SGD), lr x0.2 every 30 epochs, 100
    epochs, batch 128, random crop with 4-pixel padding + horizontal flip.

    ``dataset`` is a :func:`ssc_jax.load_dataset` name or path; the test set is its
    ``"test"`` split, or ``test_dataset`` (required when ``dataset`` is a path).
    ``data_fraction`` < 1 trains on a stratified subset (the paper's 5% and 50%).
    Turn ``augment`` off for data that flips and crops would destroy, such as digits.
    """

    model: str = _option("small_cnn", "architecture from the model zoo (small_cnn, resnet18, ...)")
    dataset: str = _option(
        "digits", "training data: digits, cifar10, cifar100, or a folder or zip of class folders"
    )
    test_dataset: str | None = _option(
        None, "test data (name or path); default: the 'test' split of the dataset"
    )
    data_dir: str | None = _option(
        None, "tensorflow-datasets data folder for cifar10/cifar100 (default: tfds' own)"
    )
    width: float = _option(1.0, "channel width multiplier of the model")
    epochs: int = _option(100, "number of training epochs (a checkpoint after each)")
    batch_size: int = _option(128, "training batch size")
    learning_rate: float = _option(0.1, "initial SGD learning rate")
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(5e-4, "L2 weight decay on every parameter")
    lr_decay: float = _option(
        0.2, "factor the learning rate is multiplied by every lr_decay_epochs"
    )
    lr_decay_epochs: int = _option(30, "epochs between learning-rate decays")
    data_fraction: float = _option(
        1.0, "fraction of the training set to use, a stratified subset, in (0, 1]"
    )
    augment: bool = _option(
        True, "random crop (4-pixel padding) and horizontal flip during training"
    )
    seed: int = _option(0, "seed of initialisation, shuffling, augmentation and the subset")
    eval_batch_size: int = _option(512, "batch size of the per-epoch test evaluation")

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate during ``epoch`` (1-based)."""
        return self.learning_rate * self.lr_decay ** ((epoch - 1) // self.lr_decay_epochs)


def _check_config(config: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "lr_decay_epochs", "eval_batch_size"):
        value = getattr(config, name)
        if int(value) != value or value < 1:
            raise ValueError(f"TrainConfig.{name} must be a positive integer; got {value!r}")
    for name in ("width", "learning_rate", "lr_decay", "data_fraction"):
        check_positive(f"TrainConfig.{name}", getattr(config, name))
    if config.data_fraction > 1:
        raise ValueError(f"TrainConfig.data_fraction must be in (0, 1]; got {config.data_fraction}")
    if config.test_dataset is None and config.dataset not in (*TFDS_NAMES, "digits"):
        raise ValueError("TrainConfig.test_dataset must name the test set when dataset is a path")


def _few(names: list[str], shown: int = 5) -> str:
    """``names`` for a message: all of them, or the first few and how many in all."""
    head = ", ".join(repr(n) for n in names[:shown])
    return f"[{head}]" if len(names) <= shown else f"[{head}, ...] ({len(names)})"


def _load_data(config: TrainConfig):
    """Training and test sets (images uint8, labels int32) and the class names."""
    x_train, y_train, classes = load_dataset(config.dataset, "train", data_dir=config.data_dir)
    test_name = config.test_dataset or config.dataset
    x_test, y_test, test_classes = load_dataset(test_name, "test", data_dir=config.data_dir)
    if len(np.unique(y_train)) < 2:
        raise ValueError(
            f"the training set {config.dataset!r} holds one class ({classes[y_train[0]]!r}); "
            "a classifier needs at least 2: pass a dataset of several class folders"
        )
    if test_classes != classes:
        raise ValueError(
            f"the test set {test_name!r} has the classes {_few(test_classes)} but the training "
            f"set {config.dataset!r} has {_few(classes)}; pass a test set of the same classes"
        )
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"the test images of {test_name!r} are {x_test.shape[1:]} but the training images "
            f"of {config.dataset!r} are {x_train.shape[1:]}; pass test images of the same size"
        )
    if config.data_fraction < 1:
        subset = stratified_subset(y_train, config.data_fraction, seed=config.seed)
        x_train, y_train = x_train[subset], y_train[subset]
    return (x_train, y_train), (x_test, y_test), classes


def _run_info(config: TrainConfig, x_train: np.ndarray, classes: list[str]) -> dict[str, Any]:
    mean, std = channel_stats(x_train)
    return {
        "config": dataclasses.asdict(config),
        "num_classes": len(classes),
        "in_channels": int(x_train.shape[-1]),
        "image_shape": list(x_train.shape[1:]),
        "class_names": classes,
        "mean": mean,
        "std": std,
        "train_size": len(x_train),
    }


_DATA_FIELDS = ("dataset", "test_dataset")


def _absolute(data: str | None) -> str | None:
    """A dataset given as an existing path, made absolute, so that the run records where its
    data are wherever it is opened from; a dataset name as it is."""
    if data is None or not Path(str(data)).exists():
        return data
    return str(Path(str(data)).resolve())


def _check_resumable(stored: dict[str, Any], config: TrainConfig, out_dir: Path) -> None:
    """Raise unless the run in ``out_dir`` has the same config, ``epochs`` aside."""
    given = dataclasses.asdict(config)
    recorded = dict(stored["config"])
    recorded.update({k: _absolute(recorded.get(k)) for k in _DATA_FIELDS})
    differ = [k for k in given if k != "epochs" and recorded.get(k) != given[k]]
    if differ:
        details = ", ".join(f"{k}: {stored['config'].get(k)!r} -> {given[k]!r}" for k in differ)
        raise ValueError(
            f"{str(out_dir)!r} holds a run with another config ({details}); "
            "resume it with its own config or train into a new folder"
        )


def make_optimizer(model: nnx.Module, config: TrainConfig, steps_per_epoch: int) -> nnx.Optimizer:
    """SGD with momentum, L2 weight decay and the step schedule, over the model's Params."""
    schedule = optax.exponential_decay(
        config.learning_rate,
        transition_steps=config.lr_decay_epochs * steps_per_epoch,
        decay_rate=config.lr_decay,
        staircase=True,
    )
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum),
    )
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


# XLA:CPU computes a convolution's weight gradient from a batch-minor copy of the layer input
# and, by default, fuses the BatchNorm, ReLU and residual chain that produced that input into
# the copy, re-evaluating the chain (up to three BatchNorms deep in a post-activation ResNet)
# with strided reads: as much thread time in a CIFAR ResNet-18 step as its convolutions take.
# YNNPACK elementwise and reduce fusions materialise those chains, so each copy reads one
# buffer. On networks without such chains (VGG, small_cnn; pre-activation Wide-ResNets) they
# gain nothing or cost time, so only ResNets get them (benchmarks/RESULTS.md, "Training
# throughput").
YNN_FUSIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
}


def cpu_compiler_options(model: str) -> dict[str, Any]:
    """XLA options of the train step of the zoo model ``model`` on the CPU."""
    name = ALIASES.get(model.lower(), model.lower())
    return dict(YNN_FUSIONS) if name in RESNET_DEPTHS else {}


def make_functional_step(
    config: TrainConfig,
    mean: list[float],
    std: list[float],
    *,
    compiler_options: dict[str, Any] | None = None,
):
    """The jitted step (graphdef, state, images uint8 (B, H, W, C), labels (B,), key) ->
    (new state, mean loss, accuracy), where ``graphdef, state = nnx.split((model, optimizer))``.

    It augments, normalises, and updates params, momentum and BatchNorm statistics. ``state``
    is donated: its buffers are reused for the new state, so pass each state only once.
    ``compiler_options`` are XLA's, for this step only; None means
    :func:`cpu_compiler_options` on the CPU and none elsewhere, ``{}`` XLA's defaults.
    """
    options = compiler_options
    if options is None:
        on_cpu = jax.default_backend() == "cpu"
        options = cpu_compiler_options(config.model) if on_cpu else {}

    @functools.partial(
        jax.jit, static_argnums=0, donate_argnums=1, compiler_options=options or None
    )
    def step(graphdef, state, images, labels, key):
        model, optimizer = nnx.merge(graphdef, state)
        x = jnp.asarray(images, jnp.float32)
        if config.augment:
            x = random_crop_flip(key, x)
        x = normalize_images(x, mean, std)

        def loss_fn(model):
            logits = model(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return nnx.state((model, optimizer)), loss, accuracy

    return step


def make_train_step(config: TrainConfig, mean: list[float], std: list[float]):
    """One step (model, optimizer, images uint8 (B, H, W, C), labels (B,), key) ->
    (mean loss, accuracy) that updates ``model`` and ``optimizer`` in place: the
    :func:`make_functional_step` around an ``nnx.split`` and ``nnx.update``. The old state
    is donated, so arrays taken from ``model`` or ``optimizer`` before the call are deleted. A
    loop of many steps should split once and call the functional step, as :func:`train` does."""
    functional = make_functional_step(config, mean, std)

    def train_step(model, optimizer, images, labels, key):
        graphdef, state = nnx.split((model, optimizer))
        state, loss, accuracy = functional(graphdef, state, images, labels, key)
        nnx.update((model, optimizer), state)
        return loss, accuracy

    return train_step


def evaluate(model: nnx.Module, images: np.ndarray, labels: np.ndarray, run: dict, batch_size: int):
    """(mean cross-entropy, accuracy) of the model in eval mode on uint8 images."""
    probs = predict(model, normalize_images(images, run["mean"], run["std"]), batch_size=batch_size)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.maximum(picked, 1e-12))))
    return loss, float(np.mean(probs.argmax(-1) == labels))


def _train_epoch(step, model, optimizer, config, epoch, x_train, y_train, bar_args):
    """One epoch of the functional ``step`` over a seeded shuffle (the last partial batch is
    dropped); ``model`` and ``optimizer`` hold the trained state when it returns."""
    model.train()
    batch = min(config.batch_size, len(x_train))
    order = np.random.default_rng([config.seed, epoch]).permutation(len(x_train))
    steps = len(x_train) // batch
    epoch_key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    graphdef, state = nnx.split((model, optimizer))
    losses, accuracies = [], []
    with tqdm(total=steps, **bar_args) as bar:
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            key = jax.random.fold_in(epoch_key, i)
            state, loss, accuracy = step(graphdef, state, x_train[index], y_train[index], key)
            losses.append(loss)
            accuracies.append(accuracy)
            bar.update()
            if not bar.disable and ((i + 1) % 20 == 0 or i + 1 == steps):
                mean_loss, mean_accuracy = np.mean(jax.device_get([losses, accuracies]), axis=1)
                bar.set_postfix(train_loss=f"{mean_loss:.4f}", train_acc=f"{mean_accuracy:.4f}")
    nnx.update((model, optimizer), state)
    return float(np.mean(jax.device_get(losses))), float(np.mean(jax.device_get(accuracies)))


def _resume(out_dir: Path, model, optimizer) -> tuple[int, list[dict]]:
    """Restore the last intact checkpoint of ``out_dir`` into ``model`` and ``optimizer``;
    returns its epoch (0 for none) and the metrics of the intact epochs up to it. Damaged
    checkpoints are skipped with a warning; training redoes the epochs after it."""
    done = list_checkpoints(out_dir)
    if not done:
        return 0, []
    try:
        last = readable_epoch(out_dir)
    except CheckpointError as err:
        warnings.warn(f"{err}; training starts again from epoch 1", stacklevel=3)
        return 0, []
    restore_checkpoint(out_dir, last, model, optimizer)
    if last < done[-1]:
        again = (
            f"epoch {done[-1]} is" if done[-1] == last + 1 else f"epochs {last + 1}-{done[-1]} are"
        )
        warnings.warn(
            f"resuming after epoch {last}, the last intact checkpoint; {again} trained again",
            stacklevel=3,
        )
    history = []
    for epoch in (e for e in done if e <= last):
        try:
            history.append(read_metrics(out_dir, epoch))
        except CheckpointError as err:
            warnings.warn(str(err), stacklevel=3)
    return last, history


def train(
    config: TrainConfig, out_dir, *, progress: bool = True, summary: bool = True
) -> list[dict[str, Any]]:
    """Train (or resume) the run in ``out_dir``; returns every epoch's metrics, in order.

    ``progress`` shows a bar per epoch (its loss and accuracy are the running means that
    the epoch's summary line reports); ``summary`` prints one line per epoch, and a line
    when the run resumes.

    Each epoch ends with a test evaluation and an atomic checkpoint (model, optimizer,
    metrics). If ``out_dir`` already holds this run, training continues after its last
    complete checkpoint; a finished run is returned as is, or extended if ``epochs`` grew.
    """
    _check_config(config)
    config = dataclasses.replace(config, **{k: _absolute(getattr(config, k)) for k in _DATA_FIELDS})
    out_dir = Path(out_dir)
    (x_train, y_train), (x_test, y_test), classes = _load_data(config)
    if (out_dir / "config.json").is_file():
        run = read_run_config(out_dir)
        _check_resumable(run, config, out_dir)
        run["config"] = dataclasses.asdict(config)
    else:
        run = _run_info(config, x_train, classes)
    model = model_from_run_config(run)  # a wrong model name fails before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", run)

    optimizer = make_optimizer(model, config, len(x_train) // min(config.batch_size, len(x_train)))
    last, history = _resume(out_dir, model, optimizer)
    if summary and 0 < last < config.epochs:
        print(f"resuming the run in {out_dir} after epoch {last} of {config.epochs}")
    elif summary and last >= config.epochs:
        print(f"the run in {out_dir} has finished its {config.epochs} epochs")
    step = make_functional_step(config, run["mean"], run["std"])
    for epoch in range(last + 1, config.epochs + 1):
        start = time.perf_counter()
        bar_args = dict(desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=True)
        loss, accuracy = _train_epoch(
            step, model, optimizer, config, epoch, x_train, y_train, bar_args
        )
        test_loss, test_accuracy = evaluate(model, x_test, y_test, run, config.eval_batch_size)
        metrics = {
            "epoch": epoch,
            "lr": config.learning_rate_at(epoch),
            "train_loss": loss,
            "train_accuracy": accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "seconds": time.perf_counter() - start,
        }
        save_checkpoint(out_dir, epoch, model, optimizer, metrics)
        history.append(metrics)
        if summary:
            tqdm.write(
                f"epoch {epoch}: train loss {loss:.4f}, train acc {accuracy:.4f} (means over "
                f"the epoch), test loss {test_loss:.4f}, test acc {test_accuracy:.4f}, "
                f"{metrics['seconds']:.1f} s"
            )
    return history
