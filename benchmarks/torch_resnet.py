"""The zoo's CIFAR ResNet-18 in PyTorch, for the training benchmark: the same blocks, widths
(``channels(base, width)``), padding, bias-free convolutions, BatchNorms and shortcuts as
``ssc_jax.nets.zoo.resnet``, and a train step with the trainer's recipe and augmentation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ssc_jax.nets.zoo.layers import channels


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
    """(B, 3, H, W) -> (B, num_classes), NCHW as PyTorch's default."""

    def __init__(self, width: float, num_classes: int = 10):
        super().__init__()
        in_planes = channels(64, width)
        self.conv1 = nn.Conv2d(3, in_planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        blocks = []
        for base, stride in zip((64, 128, 256, 512), (1, 2, 2, 2), strict=True):
            planes = channels(base, width)
            blocks += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.classifier(x.mean((2, 3)))


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per image, a random crop after ``padding`` zero pixels a side and a flip with
    probability 1/2: (B, C, H, W) -> same."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w))[:, None, None, :]
    crops = padded[
        torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def make_torch_step(
    width: float,
    mean,
    std,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    channels_last: bool = False,
):
    """A train step (images uint8 (B, H, W, 3) as a NumPy array, labels (B,)) -> loss tensor:
    uint8 -> float, crop + flip, normalisation, forward, backward, SGD with momentum and L2.
    ``channels_last`` keeps weights and activations NHWC in memory (oneDNN's fast layout)."""
    torch.manual_seed(0)
    model = ResNet18(width).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    generator = torch.Generator().manual_seed(0)

    def step(images: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = ((crop_flip(x, generator) / 255.0 - mean) / std).contiguous(memory_format=layout)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), torch.from_numpy(labels).long())
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step
