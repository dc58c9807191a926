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

import functools
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from ssc_jax.nets.flax_capture.inputs import call


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
        call(functools.partial(model.module.apply, model.variables), x, **model.kwargs)
    return seen


def linen_forward(model: LinenModel, names: frozenset[str]):
    """Jitted (variables, x (B, ...) or {name: (B, ...)}) -> {layer name: output (B, ...)}
    of the named layers."""

    def forward(variables, x) -> dict[str, jax.Array]:
        run = model._replace(variables=variables)
        return {item.name: item.value for item in _intercepted(run, x) if item.name in names}

    return jax.jit(forward)


class LinenCall(NamedTuple):
    """One submodule call of a forward pass: the layer ``name``, the ``module`` and the
    per-sample ``shape`` of its output, None when the output is not one array."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None


def linen_calls(model: LinenModel, shapes) -> list[LinenCall]:
    """Every submodule call of a forward pass on inputs of ``shapes`` (a pytree of
    ``jax.ShapeDtypeStruct`` (B, ...)), in the order they return, found without computing."""
    if not isinstance(model.module, nn.Module):
        kind = type(model.module).__name__
        raise ValueError(f"LinenModel.module must be a flax.linen.Module; got {kind}")
    listing: list[_Seen] = []

    def forward(variables, x):
        seen = _intercepted(model._replace(variables=variables), x)
        listing.extend(_Seen(item.name, item.module, None) for item in seen)
        return [item.value if isinstance(item.value, jax.Array) else None for item in seen]

    outputs = jax.eval_shape(forward, model.variables, shapes)
    return [
        LinenCall(item.name, item.module, None if out is None else tuple(out.shape[1:]))
        for item, out in zip(listing, outputs, strict=True)
    ]


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
