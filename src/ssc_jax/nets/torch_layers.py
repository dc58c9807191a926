"""Which modules of a torch model are analysed: names, types, the ``"blocks"`` preset, or the
``"hidden_states"`` the model returns itself.

The default is every ``nn.Conv2d``; a model with fewer than two (a ViT has one, its patch
embedding; a text model none) gets its repeated blocks instead (transformer layers, ResNet
blocks: :func:`ssc_jax.nets.layer_choice.repeated_blocks`), said in the selection's one-line
description.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ssc_jax.nets.layer_choice import (
    BLOCKS,
    HIDDEN_STATES,
    blocks_description,
    entry,
    no_match_message,
    repeated_blocks,
)

Layers = str | type | Sequence[str | type] | None


class Selection(NamedTuple):
    """The chosen modules {module: name} (empty for ``hidden_states``), and one line saying
    what was selected and why (recorded in the result and the report)."""

    modules: dict
    hidden_states: bool
    description: str


def module_entries(model) -> list:
    """The model's modules that run, as framework-neutral entries: the model itself and
    containers without a forward of their own (``nn.ModuleList``, ``nn.ModuleDict``) are left
    out, since they give no output to capture."""
    from torch import nn

    return [
        entry(name, type(module).__name__)
        for name, module in model.named_modules()
        if name and type(module).forward is not nn.Module.forward
    ]


def _blocks(model, reason: str) -> Selection:
    entries = module_entries(model)
    paths = repeated_blocks(entries)
    if not paths:
        raise ValueError(f"{reason}, and the model has no repeated blocks; pass layers=")
    named = dict(model.named_modules())
    modules = {named[path]: path for path in paths}
    return Selection(modules, False, f"{reason}: {blocks_description(paths, entries)}")


def select_layers(model, layers: Layers) -> Selection:
    """The modules of ``model`` that ``layers`` selects: None (every ``nn.Conv2d``, else the
    repeated blocks), ``"blocks"``, ``"hidden_states"``, or module names (as in
    ``model.named_modules()``) and/or ``nn.Module`` types.

    Raises:
      ValueError: in one line, for a selection that matches nothing (naming the closest
        module paths) or entries that are neither names nor types.
    """
    from torch import nn

    if layers is None:
        convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
        if len(convs) >= 2:
            return _selected(model, [nn.Conv2d], f"the {len(convs)} Conv2d layers")
        return _blocks(model, f"the model has {len(convs)} Conv2d layer{'s' * (len(convs) != 1)}")
    if layers == BLOCKS:
        return _blocks(model, "layers='blocks'")
    if layers == HIDDEN_STATES:
        return Selection({}, True, "the hidden states the model returns")
    entries = [layers] if isinstance(layers, str | type) else list(layers)
    if not entries or not all(isinstance(item, str | type) for item in entries):
        raise ValueError(f"layers must list module names or nn.Module types; got {layers!r}")
    return _selected(model, entries, f"layers={layers!r}")


def _selected(model, entries: list, description: str) -> Selection:
    names = {item for item in entries if isinstance(item, str)}
    kinds = tuple(item for item in entries if isinstance(item, type))
    modules: dict = {}
    for name, module in model.named_modules():
        if name and module not in modules and (name in names or isinstance(module, kinds)):
            modules[module] = name
    paths = [name for name, _ in model.named_modules()]
    unknown = sorted(names - set(modules.values()))
    if unknown:
        raise ValueError(no_match_message(unknown[0], paths))
    if not modules:
        raise ValueError(no_match_message(entries[0].__name__, paths))
    return Selection(modules, False, description)
