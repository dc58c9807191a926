"""A small ViT trained on CIFAR-10, analysed over its blocks and compared with a ResNet-18.

Two steps, each resumable and each writing only complete files; the analyses are then the
file door's commands on what they saved:

- ``train``: the Flax NNX ViT of ``flax_vit.py`` (4x4 patches, width 64, 4 blocks) on the
  50,000 training images, AdamW with a warm-up and cosine decay, random crop and flip;
  one checkpoint per epoch in ``--run`` (a rerun continues from the last one).
- ``save``: N stratified test images (``ssc_jax.analysis_indices``, seed 0) through the
  trained ViT (its blocks, tokens pooled by their mean) and through a ResNet-18 trained by
  ``python -m ssc_jax.run train`` (its residual blocks), each saved as an ``.npz`` with the
  labels, the logits and the images: the same inputs on both sides.

::

    python examples/vit_vs_resnet.py train --data ../shared/data --run runs/vit-cifar10
    python examples/vit_vs_resnet.py save --data ../shared/data --run runs/vit-cifar10 \
        --resnet runs/resnet18w025-cifar10 --n 2000 --out repro/acts
    python -m ssc_jax.run activations repro/acts/vit.npz --out repro/vit-analyze
    python -m ssc_jax.run compare repro/acts/vit.npz repro/acts/resnet18.npz \
        --names vit resnet18 --out repro/vit-vs-resnet
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax_vit import ViT

import ssc_jax
from ssc_jax.training.augment import random_crop_flip

CIFAR_MEAN, CIFAR_STD = np.array([0.491, 0.482, 0.447]), np.array([0.247, 0.243, 0.262])
BATCH = 128


def _checkpoint_path(run: Path, epoch: int) -> Path:
    return run / f"epoch{epoch}.npz"


def _save(path: Path, *trees) -> None:
    """The leaves of ``trees`` in order, staged and renamed so that a file is never partial."""
    leaves = [np.asarray(leaf) for tree in trees for leaf in jax.tree.leaves(tree)]
    staged = path.with_suffix(".partial.npz")
    np.savez(staged, *leaves)
    os.replace(staged, path)


def _restore(path: Path, *trees) -> list:
    """``trees`` with their leaves replaced, in order, by those saved in ``path``."""
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    restored = []
    for tree in trees:
        flat, treedef = jax.tree.flatten(tree)
        restored.append(jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves[: len(flat)]]))
        leaves = leaves[len(flat) :]
    return restored


def _last_epoch(run: Path) -> int:
    done = [int(p.stem[5:]) for p in run.glob("epoch*.npz") if p.stem[5:].isdigit()]
    return max(done, default=0)


def load_vit(run: Path) -> ViT:
    """The ViT of the last checkpoint in ``run``."""
    epoch = _last_epoch(run)
    if not epoch:
        raise ValueError(f"no checkpoint in {run}: run the train step first")
    model = ViT(nnx.Rngs(0))
    (state,) = _restore(_checkpoint_path(run, epoch), nnx.state(model, nnx.Param))
    nnx.update(model, state)
    return model


def accuracy(model: ViT, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on normalised ``images``, in batches of 500."""
    forward = nnx.jit(lambda m, x: m(x).argmax(-1))
    hits = sum(
        int((np.asarray(forward(model, images[i : i + 500])) == labels[i : i + 500]).sum())
        for i in range(0, len(images), 500)
    )
    return hits / len(images)


def train(args: argparse.Namespace) -> None:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    images, labels, _ = ssc_jax.load_dataset(str(data / "cifar10-train.zip"))
    images = np.asarray(ssc_jax.normalize_images(images, CIFAR_MEAN, CIFAR_STD))
    labels = np.asarray(labels)
    test, test_labels, _ = ssc_jax.load_dataset(str(data / "cifar10-test.zip"))
    test = np.asarray(ssc_jax.normalize_images(test, CIFAR_MEAN, CIFAR_STD))
    test_labels = np.asarray(test_labels)

    steps_per_epoch = len(images) // BATCH
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, steps_per_epoch // 2, steps_per_epoch * args.epochs
    )
    model = ViT(nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=0.05), wrt=nnx.Param)
    start = _last_epoch(run)
    if start:
        params, opt_state = _restore(
            _checkpoint_path(run, start), nnx.state(model, nnx.Param), nnx.state(optimizer)
        )
        nnx.update(model, params)
        nnx.update(optimizer, opt_state)
        print(f"resumed from epoch {start}", flush=True)

    @nnx.jit
    def step(model, optimizer, key, x, y):
        x = random_crop_flip(key, x)

        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    key = jax.random.key(args.seed)
    log = run / "log.jsonl"
    for epoch in range(start + 1, args.epochs + 1):
        began = time.perf_counter()
        order = np.random.default_rng([args.seed, epoch]).permutation(len(images))
        losses = []
        for i in range(steps_per_epoch):
            batch = order[i * BATCH : (i + 1) * BATCH]
            step_key = jax.random.fold_in(key, (epoch - 1) * steps_per_epoch + i)
            losses.append(float(step(model, optimizer, step_key, images[batch], labels[batch])))
            if (i + 1) % 50 == 0:
                recent = np.mean(losses[-50:])
                print(
                    f"epoch {epoch} step {i + 1}/{steps_per_epoch}: loss {recent:.3f}", flush=True
                )
        test_accuracy = accuracy(model, test, test_labels)
        seconds = time.perf_counter() - began
        _save(_checkpoint_path(run, epoch), nnx.state(model, nnx.Param), nnx.state(optimizer))
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "test_accuracy": test_accuracy,
            "seconds": round(seconds),
        }
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(record, flush=True)


def _save_layers(path: Path, layers: dict[str, np.ndarray], **extra: np.ndarray) -> None:
    staged = path.with_suffix(".partial.npz")
    np.savez(staged, **layers, **extra)
    os.replace(staged, path)
    shapes = ", ".join(f"{name} {value.shape[1:]}" for name, value in layers.items())
    print(f"{path}: {shapes}", flush=True)


def save(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test, labels, _ = ssc_jax.load_dataset(str(Path(args.data) / "cifar10-test.zip"))
    labels = np.asarray(labels)
    chosen = ssc_jax.analysis_indices(labels, args.n, seed=0)
    shown, labels = np.asarray(test)[chosen], labels[chosen]

    began = time.perf_counter()
    vit = load_vit(Path(args.run))
    x = np.asarray(ssc_jax.normalize_images(shown, CIFAR_MEAN, CIFAR_STD))
    layers = ssc_jax.capture_activations(vit, x, layers="blocks", tokens="mean")
    logits = np.concatenate([np.asarray(vit(x[i : i + 500])) for i in range(0, len(x), 500)])
    print(f"ViT accuracy on the {len(x)} inputs: {(logits.argmax(1) == labels).mean():.4f}")
    _save_layers(out / "vit.npz", layers, labels=labels, logits=logits, images=shown)

    resnet, info = ssc_jax.load_checkpoint(args.resnet)
    x = np.asarray(ssc_jax.normalize_images(shown, info["mean"], info["std"]))
    layers = ssc_jax.capture_activations(resnet, x, layers="blocks")
    # log-probabilities: logits up to a constant per input, which softmax ignores
    logits = np.log(np.maximum(ssc_jax.predict(resnet, x), np.finfo(np.float32).tiny))
    print(f"ResNet-18 accuracy on the {len(x)} inputs: {(logits.argmax(1) == labels).mean():.4f}")
    _save_layers(out / "resnet18.npz", layers, labels=labels, logits=logits, images=shown)
    print(f"saved in {time.perf_counter() - began:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("train", "save"):
        sub = steps.add_parser(name)
        sub.add_argument("--data", default="../shared/data", help="folder of the CIFAR-10 zips")
        sub.add_argument("--run", default="runs/vit-cifar10", help="the ViT's checkpoints")
    steps.choices["train"].add_argument("--epochs", type=int, default=4)
    steps.choices["train"].add_argument("--lr", type=float, default=2e-3)
    steps.choices["train"].add_argument("--seed", type=int, default=0)
    steps.choices["save"].add_argument("--resnet", required=True, help="a ResNet-18 run folder")
    steps.choices["save"].add_argument("--n", type=int, default=2000, help="analysis inputs N")
    steps.choices["save"].add_argument("--out", default="repro/acts", help="output folder")
    args = parser.parse_args()
    {"train": train, "save": save}[args.step](args)


if __name__ == "__main__":
    main()
