"""What an analysis is run on (the analysis set) and how the SSC problems are solved."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ssc_jax.solver.admm import ADMM


@dataclass(frozen=True)
class SolverSettings:
    """Arguments of ``ssc_gram``. ``options`` holds further ``ADMM`` fields (``rel_tol``,
    ``max_iterations``, ...); ``memory_budget_bytes`` only chunks the work, so it is not part
    of the cache key."""

    tau: float = 10.0
    mu: float = 10.0
    normalize: bool = True
    options: dict = field(default_factory=dict)
    memory_budget_bytes: int | None = None

    def kwargs(self) -> dict:
        """Keyword arguments for ``ssc_gram``."""
        return {
            "tau": self.tau,
            "mu": self.mu,
            "normalize": self.normalize,
            "memory_budget_bytes": self.memory_budget_bytes,
            **self.options,
        }

    def key(self) -> dict:
        """Every setting that changes the solution, defaults resolved, for caching."""
        admm = dataclasses.asdict(ADMM(tau=self.tau, mu=self.mu, **self.options))
        return {"normalize": self.normalize, **admm}


@dataclass(frozen=True)
class AnalysisSet:
    """The N inputs a checkpoint is analysed on: a stratified sample of one dataset split.

    ``data`` is a dataset name ("digits", "cifar10", "cifar100") or a folder / zip path;
    ``None`` means the dataset the checkpoint was trained on. ``layers`` is the tap kind
    ("conv" for every convolution, "blocks" for block outputs).
    """

    data: str | None = None
    split: str = "test"
    n: int = 500
    seed: int = 0
    layers: str = "conv"
    batch_size: int = 256


DEFAULT_ANALYSIS = AnalysisSet()
DEFAULT_SOLVER = SolverSettings()
