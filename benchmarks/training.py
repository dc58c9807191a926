"""Training throughput of the jitted train step (images/s), the time of one epoch, and the
step against PyTorch's on the same network.

CPU table (small CNN at a few widths, synthetic 32x32x3 batches):

    python benchmarks/training.py

ResNet-18 (width 0.25) against the same network in PyTorch (benchmarks/torch_resnet.py), in
alternating rounds, with the trainer's step before issue 19 (``nnx.jit``) and without the
CPU compiler options, so that each lever shows (needs ``pip install '.[torch]'``):

    python benchmarks/training.py --torch --model resnet18 --width 0.25 --rounds 5

One epoch of ResNet-18 on CIFAR-10 (50,000 images, batch 128, augmentation on), for a GPU;
the data come from tfds or from an image zip such as ../shared/data/cifar10-train.zip:

    python benchmarks/training.py --model resnet18 --epoch --data ../shared/data/cifar10-train.zip
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ssc_jax import TrainConfig, create_model, load_dataset
from ssc_jax.training.augment import channel_stats, normalize_images, random_crop_flip
from ssc_jax.training.trainer import make_functional_step, make_optimizer
from timing import alternate, ratio_range, time_calls


def nnx_jit_step(config: TrainConfig, mean, std):
    """The trainer's step before issue 19: ``nnx.jit`` over (model, optimizer), updated in
    place, XLA's default options. The same computation as :func:`make_functional_step`."""

    @nnx.jit
    def train_step(model, optimizer, images, labels, key):
        x = normalize_images(random_crop_flip(key, jnp.asarray(images, jnp.float32)), mean, std)

        def loss_fn(model):
            logits = model(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    return train_step


def batch_indices(n: int, batch: int, steps: int) -> list[np.ndarray]:
    """The rows of ``steps`` batches drawn from a fixed shuffle of ``n`` images."""
    order = np.random.default_rng(0).permutation(n)
    return [order[(i * batch) % (n - batch + 1) :][:batch] for i in range(steps)]


def flax_runner(config, images, labels, steps, *, kind: str) -> Callable[..., float]:
    """A function running the first ``count`` (default ``steps``) of ``steps`` train steps
    (host gather included, as in the training loop) and blocking once at the end; ``kind``
    is "nnx.jit", "jax.jit" (XLA's default options) or "jax.jit + CPU options" (the
    trainer's step)."""
    model = create_model(config.model, width=config.width, in_channels=images.shape[-1])
    optimizer = make_optimizer(model, config, steps_per_epoch=steps)
    mean, std = channel_stats(images[:1000])
    batches = batch_indices(len(images), config.batch_size, steps)
    keys = [jax.random.key(i) for i in range(steps)]
    if kind == "nnx.jit":
        step = nnx_jit_step(config, mean, std)

        def run(count: int = steps):
            for index, key in zip(batches[:count], keys[:count], strict=True):
                loss, _ = step(model, optimizer, images[index], labels[index], key)
            return float(loss)

        return run
    options = {} if kind == "jax.jit" else None
    step = make_functional_step(config, mean, std, compiler_options=options)
    graphdef, state = nnx.split((model, optimizer))
    held = [state]

    def run(count: int = steps):
        state = held[0]
        for index, key in zip(batches[:count], keys[:count], strict=True):
            state, loss, _ = step(graphdef, state, images[index], labels[index], key)
        held[0] = state
        return float(loss)

    return run


def time_steps(config: TrainConfig, images: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """Seconds per step of the trainer's step over ``steps`` batches, after a compiling one."""
    run = flax_runner(config, images, labels, steps, kind="jax.jit + CPU options")
    run(1)  # compiles
    return time_calls(run, warmup=0).best / steps


def synthetic(n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.int32)


def throughput_table(models: list[str], widths: list[float], batch: int, steps: int) -> None:
    images, labels = synthetic()
    print(f"device: {jax.devices()[0].device_kind}, batch {batch}, {steps} timed steps")
    print("| model | width | ms / step | images / s |")
    print("| --- | --- | --- | --- |")
    for name in models:
        for width in widths:
            config = TrainConfig(model=name, width=width, batch_size=batch)
            seconds = time_steps(config, images, labels, steps)
            print(f"| {name} | {width} | {1000 * seconds:.1f} | {batch / seconds:.0f} |")


def against_torch(width: float, batch: int, steps: int, rounds: int, threads: int) -> None:
    """ResNet-18 train steps in Flax (three ways) and PyTorch (NCHW, its default, and
    channels_last), in alternating rounds."""
    import torch

    from torch_resnet import make_torch_step

    torch.set_num_threads(threads)
    images, labels = synthetic()
    config = TrainConfig(model="resnet18", width=width, batch_size=batch)
    kinds = ("nnx.jit", "jax.jit", "jax.jit + CPU options")
    calls = {kind: flax_runner(config, images, labels, steps, kind=kind) for kind in kinds}
    batches = batch_indices(len(images), batch, steps)
    for layout in ("NCHW", "channels_last"):
        torch_step = make_torch_step(
            width,
            *channel_stats(images[:1000]),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            channels_last=layout == "channels_last",
        )

        def torch_run(torch_step=torch_step):
            for rows in batches:
                loss = torch_step(images[rows], labels[rows])
            return float(loss)

        calls[f"torch {layout}"] = torch_run
    cpu: dict[str, list[float]] = {name: [] for name in calls}

    def with_cpu_time(name, fn):
        def timed():
            start = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - start)
            return out

        return timed

    timed = {name: with_cpu_time(name, fn) for name, fn in calls.items()}
    result = alternate(timed, rounds=rounds)
    print(
        f"ResNet-18 width {width}, batch {batch}, {steps} steps per call, {rounds} rounds; "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
        f"with {threads} threads"
    )
    print(
        "| step | images/s (best round) | images/s (median) | CPU s / step (median) "
        "| time / torch NCHW's (median, per round) | time / torch channels_last's |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in calls:
        cpu_step = statistics.median(cpu[name][1:]) / steps  # [0] is the warm-up call
        columns = []
        for torch_name in ("torch NCHW", "torch channels_last"):
            ratios = result.ratios(name, torch_name)
            columns.append(f"{statistics.median(ratios):.2f}x ({ratio_range(ratios, '.2f')})")
        print(
            f"| {name} | {batch * steps / result.best(name):.0f} | "
            f"{batch * steps / result.median(name):.0f} | {cpu_step:.3f} | "
            f"{columns[0]} | {columns[1]} |"
        )


def epoch_time(name: str, width: float, data: str, batch: int) -> None:
    images, labels, _ = load_dataset(data, "train")
    config = TrainConfig(model=name, width=width, batch_size=batch)
    steps = len(images) // batch
    seconds = time_steps(config, images, labels, steps)
    print(f"device: {jax.devices()[0].device_kind}; {name} (width {width}), {len(images)} images")
    rate = batch / seconds
    print(f"one epoch ({steps} steps of {batch}): {steps * seconds:.1f} s, {rate:.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", nargs="+", default=["small_cnn"])
    parser.add_argument("--width", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per table row")
    parser.add_argument("--epoch", action="store_true", help="time one epoch on --data")
    parser.add_argument("--data", default="cifar10", help="dataset name or path for --epoch")
    parser.add_argument("--torch", action="store_true", help="ResNet-18 against PyTorch")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds for --torch")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads for --torch")
    args = parser.parse_args()
    if args.torch:
        against_torch(args.width[-1], args.batch, args.steps, args.rounds, args.threads)
    elif args.epoch:
        for name in args.model:
            epoch_time(name, args.width[-1], args.data, args.batch)
    else:
        throughput_table(args.model, args.width, args.batch, args.steps)


if __name__ == "__main__":
    main()
