"""Which layers to analyse, chosen on a framework-neutral list of a model's modules.

Each door (torch, Flax NNX and Linen) lists its model's modules as :class:`ModuleEntry`
(path, class name, parent path) in definition order; the choices here read only that list.
A network's repeated blocks (transformer layers, ResNet blocks) are the members of its longest
run of consecutive sibling modules of one class; they are what the ``"blocks"`` preset
selects, and what a door selects when its default layer type gives fewer than two layers.
"""

from __future__ import annotations

import difflib
import itertools
import warnings
from collections.abc import Sequence
from typing import NamedTuple

BLOCKS = "blocks"
HIDDEN_STATES = "hidden_states"
# Closest module paths a selection that matches nothing names.
CLOSEST = 5


class ModuleEntry(NamedTuple):
    """One module of a model: its dotted ``path`` (``"blocks.3.attn"``), its ``kind`` (class
    name) and the path of its ``parent`` (``""`` for the model's own children)."""

    path: str
    kind: str
    parent: str


def entry(path: str, kind: str) -> ModuleEntry:
    """The entry of the module at dotted ``path``, its parent read from the path."""
    return ModuleEntry(path=path, kind=kind, parent=path.rpartition(".")[0])


def _runs(entries: Sequence[ModuleEntry]) -> list[list[ModuleEntry]]:
    """Maximal runs of consecutive same-class siblings, each parent's children in order."""
    children: dict[str, list[ModuleEntry]] = {}
    for module in entries:
        children.setdefault(module.parent, []).append(module)
    runs = []
    for siblings in children.values():
        for _, run in itertools.groupby(siblings, key=lambda module: module.kind):
            runs.append(list(run))
    return runs


def repeated_blocks(entries: Sequence[ModuleEntry]) -> list[str]:
    """Paths of the members of the model's longest run of same-class sibling modules.

    A module alone repeats nothing, so runs of two or more come first; among them, runs of
    modules that hold modules of their own (a transformer layer, a residual block) come before
    runs of single operations (two ``Identity`` or ``Dropout`` in a row); then the longest
    run, then the shallowest, then the first. Empty for a model without modules.
    """
    parents = {module.parent for module in entries}
    runs = _runs(entries)
    if not runs:
        return []

    def rank(index_run):
        index, run = index_run
        composite = run[0].path in parents
        depth = run[0].path.count(".")
        return (len(run) < 2, not composite, -len(run), depth, index)

    _, best = min(enumerate(runs), key=rank)
    return [module.path for module in best]


def blocks_description(paths: Sequence[str], entries: Sequence[ModuleEntry]) -> str:
    """One line naming the selected blocks: "the 12 Block modules blocks.0 ... blocks.11"."""
    kinds = {module.path: module.kind for module in entries}
    named = sorted({kinds.get(path, "?") for path in paths})
    span = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1]}"
    return f"the {len(paths)} {'/'.join(named)} module{'s' * (len(paths) != 1)} {span}"


def warn_if_one_layer(names: Sequence[str], hint: str = "pass layers= to select more") -> None:
    """A one-line warning when only one layer is selected: nothing to compare across layers."""
    if len(names) == 1:
        warnings.warn(
            f"only one layer is selected ({names[0]}), so the analysis compares no layers; {hint}",
            stacklevel=3,
        )


def no_match_message(pattern, paths: Sequence[str]) -> str:
    """One line for a selection ``pattern`` that matches no module: the closest of the model's
    module ``paths`` and the count of the rest (not every module's name)."""
    paths = [path for path in paths if path]
    if not paths:
        return f"layers={pattern!r} matches no module: the model has no modules"
    closest = difflib.get_close_matches(str(pattern), paths, n=CLOSEST, cutoff=0.3)
    label = "the closest module paths"
    if not closest:
        closest, label = paths[:CLOSEST], "its first modules"
    rest = len(paths) - len(closest)
    more = f" (and {rest:,} more)" if rest else ""
    return f"layers={pattern!r} matches no module; {label}: {', '.join(closest)}{more}"
