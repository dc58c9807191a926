"""Outputs of the submodules of any ``flax.nnx.Module``, captured without changing it.

A layer is a submodule's output, named by the submodule's path in the model (``"block1.conv"``,
``"layers.0"``: attribute names and list indices joined by dots); a submodule called twice in
one forward pass gives ``"path"`` and ``"path#2"``. Layers come in forward order, the order in
which the submodules return.

While :func:`hooking` is active, the ``__call__`` of the hooked submodules' classes is wrapped
(and restored afterwards) so that the output of each hooked instance is recorded; other
instances, and other threads, run unchanged. Submodules run inside an NNX transform within the
model (``nnx.scan``, ``nnx.vmap``, ``nnx.remat``) are copies, and are not recorded.

>>> import numpy as np
>>> from flax import nnx
>>> from ssc_jax import capture_activations
>>> class Net(nnx.Module):
...     def __init__(self, rngs):
...         self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
...         self.head = nnx.Linear(4, 2, rngs=rngs)
...     def __call__(self, x):
...         return self.head(nnx.relu(self.conv(x)).mean(axis=(1, 2)))
>>> x = np.zeros((5, 8, 8, 3), np.float32)
>>> {k: v.shape for k, v in capture_activations(Net(nnx.Rngs(0)), x).items()}
{'conv': (5, 8, 8, 4)}
>>> list(capture_activations(Net(nnx.Rngs(0)), x, (nnx.Conv, nnx.Linear)))
['conv', 'head']
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections import Counter
from collections.abc import Iterator, Mapping

import jax
from flax import nnx

from ssc_jax.nets.flax_capture.inputs import call

ModuleTypes = tuple[type, ...]


def module_table(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """(dotted path, submodule) of every submodule of ``model`` but the model itself."""
    return [
        (".".join(str(part) for part in path), module)
        for path, module in nnx.iter_modules(model)
        if path
    ]


def base_path(name: str) -> str:
    """The module path of a layer name (``"path#2"``, its second call, -> ``"path"``)."""
    return name.split("#", 1)[0]


class _Recorder:
    """Outputs {layer name: array} of the hooked instances (id -> path), in forward order."""

    def __init__(self, paths: Mapping[int, str]):
        self.paths = paths
        self.values: dict[str, jax.Array] = {}
        self.calls: Counter[int] = Counter()
        self.running: set[int] = set()

    def record(self, module: object, value: object) -> None:
        key = id(module)
        self.calls[key] += 1
        count = self.calls[key]
        name = self.paths[key] if count == 1 else f"{self.paths[key]}#{count}"
        if not isinstance(value, jax.Array):
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) returned a "
                f"{type(value).__name__}, not one array; select modules that return an array"
            )
        self.values[name] = value


_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar(
    "ssc_jax_hooks", default=None
)
_LOCK = threading.Lock()
# class -> [number of active hookings, the __call__ the class itself defines or None]
_PATCHED: dict[type, list] = {}


def _hooked_call(cls: type, own):
    """A ``__call__`` for ``cls`` that runs ``own`` (or the inherited one) and records the
    output of a hooked instance in its outermost call (a subclass calling ``super()`` does
    not record twice)."""

    def call(self, *args, **kwargs):
        if own is not None:
            return own(self, *args, **kwargs)
        return super(cls, self).__call__(*args, **kwargs)

    @functools.wraps(own or cls.__call__)
    def hooked(self, *args, **kwargs):
        recorder = _RECORDER.get()
        key = id(self)
        if recorder is None or key not in recorder.paths or key in recorder.running:
            return call(self, *args, **kwargs)
        recorder.running.add(key)
        try:
            out = call(self, *args, **kwargs)
        finally:
            recorder.running.discard(key)
        recorder.record(self, out)
        return out

    return hooked


def _patch(classes: set[type]) -> None:
    with _LOCK:
        for cls in classes:
            if cls in _PATCHED:
                _PATCHED[cls][0] += 1
                continue
            own = cls.__dict__.get("__call__")
            _PATCHED[cls] = [1, own]
            cls.__call__ = _hooked_call(cls, own)


def _unpatch(classes: set[type]) -> None:
    with _LOCK:
        for cls in classes:
            entry = _PATCHED[cls]
            entry[0] -= 1
            if entry[0]:
                continue
            del _PATCHED[cls]
            if entry[1] is None:
                del cls.__call__
            else:
                cls.__call__ = entry[1]


@contextlib.contextmanager
def hooking(modules: Mapping[str, nnx.Module]) -> Iterator[dict[str, jax.Array]]:
    """Record the outputs of ``modules`` (path -> module) while the block runs; yields the
    dict {layer name: output} that fills in forward order."""
    for path, module in modules.items():
        if not callable(module):
            raise ValueError(f"module {path!r} ({type(module).__name__}) is not callable")
    recorder = _Recorder({id(module): path for path, module in modules.items()})
    classes = {type(module) for module in modules.values()}
    _patch(classes)
    token = _RECORDER.set(recorder)
    try:
        yield recorder.values
    finally:
        _RECORDER.reset(token)
        _unpatch(classes)


def _run(graphdef: nnx.GraphDef, state: nnx.State, x, hooked: frozenset[str]):
    """{layer name: output} of the submodules at the ``hooked`` paths, in forward order."""
    model = nnx.merge(graphdef, state)
    model.eval()
    modules = {path: module for path, module in module_table(model) if path in hooked}
    with hooking(modules) as values:
        call(model, x)
    return values


@functools.lru_cache(maxsize=16)
def hooked_forward(graphdef: nnx.GraphDef, hooked: frozenset[str], keep: frozenset[str]):
    """Jitted (state, x (B, ...) or {name: (B, ...)}) -> {layer name: output (B, ...)}, eval
    mode, of the layers in ``keep``, outputs of the submodules at the ``hooked`` paths."""

    def forward(state: nnx.State, x) -> dict[str, jax.Array]:
        values = _run(graphdef, state, x, hooked)
        return {name: value for name, value in values.items() if name in keep}

    return jax.jit(forward)


def trace_layers(
    model: nnx.Module, hooked: frozenset[str], shapes
) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, per-sample shape) of every call of the submodules at the ``hooked``
    paths, in forward order, for inputs of ``shapes`` (a pytree of ``jax.ShapeDtypeStruct``
    (B, ...)), found without computing.

    Raises:
      ValueError: when none of them is called in the forward pass (naming the modules).
    """
    graphdef, state = nnx.split(model)
    order: list[str] = []  # eval_shape returns a dict sorted by key

    def forward(state: nnx.State, x) -> dict[str, jax.Array]:
        values = _run(graphdef, state, x, hooked)
        order.extend(values)
        return values

    outputs = jax.eval_shape(forward, state, shapes)
    found = [(name, tuple(outputs[name].shape[1:])) for name in order]
    if not found:
        raise ValueError(
            f"the selected modules {sorted(hooked)} are not called in the forward pass; "
            "select modules that are"
        )
    return found
