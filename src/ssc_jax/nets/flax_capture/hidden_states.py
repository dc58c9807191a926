"""``layers="hidden_states"``: the hidden states a Flax model returns itself, as Hugging Face
models do with ``output_hidden_states=True``: an output with a ``hidden_states`` attribute or
key holding one array (B, T, D) per layer, the embeddings first. They are named
``"hidden_states.0"``, ``"hidden_states.1"``, ... in that order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
from flax import nnx

from ssc_jax.nets.flax_capture.inputs import call
from ssc_jax.nets.linen_capture import LinenModel

HIDDEN_STATES = "hidden_states"


def hidden_states(output) -> dict[str, jax.Array]:
    """{"hidden_states.i": array} of a model's ``output``, in the order it gives them.

    Raises:
      ValueError: when the output holds no hidden states.
    """
    states = getattr(output, HIDDEN_STATES, None)
    if states is None and isinstance(output, Mapping):
        states = output.get(HIDDEN_STATES)
    if not isinstance(states, list | tuple) or not states:
        raise ValueError(
            "layers='hidden_states' needs a model that returns its hidden states (an output "
            f"with a 'hidden_states' attribute or key, a list of arrays); this one returns a "
            f"{type(output).__name__}; select module paths or types instead"
        )
    return {f"{HIDDEN_STATES}.{i}": state for i, state in enumerate(states)}


def _kept(output, keep: frozenset[str] | None) -> dict[str, jax.Array]:
    states = hidden_states(output)
    return {name: value for name, value in states.items() if keep is None or name in keep}


@functools.lru_cache(maxsize=16)
def nnx_hidden_states(graphdef: nnx.GraphDef, keep: frozenset[str] | None):
    """Jitted (state, x) -> {name: hidden state (B, ...)} in ``keep`` (all if None), eval mode."""

    def forward(state: nnx.State, x) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state)
        model.eval()
        return _kept(call(model, x), keep)

    return jax.jit(forward)


def linen_hidden_states(model: LinenModel, keep: frozenset[str] | None):
    """Jitted (variables, x) -> {name: hidden state (B, ...)} in ``keep`` (all if None)."""

    def forward(variables, x) -> dict[str, jax.Array]:
        return _kept(
            call(functools.partial(model.module.apply, variables), x, **model.kwargs), keep
        )

    return jax.jit(forward)


def trace_hidden_states(forward, params, shapes) -> list[tuple[str, tuple[int, ...]]]:
    """(name, per-sample shape) of the hidden states ``forward(params, x)`` gives for inputs of
    ``shapes``, in the model's order, found without computing."""
    outputs = jax.eval_shape(forward, params, shapes)
    ordered = sorted(outputs, key=lambda name: int(name.rsplit(".", 1)[1]))
    return [(name, tuple(outputs[name].shape[1:])) for name in ordered]
