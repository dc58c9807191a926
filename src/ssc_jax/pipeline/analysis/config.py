"""What an analysis is run on (the analysis set) and how the SSC problems are solved.

The defaults live in the dataclasses: ``AnalysisSet`` here, ``ADMM``, ``WorkingSet`` and
``SolverOptions`` in the solver. The command line reads its options, defaults and help from
their fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import DEFAULT_SOLVER, SolverOptions
from ssc_jax.solver.working_set import WorkingSet

SOLVERS = {"working-set": WorkingSet, "admm": ADMM}
DEFAULT_METHOD = next(name for name, kind in SOLVERS.items() if isinstance(DEFAULT_SOLVER, kind))
N_WRONG = 3
"""The confidently wrong inputs each analysis shows (Fig 9)."""


@dataclass(frozen=True)
class SolverSettings:
    """How ``ssc_gram`` solves the layers' problems: the solver (what is solved, how far)
    and the options (how the problem is prepared and the work is spread).

    ``method`` picks the solver: ``"working-set"`` (``WorkingSet``, the library's
    ``DEFAULT_SOLVER``) or ``"admm"`` (``ADMM``). Each keeps its own fields; the command
    line's --tau and --gap-tol set those of both.

    ``memory_budget_bytes`` and the other options apart from ``normalize`` do not change the
    solution, so they are not part of the cache key.
    """

    admm: ADMM = field(default_factory=ADMM)
    working_set: WorkingSet = field(default_factory=WorkingSet)
    method: str = field(
        default=DEFAULT_METHOD, metadata={"help": "SSC solver", "choices": tuple(SOLVERS)}
    )
    options: SolverOptions = field(default_factory=SolverOptions)

    def __post_init__(self):
        if self.method not in SOLVERS:
            raise ValueError(f"method must be one of {tuple(SOLVERS)}; got {self.method!r}")

    @property
    def solver(self) -> ADMM | WorkingSet:
        """The solver ``method`` names."""
        return self.admm if self.method == "admm" else self.working_set

    @property
    def memory_budget_bytes(self) -> int | None:
        return self.options.memory_budget_bytes

    def key(self) -> dict[str, Any]:
        """Every setting that changes the solution, for caching."""
        return {
            "normalize": self.options.normalize,
            "method": self.method,
            **dataclasses.asdict(self.solver),
        }


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
    n: int = field(default=1000, metadata={"help": "analysis inputs N"})
    seed: int = field(default=0, metadata={"help": "seed of the stratified N-input sample"})
    layers: str = field(
        default="conv",
        metadata={
            "help": "every convolution output, or block outputs",
            "choices": ("conv", "blocks"),
        },
    )
    batch_size: int = field(default=256, metadata={"help": "forward-pass batch size"})


def settings_record(
    analysis: AnalysisSet | Mapping | None, solver: SolverSettings
) -> dict[str, Mapping]:
    """The settings of an analysis as ``metrics.json`` records them; ``analysis`` is None for
    activations given as they are (no inputs were chosen), or the settings that applied to
    them (N, the layer selection, the token pooling) as a mapping."""
    if analysis is None or isinstance(analysis, Mapping):
        chosen = dict(analysis or {})
    else:
        chosen = dataclasses.asdict(analysis)
    return {
        "analysis": chosen,
        "solver": solver.key(),
        "memory_budget_bytes": solver.memory_budget_bytes,
    }


DEFAULT_ANALYSIS = AnalysisSet()
DEFAULT_SETTINGS = SolverSettings()
# The commands' defaults: --gap-tol is shared by both solvers and defaults to ADMM's 2e-3,
# coarser than the Python API's 1e-6 (a whole network at N = 10,000 in minutes); every
# report states the gap each layer certified.
COMMAND_SETTINGS = SolverSettings(working_set=WorkingSet(gap_tol=ADMM().gap_tol))
