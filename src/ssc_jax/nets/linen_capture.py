"""Outputs of the submodules of a ``flax.linen`` model, through ``nn.intercept_methods``.

Pass a linen model to the capture functions as a :class:`LinenModel`: the module, its
variables and the keyword arguments that put it in eval mode. A layer is a submodule's
``__call__`` output, named by the submodule's path joined by dots (``"Conv_0"``,
``"block1.conv"``); one called twice in a forward pass gives ``"path"`` and ``"path#2"``.
Layers come in forward order, the order in which the submodules return.

>>> import jax, numpy as np, flax.linen as nn
>>> from ssc_jax import LinenModel, layer_names
>>> class Net(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         x = nn.relu(nn.Conv(4, (3, 3))(x))
...         return nn.Dense(2)(nn.relu(nn.Conv(4, (3, 3))(x)).mean(axis=(1, 2)))
>>> x = np.zeros((1, 8, 8, 3), np.float32)
>>> variables = Net().init(jax.random.key(0), x)
>>> layer_names(LinenModel(Net(), variables), input_shape=x.shape)
['Conv_0', 'Conv_1']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssc_jax.nets.generic import ModuleTypes


class LinenModel(NamedTuple):
    """A linen model ready to run: ``module.apply(variables, x, **kwargs)`` in eval mode.

    Attributes:
      module: the ``flax.linen.Module``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``), as ``init`` made
        them or as trained.
      kwargs: keyword arguments of ``__call__`` that select eval mode, e.g. ``{"train":
        False}``; none by default.
    """

    module: nn.Module
    variables: Mapping[str, Any]
    kwargs: Mapping[str, Any] = {}


class _Seen(NamedTuple):
    name: str
    module: nn.Module
    value: Any


def _intercepted(model: LinenModel, x: jax.Array) -> list[_Seen]:
    """Every submodule ``__call__`` output of one forward pass, in the order they return."""
    seen: list[_Seen] = []
    calls: Counter[tuple] = Counter()
    running: set[int] = set()

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not module.path or id(module) in running:
            return next_fun(*args, **kwargs)
        running.add(id(module))
        try:
            out = next_fun(*args, **kwargs)
        finally:
            running.discard(id(module))
        path = ".".join(str(part) for part in module.path)
        calls[module.path] += 1
        name = path if calls[module.path] == 1 else f"{path}#{calls[module.path]}"
        seen.append(_Seen(name, module, out))
        return out

    with nn.intercept_methods(interceptor):
        model.module.apply(model.variables, x, **model.kwargs)
    return seen


def _describe(seen: Sequence[_Seen]) -> str:
    if not seen:
        return "no submodule calls"
    return ", ".join(f"{item.name} ({type(item.module).__name__})" for item in seen)


def _wanted(seen: Sequence[_Seen], layers: ModuleTypes | Sequence[str]) -> list[_Seen]:
    if all(isinstance(item, type) for item in layers):
        return [item for item in seen if isinstance(item.module, tuple(layers))]
    names = set(layers)
    return [item for item in seen if item.name in names]


def linen_forward(model: LinenModel, names: frozenset[str]):
    """Jitted (variables, x (B, ...)) -> {layer name: output (B, ...)} of the named layers."""

    def forward(variables, x: jax.Array) -> dict[str, jax.Array]:
        run = model._replace(variables=variables)
        return {item.name: item.value for item in _intercepted(run, x) if item.name in names}

    return jax.jit(forward)


def trace_linen(
    model: LinenModel, layers: ModuleTypes | Sequence[str], input_shape: tuple[int, ...]
) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, per-sample shape) of the selected layers, in forward order, for inputs of
    ``input_shape`` (B, ...), found without computing.

    Raises:
      ValueError: listing the submodule calls (paths and types) when the selection captures
        nothing, names unknown layers, or picks an output that is not one array.
    """
    if not isinstance(model.module, nn.Module):
        kind = type(model.module).__name__
        raise ValueError(f"LinenModel.module must be a flax.linen.Module; got {kind}")
    listing: list[_Seen] = []

    def forward(variables, x: jax.Array):
        seen = _intercepted(model._replace(variables=variables), x)
        listing.extend(_Seen(item.name, item.module, None) for item in seen)
        return [item.value if isinstance(item.value, jax.Array) else None for item in seen]

    shapes = jax.eval_shape(
        forward, model.variables, jax.ShapeDtypeStruct(input_shape, jnp.float32)
    )
    seen = [item._replace(value=value) for item, value in zip(listing, shapes, strict=True)]
    wanted = _wanted(seen, layers)
    if not all(isinstance(item, type) for item in layers):
        unknown = sorted(set(layers) - {item.name for item in seen})
        if unknown:
            raise ValueError(
                f"unknown layer names {unknown}; this model's layers are: {_describe(seen)}"
            )
    if not wanted:
        kinds = ", ".join(t.__name__ for t in layers)
        raise ValueError(
            f"the model calls no submodule of type {kinds}; pass other module types or layer "
            f"names. Its submodule calls: {_describe(seen)}"
        )
    for item in wanted:
        if item.value is None:
            raise ValueError(
                f"module {item.name!r} ({type(item.module).__name__}) does not return one "
                "array; select modules that do"
            )
    return [(item.name, tuple(item.value.shape[1:])) for item in wanted]


def linen_input_channels(model: LinenModel) -> int | None:
    """Input channels of the first 4-D ``kernel`` (kh, kw, in, out) in the parameters, in
    the order they were created; None when there is none."""

    def first(node: Mapping) -> int | None:
        for key, value in node.items():
            found = first(value) if isinstance(value, Mapping) else None
            if found is None and key == "kernel" and getattr(value, "ndim", 0) == 4:
                found = int(value.shape[2])
            if found is not None:
                return found
        return None

    return first(model.variables.get("params", {}))
