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
from collections.abc import Iterator

import jax
from flax import nnx

KINDS = ("conv", "blocks")


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
