"""Command-line options made from the configuration dataclasses' fields.

Each option names a field of ``AnalysisSet``, ``SolverSettings``, ``ADMM``, ``WorkingSet``,
``SolverOptions`` or ``TrainConfig``;
its type, default, choices and help come from the field (``metadata["help"]``, or a short
text here where the field has none), so the command line and the library share one set of
defaults. A command may keep a default of its own (``default --n 500``, for the digits).
The parsed arguments build each dataclass once, from the options added for it
(``option_values``); the commands pass those objects down as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

from ssc_jax.nets.tokens import DEFAULT_TOKENS, TOKEN_POOLINGS
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.analysis.inputs import InputError
from ssc_jax.pipeline.analysis.measures import PAPER_MEASURES, select_measures
from ssc_jax.pipeline.analysis.uncertainty import Resampling
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.working_set import WorkingSet

_UNSET = object()


class Option(NamedTuple):
    """One option: the dataclass ``field`` it sets and its ``flag``; the parsed arguments hold
    its value, of the field's type, under ``dest``.

    Attributes:
      fallback_help: the help text where the field has no ``metadata["help"]``.
      default: the command's default where it differs from the field's.
      positive: a number must be > 0.
      unit: (name, scale) for a number given in other units than the field's bytes; the
        field gets ``int(value * scale)`` (its default, in bytes, is not shown).
      required: the option must be given.
    """

    field: str
    flag: str
    fallback_help: str = ""
    default: Any = _UNSET
    positive: bool = True
    unit: tuple[str, float] | None = None
    required: bool = False

    @property
    def dest(self) -> str:
        """argparse's own name for the flag: ``--max-iter`` is ``max_iter``."""
        return self.flag.removeprefix("--").replace("-", "_")


ANALYSIS_OPTIONS = (
    Option("data", "--data"),
    Option("split", "--split"),
    Option("n", "--n"),
    Option("seed", "--sample-seed", positive=False),
    Option("layers", "--layers"),
    Option("batch_size", "--analysis-batch-size"),
)
ADMM_OPTIONS = (
    Option("tau", "--tau"),
    Option("mu", "--mu"),
    Option("rel_tol", "--rel-tol"),
    Option("gap_tol", "--gap-tol"),
    Option("max_iterations", "--max-iter"),
)
WORKING_SET_OPTIONS = (
    Option("size", "--working-set-size"),
    Option("max_rounds", "--max-rounds"),
)
METHOD_OPTIONS = (Option("method", "--solver"),)
SOLVER_OPTIONS = (
    Option("normalize", "--no-normalize"),
    Option("memory_budget_bytes", "--memory-gb", unit=("GiB", 2**30)),
)
TRAIN_OPTIONS = (
    Option("model", "--model", "model name, e.g. small_cnn (a wrong name lists them all)"),
    Option("dataset", "--dataset", "digits, cifar10, cifar100, or a folder / zip of class folders"),
    Option(
        "test_dataset",
        "--test-data",
        "held-out images (name or folder / zip); required when --dataset is a path",
    ),
    Option("epochs", "--epochs", "training epochs"),
    Option("data_fraction", "--data-fraction", "train on a stratified fraction, e.g. 0.05"),
    Option("seed", "--seed", "seed of initialisation, data order and subset", positive=False),
    Option("width", "--width", "channel-width multiplier"),
    Option("batch_size", "--batch-size", "batch size"),
    Option("learning_rate", "--lr", "initial learning rate"),
    Option("lr_decay_epochs", "--lr-decay-epochs", "multiply the lr by 0.2 every this many epochs"),
    Option("augment", "--no-augment", "random crop and flip (e.g. for digits)"),
)
DEFAULT_TRAIN_OPTIONS = tuple(o._replace(default=5) for o in TRAIN_OPTIONS if o.field == "epochs")
"""The default command's one training option; the rest of its training is fixed."""


def changed(options: Sequence[Option], **changes: dict[str, Any]) -> list[Option]:
    """``options`` with some of them changed, by field name, e.g.
    ``changed(TRAIN_OPTIONS, epochs={"default": 5})``."""
    return [o._replace(**changes.get(o.field, {})) for o in options]


def _value_type(cls: type, name: str) -> type:
    """The field's type, with ``X | None`` read as X."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [t for t in typing.get_args(hint) if t is not type(None)]
    return hint


def _number(kind: type, positive: bool, scale: float | None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
        return value if scale is None else int(value * scale)

    return parse


def add_options(parser, cls: type, options: Sequence[Option]) -> None:
    """Add ``options``, each setting a field of the dataclass ``cls``, to ``parser`` (a parser
    or an argument group)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for option in options:
        field = fields[option.field]
        kind = _value_type(cls, field.name)
        default = field.default if option.default is _UNSET else option.default
        text = field.metadata.get("help") or option.fallback_help
        common = {"dest": option.dest, "default": default}
        if kind is bool:
            action = "store_false" if default else "store_true"
            text = f"turn off: {text}" if default else text
            parser.add_argument(option.flag, action=action, help=text, **common)
            continue
        scale = None
        if option.unit is not None:
            name, scale = option.unit
            text = text.replace("bytes", name)
            kind = float
        elif default is not None and not option.required:
            text += " (default: %(default)s)"
        parse = kind if kind is str else _number(kind, option.positive, scale)
        choices = field.metadata.get("choices")
        parser.add_argument(
            option.flag,
            type=parse,
            choices=choices,
            required=option.required,
            metavar=None if choices else option.flag.removeprefix("--").upper().replace("-", "_"),
            help=text,
            **common,
        )


def option_values(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The values ``args`` holds for ``options``, by field: keywords for their dataclass."""
    return {option.field: getattr(args, option.dest) for option in options}


def add_analysis_options(parser: argparse.ArgumentParser, *, n: int = AnalysisSet.n) -> None:
    """The options of the analysis inputs (``AnalysisSet``, N defaulting to ``n``) and of
    the SSC solver (``ADMM`` and ``SolverOptions``)."""
    inputs = parser.add_argument_group("analysis inputs")
    add_options(inputs, AnalysisSet, changed(ANALYSIS_OPTIONS, n={"default": n}))
    add_solver_options(parser)


def add_solver_options(parser: argparse.ArgumentParser) -> None:
    """The options of the SSC solver (``SolverSettings.method``, ``ADMM``, ``WorkingSet``
    and ``SolverOptions``), in a group; --tau and --gap-tol set both solvers'."""
    solver = parser.add_argument_group("SSC solver")
    add_options(solver, SolverSettings, METHOD_OPTIONS)
    add_options(solver, ADMM, ADMM_OPTIONS)
    add_options(solver, WorkingSet, WORKING_SET_OPTIONS)
    add_options(solver, SolverOptions, SOLVER_OPTIONS)


def solver_settings(args: argparse.Namespace) -> SolverSettings:
    """The ``SolverSettings`` the options of ``add_solver_options`` give."""
    admm = ADMM(**option_values(args, ADMM_OPTIONS))
    working_set = WorkingSet(**option_values(args, WORKING_SET_OPTIONS))
    return SolverSettings(
        admm=admm,
        working_set=_shared_settings(admm, working_set),
        **option_values(args, METHOD_OPTIONS),
        options=SolverOptions(**option_values(args, SOLVER_OPTIONS)),
    )


def _shared_settings(admm: ADMM, working_set: WorkingSet) -> WorkingSet:
    """``working_set`` with the settings both solvers have (``--tau``, ``--gap-tol``, whose
    options are ``ADMM``'s) as ``admm`` holds them: either method solves the same problem to
    the same gap."""
    return dataclasses.replace(working_set, tau=admm.tau, gap_tol=admm.gap_tol)


def analysis_settings(args: argparse.Namespace) -> tuple[AnalysisSet, SolverSettings]:
    """The ``AnalysisSet`` and ``SolverSettings`` the options of ``add_analysis_options`` give."""
    return AnalysisSet(**option_values(args, ANALYSIS_OPTIONS)), solver_settings(args)


def add_measures_option(parser: argparse.ArgumentParser) -> None:
    """``--measures``: the similarity measures between layers, by registered name."""
    parser.add_argument(
        "--measures",
        nargs="+",
        default=list(PAPER_MEASURES),
        metavar="NAME",
        help="similarity measures between layers, epochs and networks, apart or "
        "comma-separated (default: %(default)s; ssc_jax.register_measure adds one)",
    )


def add_interval_options(parser: argparse.ArgumentParser) -> None:
    """``--resamples`` and ``--level``: the intervals beside every number."""
    parser.add_argument(
        "--resamples",
        type=int,
        default=Resampling.resamples,
        metavar="R",
        help="halves of the inputs (both halves of R / 2 random splits, so R is even) on "
        "which every layer is solved again, for an interval beside every number "
        "(docs/statistics.md); 0: none (default: %(default)s)",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=Resampling.level,
        help="the intervals' level (default: %(default)s)",
    )


def resampling_settings(args: argparse.Namespace) -> Resampling:
    """The ``Resampling`` of ``--resamples`` and ``--level``.

    Raises:
      InputError: for a count of 1 or below 0, or a level outside (0, 1).
    """
    try:
        return Resampling(resamples=args.resamples, level=args.level)
    except ValueError as err:
        raise InputError(f"--resamples/--level: {err}") from None


def measure_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The measures ``--measures`` selects (names apart or comma-separated), checked against
    those registered.

    Raises:
      InputError: for a name no measure is registered under.
    """
    names = [name for given in args.measures for name in given.split(",") if name]
    try:
        return tuple(m.name for m in select_measures(names))
    except ValueError as err:
        raise InputError(f"--measures: {err}") from None


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """``--layers`` and ``--tokens``: which saved layers to analyse, and how token layers
    (n, T, D) become one vector per input."""
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="the layers to analyse: blocks (the repeated blocks: the longest run of "
        "same-shaped layers blocks.0, blocks.1, ...), hidden_states, or layer names and "
        "shell-style patterns such as 'blocks.*' (default: every saved layer)",
    )
    parser.add_argument(
        "--tokens",
        choices=TOKEN_POOLINGS,
        default=DEFAULT_TOKENS,
        help="how a token layer (n, T, D) becomes one vector per input: the mean of the real "
        "tokens (padding masked by a saved attention_mask), the first (class) token, the last "
        "real token, or every token side by side (default: %(default)s)",
    )


def layer_selection(args: argparse.Namespace) -> str | list[str] | None:
    """The selection ``--layers`` gives: a preset's name, a list of names, or None (all)."""
    if args.layers is None:
        return None
    return args.layers[0] if args.layers in (["blocks"], ["hidden_states"]) else args.layers
