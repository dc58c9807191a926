"""Training throughput of the jitted train step (images/s), and the time of one epoch.

CPU table (small CNN at a few widths, synthetic 32x32x3 batches):

    python benchmarks/training.py

One epoch of ResNet-18 on CIFAR-10 (50,000 images, batch 128, augmentation on), for a GPU;
the data come from tfds or from an image zip such as ../shared/data/cifar10-train.zip:

    python benchmarks/training.py --model resnet18 --epoch --data ../shared/data/cifar10-train.zip
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from ssc_jax import TrainConfig, create_model, load_dataset
from ssc_jax.training.augment import channel_stats
from ssc_jax.training.trainer import make_optimizer, make_train_step
from timing import run_blocking, time_calls


def time_steps(config: TrainConfig, images: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """Seconds per train step over ``steps`` batches, after a compiling warm-up step."""
    model = create_model(config.model, width=config.width, in_channels=images.shape[-1])
    optimizer = make_optimizer(model, config, steps_per_epoch=steps)
    step = make_train_step(config, *channel_stats(images[:1000]))
    batch = config.batch_size
    order = np.random.default_rng(0).permutation(len(images))
    run_blocking(step, model, optimizer, images[:batch], labels[:batch], jax.random.key(0))

    def run_steps():
        # One block at the end, as in a training loop, so that dispatch runs ahead.
        for i in range(steps):
            index = order[(i * batch) % (len(images) - batch + 1) :][:batch]
            out = step(model, optimizer, images[index], labels[index], jax.random.key(i))
        return out

    return time_calls(run_steps, warmup=0).best / steps


def throughput_table(models: list[str], widths: list[float], batch: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 4096).astype(np.int32)
    print(f"device: {jax.devices()[0].device_kind}, batch {batch}, {steps} timed steps")
    print("| model | width | ms / step | images / s |")
    print("| --- | --- | --- | --- |")
    for name in models:
        for width in widths:
            config = TrainConfig(model=name, width=width, batch_size=batch)
            seconds = time_steps(config, images, labels, steps)
            print(f"| {name} | {width} | {1000 * seconds:.1f} | {batch / seconds:.0f} |")


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
    args = parser.parse_args()
    if args.epoch:
        for name in args.model:
            epoch_time(name, args.width[-1], args.data, args.batch)
    else:
        throughput_table(args.model, args.width, args.batch, args.steps)


if __name__ == "__main__":
    main()
