"""What an analysis is run on (the analysis set) and how the SSC problems are solved.

The defaults live in the dataclasses: ``AnalysisSet`` here, ``ADMM`` and ``SolverOptions`` in
the solver. The command line reads its options, defaults and help from their fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import SolverOptions, resolve


@dataclass(frozen=True)
class SolverSettings:
    """How ``ssc_gram`` solves the layers' problems: the ADMM (what is solved, how far) and
    the options (how the problem is prepared and the work is spread).

    ``memory_budget_bytes`` and the other options apart from ``normalize`` do not change the
    solution, so they are not part of the cache key.
    """

    admm: ADMM = field(default_factory=ADMM)
    options: SolverOptions = field(default_factory=SolverOptions)

    @classmethod
    def of(cls, **settings: Any) -> SolverSettings:
        """Settings from flat keywords, each a field of ``ADMM`` or of ``SolverOptions``.

        Raises:
          ValueError: for a name that is neither.
        """
        admm, options = resolve(None, None, settings)
        return cls(admm=admm, options=options)

    @property
    def memory_budget_bytes(self) -> int | None:
        return self.options.memory_budget_bytes

    def kwargs(self) -> dict[str, Any]:
        """Flat keyword arguments for ``ssc_gram``, all but ``progress``; ``gather`` is
        ``"all"``: every process of a ``jax.distributed`` job goes on to the analysis."""
        options = {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(self.options)
            if f.name != "progress"
        }
        options["gather"] = "all"
        return {**dataclasses.asdict(self.admm), **options}

    def key(self) -> dict[str, Any]:
        """Every setting that changes the solution, for caching."""
        return {"normalize": self.options.normalize, **dataclasses.asdict(self.admm)}


@dataclass(frozen=True)
class AnalysisSet:
    """The N inputs a checkpoint is analysed on: a stratified sample of one dataset split.

    ``data`` is a dataset name ("digits", "cifar10", "cifar100") or a folder / zip path;
    ``None`` means the dataset the checkpoint was trained on. ``layers`` is the tap kind
    ("conv" for every convolution, "blocks" for block outputs).
    """

    data: str | None = field(
        default=None,
        metadata={
            "help": "dataset name (digits, cifar10, cifar100) or image folder / zip to analyse "
            "on; default: the test set the run was evaluated on"
        },
    )
    split: str = field(default="test", metadata={"help": "dataset split"})
    n: int = field(default=500, metadata={"help": "analysis inputs N"})
    seed: int = field(default=0, metadata={"help": "seed of the stratified N-input sample"})
    layers: str = field(
        default="conv",
        metadata={
            "help": "every convolution output, or block outputs",
            "choices": ("conv", "blocks"),
        },
    )
    batch_size: int = field(default=256, metadata={"help": "forward-pass batch size"})


def settings_record(analysis: AnalysisSet | None, solver: SolverSettings) -> dict[str, Mapping]:
    """The settings of an analysis as ``metrics.json`` records them; ``analysis`` is None for
    activations given as they are (no inputs were chosen)."""
    return {
        "analysis": {} if analysis is None else dataclasses.asdict(analysis),
        "solver": solver.key(),
        "memory_budget_bytes": solver.memory_budget_bytes,
    }


DEFAULT_ANALYSIS = AnalysisSet()
DEFAULT_SOLVER = SolverSettings()
