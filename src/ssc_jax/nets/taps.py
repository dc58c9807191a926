"""Named taps: the points of a forward pass whose outputs can be captured.

A model marks a value as capturable with :func:`tap`. Outside a :func:`recording` block a tap
is the identity. Inside one, it stores the value under the tapping module's name (its path in
the model, e.g. ``"layer2.0.conv1"``, set by :func:`name_taps`) when the recording selects
it, and remembers the order in which taps fired, which is the forward order. A recording
works under ``jax.jit`` and ``jax.eval_shape``: names and order are known at trace time.

NNX's ``sow`` + ``nnx.capture`` also names values by module path, but returns them sorted
by path, which loses the forward order the analysis needs; a tape keeps it.

Two kinds of taps exist: ``"conv"`` (every convolution output) and ``"blocks"`` (block,
pooling and classifier outputs, the layers of Sec. 4 of the paper).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

KINDS = ("conv", "blocks")
Selection = str | frozenset[str]
Taps = list[tuple[str, str, tuple[int, ...]]]

# (graphdef, input shape) -> taps: tracing a deep net takes seconds, and an analysis traces
# the same architecture once per checkpoint.
_TRACES: dict[tuple[nnx.GraphDef, tuple[int, ...]], Taps] = {}


class Tape:
    """What one forward pass recorded: ``order``, the (kind, name) of every tap that fired,
    in forward order, and ``values``, name -> array for the selected taps (all if None)."""

    def __init__(self, select: str | frozenset[str] | None):
        self.select = select
        self.order: list[tuple[str, str]] = []
        self.values: dict[str, jax.Array] = {}

    def wants(self, kind: str, name: str) -> bool:
        if self.select is None:
            return True
        return self.select == kind if isinstance(self.select, str) else name in self.select


_TAPE: contextvars.ContextVar[Tape | None] = contextvars.ContextVar("ssc_jax_tape", default=None)


@contextlib.contextmanager
def recording(select: str | frozenset[str] | None) -> Iterator[Tape]:
    """Record the taps of kind ``select`` ("conv" or "blocks"), those named in a set, or all
    (None)."""
    tape = Tape(select)
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


def tap(module: nnx.Module, kind: str, value: jax.Array, name: str | None = None) -> jax.Array:
    """Mark ``value`` as the output of ``module`` (or, with ``name``, of its part ``name``)."""
    tape = _TAPE.get()
    if tape is None:
        return value
    full = ".".join(p for p in (module.tap_name, name) if p)
    if not full:
        raise ValueError("a tap at the model root needs a name")
    tape.order.append((kind, full))
    if tape.wants(kind, full):
        tape.values[full] = value
    return value


class Tapped(nnx.Module):
    """Base of the modules that tap their outputs; ``tap_name`` is their path in the model."""

    tap_name: str = ""


def name_taps(model: nnx.Module) -> nnx.Module:
    """Set ``tap_name`` of every :class:`Tapped` submodule to its dotted path; returns model."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Tapped):
            module.tap_name = ".".join(str(p) for p in path)
    return model


def has_taps(model) -> bool:
    """Whether ``model`` is an NNX module with a :class:`Tapped` submodule (a zoo model)."""
    return isinstance(model, nnx.Module) and any(
        isinstance(module, Tapped) for _, module in nnx.iter_modules(model)
    )


@functools.lru_cache(maxsize=16)
def tap_forward(graphdef: nnx.GraphDef, select: Selection):
    """Jitted (state, x (B, H, W, C)) -> {name: activation (B, ...)} for the selected taps."""

    def forward(state: nnx.State, x: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state)
        model.eval()
        with recording(select) as tape:
            model(x)
        return tape.values

    return jax.jit(forward)


def trace_taps(model: nnx.Module, input_shape: tuple[int, ...]) -> Taps:
    """(kind, name, per-sample shape) of every tap, in forward order, without computing."""
    graphdef, state = nnx.split(name_taps(model))
    if (graphdef, input_shape) in _TRACES:
        return _TRACES[graphdef, input_shape]
    order: list[tuple[str, str]] = []

    def forward(state: nnx.State, x: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state)
        model.eval()
        with recording(None) as tape:
            model(x)
        order.extend(tape.order)
        return tape.values

    shapes = jax.eval_shape(forward, state, jax.ShapeDtypeStruct(input_shape, jnp.float32))
    taps = [(kind, name, tuple(shapes[name].shape[1:])) for kind, name in order]
    _TRACES[graphdef, input_shape] = taps
    return taps
