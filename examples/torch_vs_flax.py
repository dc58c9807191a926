"""A PyTorch network against a Flax network, trained the same way on the same images.

Both are ``small_cnn`` (3x3 conv-BN-ReLU stages of 32, 32 | 64, 64 | 128 channels, 2x2 max
pooling after each stage, global average pooling, one linear layer), trained with the same
recipe (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, random crop and flip, the
lr x0.2 every ``--decay`` epochs) on the same stratified fraction of the CIFAR-10 training
images. The PyTorch network's conv outputs on the analysis inputs are saved as an ``.npz``;
then ssc-jax's own commands analyse each network and compare the two::

    python examples/torch_vs_flax.py --train ../shared/data/cifar10-train.zip \\
        --test ../shared/data/cifar10-test.zip --fraction 0.2 --epochs 4 --n 1000

writes, under ``--out`` (default ``ssc_out/torch_vs_flax``): ``flax_run/`` (the Flax
training run), ``torch_activations.npz``, and the reports ``flax/``, ``torch/`` and
``compare/`` (with the cross-network SSC-CKA of every torch layer against every Flax layer).
Needs ``pip install '.[torch]'``. A rerun reuses the finished Flax run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssc_jax import TrainConfig, load_dataset, stratified_subset, train
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import load_inputs, run_info
from ssc_jax.pipeline.cli.main import main as ssc_jax_main

STAGES = ((32, 32), (64, 64), (128,))


def small_cnn(num_classes: int) -> nn.Module:
    """ssc-jax's ``small_cnn`` in PyTorch: the same layers in the same order."""
    layers, c_in = [], 3
    for stage in STAGES:
        for c_out in stage:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU())
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (n, H, W, C) -> normalised float32 (n, C, H, W), as ssc-jax normalises."""
    x = (images.astype(np.float32) / 255.0 - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips of a batch (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).tolist()
    crops = torch.stack(
        [padded[i, :, y : y + h, x_ : x_ + w] for i, (y, x_) in enumerate(zip(dy, dx, strict=True))]
    )
    flip = torch.rand(b, generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


def train_torch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> float:
    """The ssc-jax recipe in PyTorch; returns the seconds it took."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    # L2 weight decay on every parameter, as ssc-jax's optax chain applies it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.decay, gamma=0.2)
    start = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=generator)
        total, correct = 0.0, 0
        for i in range(0, len(x) - args.batch + 1, args.batch):
            index = order[i : i + args.batch]
            inputs = crop_flip(x[index], generator)
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(1) == y[index]).sum())
        schedule.step()
        seen = (len(x) // args.batch) * args.batch
        print(f"torch epoch {epoch + 1}: loss {total / seen:.3f}, train acc {correct / seen:.3f}")
    return time.perf_counter() - start


def conv_activations(
    model: nn.Module, x: torch.Tensor, batch: int = 250
) -> tuple[dict, np.ndarray]:
    """Every Conv2d output (n, C, H, W) in forward order, named as in ``named_modules``,
    and the logits (n, K)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    outputs = {name: [] for name, _ in convs}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: outputs[name].append(out.numpy()))
        for name, m in convs
    ]
    model.eval()
    try:
        with torch.no_grad():
            logits = np.concatenate(
                [model(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
            )
    finally:
        for hook in hooks:
            hook.remove()
    return {f"conv{k}": np.concatenate(outputs[name]) for k, (name, _) in enumerate(convs)}, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training images (zip or folder)")
    parser.add_argument("--test", required=True, help="test images (zip or folder)")
    parser.add_argument("--fraction", type=float, default=0.2, help="stratified training fraction")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--decay", type=int, default=2, help="epochs between lr x0.2")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--n", type=int, default=1000, help="analysis inputs N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ssc_out/torch_vs_flax")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    run = out / "flax_run"

    config = TrainConfig(
        model="small_cnn",
        dataset=args.train,
        test_dataset=args.test,
        epochs=args.epochs,
        data_fraction=args.fraction,
        lr_decay_epochs=args.decay,
        batch_size=args.batch,
        seed=args.seed,
    )
    start = time.perf_counter()
    train(config, run, progress=False)
    flax_seconds = time.perf_counter() - start

    images, labels, classes = load_dataset(args.train)
    subset = stratified_subset(labels, args.fraction, seed=args.seed)
    mean, std = run_info(run)["mean"], run_info(run)["std"]
    model = small_cnn(len(classes))
    x = to_tensor(images[subset], mean, std)
    torch_seconds = train_torch(model, x, torch.from_numpy(labels[subset].astype(np.int64)), args)

    inputs = load_inputs(AnalysisSet(n=args.n), args.test)
    layers, logits = conv_activations(model, to_tensor(inputs.images, mean, std))
    saved = out / "torch_activations.npz"
    np.savez(saved, **layers, labels=inputs.labels, logits=logits, images=inputs.images)
    accuracy = float(np.mean(logits.argmax(1) == inputs.labels))
    print(f"torch network: accuracy {accuracy:.3f} on the {args.n} analysis inputs")

    times = {"flax training": flax_seconds, "torch training": torch_seconds}
    common = ["--n", str(args.n), "--quiet"]
    for name, argv in (
        ("flax analyze", ["analyze", str(run), "--out", str(out / "flax"), *common]),
        ("torch activations", ["activations", str(saved), "--out", str(out / "torch"), "--quiet"]),
        (
            "compare",
            [
                "compare",
                str(run),
                str(saved),
                "--names",
                "flax",
                "torch",
                "--out",
                str(out / "compare"),
                *common,
            ],
        ),
    ):
        start = time.perf_counter()
        if ssc_jax_main(argv) != 0:
            raise SystemExit(f"{name} failed")
        times[name] = time.perf_counter() - start
    for name, seconds in times.items():
        print(f"{name:>18}: {seconds:7.1f} s")


if __name__ == "__main__":
    main()
