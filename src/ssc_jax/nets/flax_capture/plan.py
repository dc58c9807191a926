"""The capture's plan for one model: the layers ``layers`` selects, in forward order with their
per-sample shapes, and the jitted forward functions that give them.

``model`` is a ``flax.nnx.Module`` (the zoo's models name their layers with taps,
:mod:`ssc_jax.nets.taps`; others are hooked, :mod:`ssc_jax.nets.generic`) or a
:class:`~ssc_jax.nets.linen_capture.LinenModel`. ``layers`` is ``"conv"``, ``"blocks"``,
``"hidden_states"``, module types, or module paths and patterns (:mod:`.layers`,
:mod:`.hidden_states`); for the zoo's models ``"conv"``, ``"blocks"`` (block, pooling and
classifier outputs, as in Sec. 4 of the paper) and names select among the taps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from ssc_jax.nets.flax_capture.hidden_states import (
    HIDDEN_STATES,
    linen_hidden_states,
    nnx_hidden_states,
    trace_hidden_states,
)
from ssc_jax.nets.flax_capture.inputs import spec_key
from ssc_jax.nets.flax_capture.layers import CONV, Selection, kept_layers, select_layers
from ssc_jax.nets.generic import hooked_forward, module_table, trace_layers
from ssc_jax.nets.layer_choice import BLOCKS, no_match_message, warn_if_one_layer
from ssc_jax.nets.linen_capture import LinenModel, linen_calls, linen_forward, linen_input_channels
from ssc_jax.nets.taps import has_taps, name_taps, tap_forward, trace_taps

Layers = str | type | Sequence[str] | Sequence[type]
Forward = Callable[[Any], dict[str, jax.Array]]
PRESETS = (CONV, BLOCKS, HIDDEN_STATES)

# (graphdef, input shapes, hooked paths) -> layers: tracing a deep net takes seconds, and an
# analysis traces the same architecture once per checkpoint.
_TRACES: dict[tuple, list] = {}


class Plan(NamedTuple):
    """The selected ``layers`` (name, per-sample shape) in forward order; ``forward``: layer
    names -> a function of a batch giving {name: output (B, ...)} of those layers;
    ``description``: in words, what was selected."""

    layers: list[tuple[str, tuple[int, ...]]]
    forward: Callable[[frozenset[str]], Forward]
    description: str


def default_input_shape(model) -> tuple[int, ...]:
    """A 32x32 input with as many channels as the model's first convolution takes."""
    if isinstance(model, LinenModel):
        channels = linen_input_channels(model)
    else:
        channels = next(
            (m.in_features for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)), None
        )
    if channels is None:
        raise ValueError("the model has no convolution to tell its input; pass input_shape")
    return (1, 32, 32, channels)


def _tap_plan(model: nnx.Module, layers: str | tuple[str, ...], shapes) -> Plan:
    taps = trace_taps(model, shapes.shape)
    if isinstance(layers, str):
        selected = [(name, shape) for kind, name, shape in taps if kind == layers]
        description = f"the zoo's {layers} layers"
    else:
        for name in layers:
            if name not in {tap for _, tap, _ in taps}:
                raise ValueError(no_match_message(name, [tap for _, tap, _ in taps]))
        selected = [(name, shape) for _, name, shape in taps if name in set(layers)]
        description = f"named: {', '.join(layers)}"
    graphdef, state = nnx.split(model)
    forward = lambda names: functools.partial(tap_forward(graphdef, names), state)
    return Plan(selected, forward, description)


def _hook_plan(model: nnx.Module, selection: Selection, shapes) -> Plan:
    graphdef, state = nnx.split(model)
    key = (graphdef, spec_key(shapes), selection.hooked)
    if key not in _TRACES:
        _TRACES[key] = trace_layers(model, selection.hooked, shapes)

    def forward(names: frozenset[str]) -> Forward:
        return functools.partial(hooked_forward(graphdef, selection.hooked, names), state)

    return Plan(kept_layers(selection, _TRACES[key]), forward, selection.description)


def _linen_plan(model: LinenModel, layers, shapes) -> Plan:
    calls = linen_calls(model, shapes)
    modules = list({call.name.split("#", 1)[0]: call.module for call in calls}.items())
    selection = select_layers(modules, layers, (nn.Conv,))
    kept = kept_layers(selection, [(call.name, call.shape) for call in calls])
    for name, shape in kept:
        if shape is None:
            raise ValueError(f"module {name!r} does not return one array; select modules that do")
    forward = lambda names: functools.partial(linen_forward(model, names), model.variables)
    return Plan(kept, forward, selection.description)


def _hidden_plan(model, shapes) -> Plan:
    if isinstance(model, LinenModel):
        build, params = functools.partial(linen_hidden_states, model), model.variables
    else:
        graphdef, params = nnx.split(model)
        build = functools.partial(nnx_hidden_states, graphdef)
    layers = trace_hidden_states(build(None), params, shapes)
    forward = lambda names: functools.partial(build(names), params)
    return Plan(layers, forward, "the hidden states the model returns")


def _checked(layers: Layers) -> str | tuple:
    if isinstance(layers, str):
        if layers not in PRESETS:
            raise ValueError(
                f"layers must be one of {PRESETS}, module types or a list of layer names; "
                f"got {layers!r}"
            )
        return layers
    layers = (layers,) if isinstance(layers, type) else tuple(layers)
    if not layers:
        raise ValueError("layers is an empty list; name at least one layer or module type")
    if len({isinstance(item, type) for item in layers}) > 1:
        raise ValueError("layers mixes module types and names; pass one or the other")
    return layers


def plan_layers(model, layers: Layers, shapes) -> Plan:
    """The plan of ``model``'s selected layers (see the module doc) for inputs of ``shapes``,
    a pytree of ``jax.ShapeDtypeStruct`` (1, ...); a one-line warning when one layer is
    selected."""
    layers = _checked(layers)
    typed = not isinstance(layers, str) and isinstance(layers[0], type)
    if not isinstance(model, nnx.Module | LinenModel):
        raise ValueError(
            "model must be a flax.nnx.Module or a LinenModel(module, variables); "
            f"got {type(model).__name__}"
        )
    if layers == HIDDEN_STATES:
        plan = _hidden_plan(model, shapes)
    elif has_taps(model) and not typed:
        if not isinstance(shapes, jax.ShapeDtypeStruct):
            raise ValueError("the zoo's models take images (n, H, W, C), not a mapping")
        plan = _tap_plan(name_taps(model), layers, shapes)
    elif isinstance(model, LinenModel):
        plan = _linen_plan(model, layers, shapes)
    else:
        selection = select_layers(module_table(model), layers, (nnx.Conv,))
        plan = _hook_plan(model, selection, shapes)
    warn_if_one_layer([name for name, _ in plan.layers])
    return plan


def float_shapes(input_shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """The shapes of float32 inputs of ``input_shape`` (B, ...), as one input (1, ...)."""
    return jax.ShapeDtypeStruct((1, *(int(d) for d in input_shape[1:])), jnp.float32)
