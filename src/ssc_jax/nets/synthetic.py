"""A synthetic network with a known population: inputs from a fixed union of subspaces,
passed through a fixed random ReLU network. Independent samples of N inputs from it give the
across-sample distribution of any statistic by simulation, against which intervals are
calibrated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class SyntheticSample(NamedTuple):
    """N inputs of a ``SyntheticNetwork``: their (N,) classes and each layer's (N, width)
    activations."""

    labels: np.ndarray
    activations: list[np.ndarray]


class SyntheticNetwork:
    """Inputs: each of ``n_classes`` classes a random ``dim``-dimensional subspace of
    R^input_dim, a sample a Gaussian combination of its basis plus isotropic noise of
    standard deviation ``noise / sqrt(input_dim)``, classes equally likely. Layers: ``widths``
    ReLU layers ``h <- relu(W h)`` with Gaussian weights of variance 2 / fan-in. Everything
    fixed by ``seed``; ``sample`` draws new inputs."""

    def __init__(
        self,
        n_classes: int = 4,
        dim: int = 3,
        input_dim: int = 24,
        widths: Sequence[int] = (32, 32, 16),
        *,
        noise: float = 0.3,
        seed: int = 0,
    ):
        if dim > input_dim:
            raise ValueError(f"dim ({dim}) must not exceed input_dim ({input_dim})")
        rng = np.random.default_rng(seed)
        self.bases = [np.linalg.qr(rng.normal(size=(input_dim, dim)))[0] for _ in range(n_classes)]
        fan_in = [input_dim, *widths[:-1]]
        self.weights = [
            rng.normal(scale=np.sqrt(2.0 / f), size=(f, w))
            for f, w in zip(fan_in, widths, strict=True)
        ]
        self.noise = noise

    @property
    def n_classes(self) -> int:
        return len(self.bases)

    def sample(self, n: int, seed: int) -> SyntheticSample:
        """n independent inputs (classes drawn uniformly) and the network's activations."""
        rng = np.random.default_rng(seed)
        labels = rng.integers(self.n_classes, size=n)
        dim = self.bases[0].shape[1]
        input_dim = self.bases[0].shape[0]
        coords = rng.normal(size=(n, dim)) / np.sqrt(dim)
        x = np.einsum("nk,ndk->nd", coords, np.stack(self.bases)[labels])
        x += self.noise / np.sqrt(input_dim) * rng.normal(size=x.shape)
        activations = []
        for w in self.weights:
            x = np.maximum(x @ w, 0.0)
            activations.append(x)
        return SyntheticSample(labels, activations)
