"""Which submodules of a Flax model (NNX or Linen) the capture records, chosen from the
model's (path, module) list by ``layers``:

* ``"conv"`` (the default): every convolution (``nnx.Conv``, ``nn.Conv``); where the model has
  fewer than two, its repeated blocks instead, said in one line (a warning);
* ``"blocks"``: the repeated blocks, the members of the model's longest run of same-class
  sibling modules (transformer layers, residual blocks; :mod:`ssc_jax.nets.layer_choice`);
* module types, e.g. ``(nnx.Conv, nnx.Linear)``: every submodule of those types;
* module paths (``"blocks.3"``, ``"conv#2"`` for a module's second call) or shell-style
  patterns of them (``"blocks.*"``).

A choice that matches nothing is a one-line error naming the closest module paths.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from typing import NamedTuple

from ssc_jax.nets.generic import base_path
from ssc_jax.nets.layer_choice import (
    BLOCKS,
    blocks_description,
    entry,
    no_match_message,
    repeated_blocks,
)

CONV = "conv"
_PATTERN_CHARACTERS = frozenset("*?[")


class Selection(NamedTuple):
    """The layers chosen: every call of the modules at ``paths``, and the single calls named
    in ``names`` (``"path"`` its first call, ``"path#k"`` its k-th); ``description`` says in
    words what was chosen."""

    paths: frozenset[str]
    names: frozenset[str]
    description: str

    @property
    def hooked(self) -> frozenset[str]:
        """The module paths whose outputs are recorded."""
        return self.paths | {base_path(name) for name in self.names}

    def keeps(self, name: str) -> bool:
        """Whether the layer ``name`` (a module call) is chosen."""
        return name in self.names or base_path(name) in self.paths


def _type_names(types: Sequence[type]) -> str:
    return "/".join(kind.__name__ for kind in types)


def _blocks(modules: Sequence[tuple[str, object]]) -> tuple[list[str], str]:
    """The repeated blocks among the callable modules (containers such as ``nnx.List`` are
    not layers), and their one-line description; ([], "") when no two repeat."""
    entries = [entry(path, type(module).__name__) for path, module in modules if callable(module)]
    paths = repeated_blocks(entries)
    if len(paths) < 2:
        return [], ""
    return paths, blocks_description(paths, entries)


def _by_type(modules, types: tuple[type, ...], default: bool) -> Selection:
    chosen = [path for path, module in modules if isinstance(module, types)]
    kinds = _type_names(types)
    if default and len(chosen) < 2:
        blocks, described = _blocks(modules)
        if len(blocks) >= 2:
            warnings.warn(
                f"the model has {len(chosen)} {kinds} layer{'s' * (len(chosen) != 1)}, so its "
                f"repeated blocks are analysed: {described}; pass layers= to choose others",
                stacklevel=5,
            )
            return Selection(frozenset(blocks), frozenset(), f"repeated blocks: {described}")
    if not chosen:
        message = no_match_message(kinds, [path for path, _ in modules])
        raise ValueError(f"{message}; pass layers= with module types or paths")
    return Selection(frozenset(chosen), frozenset(), f"every {kinds} output")


def _by_name(modules, layers: Sequence[str]) -> Selection:
    paths = [path for path, _ in modules]
    matched: set[str] = set()
    names: set[str] = set()
    for item in layers:
        if _PATTERN_CHARACTERS & set(item):
            found = fnmatch.filter(paths, item)
            if not found:
                raise ValueError(no_match_message(item, paths))
            matched.update(found)
        elif base_path(item) in paths:
            names.add(item)
        else:
            raise ValueError(no_match_message(item, paths))
    shown = ", ".join(layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
    return Selection(frozenset(matched), frozenset(names), f"named: {shown}")


def select_layers(
    modules: Sequence[tuple[str, object]],
    layers: str | tuple[type, ...] | tuple[str, ...],
    conv_types: tuple[type, ...],
) -> Selection:
    """The layers ``layers`` chooses among ``modules`` ((path, module), the model's order);
    ``conv_types`` are the framework's convolutions, what ``"conv"`` chooses.

    Raises:
      ValueError: in one line naming the closest module paths, when nothing matches.
    """
    if layers == BLOCKS:
        paths, described = _blocks(modules)
        if not paths:
            raise ValueError(
                no_match_message(BLOCKS, [path for path, _ in modules])
                + " (no two same-class sibling modules in a row); pass module types or paths"
            )
        return Selection(frozenset(paths), frozenset(), f"repeated blocks: {described}")
    if layers == CONV:
        return _by_type(modules, conv_types, default=True)
    if all(isinstance(item, type) for item in layers):
        return _by_type(modules, tuple(layers), default=False)
    return _by_name(modules, list(layers))


def kept_layers(
    selection: Selection, calls: Sequence[tuple[str, tuple[int, ...]]]
) -> list[tuple[str, tuple[int, ...]]]:
    """The chosen ones of the traced ``calls`` (layer name, per-sample shape), forward order.

    Raises:
      ValueError: when a named call is not made in the forward pass.
    """
    made = {name for name, _ in calls}
    missing = sorted(selection.names - made)
    if missing:
        raise ValueError(no_match_message(missing[0], sorted(made)) + " in the forward pass")
    return [(name, shape) for name, shape in calls if selection.keeps(name)]
