"""Activations and per-layer Gram matrices of a model on a set of inputs.

``model`` is any ``flax.nnx.Module``, or a ``flax.linen`` model as a
:class:`~ssc_jax.nets.linen_capture.LinenModel`. The functions here run it in eval mode
(BatchNorm on running averages) under ``jax.jit``, in batches, and return only the selected
layers, in forward order, named by their module path. ``layers`` is one of

* ``"conv"`` (default): every convolution output (``nnx.Conv``, ``nn.Conv``);
* a module type or a tuple of them, e.g. ``(nnx.Conv, nnx.Linear)`` or ``nnx.BatchNorm``:
  the output of every submodule of those types (:mod:`ssc_jax.nets.generic`);
* a list of layer names (module paths, e.g. ``["block1.conv", "head"]``);
* ``"blocks"``, for the zoo's models only: block, pooling and classifier outputs, as in
  Sec. 4 of the paper.

The zoo's models name their convolutions and blocks with taps (:mod:`ssc_jax.nets.taps`:
``"layer2.0.conv1"``, ``"layer2.0.shortcut.conv"``, ``"layer2.0"``); ``"conv"``, ``"blocks"``
and names select among those. A selection that captures nothing is an error that lists the
model's submodules (paths and types).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from ssc_jax.core.checks import check_finite, check_ndim, check_positive
from ssc_jax.core.memory import MemoryBudgetError, default_memory_budget, disk_array
from ssc_jax.nets.generic import describe, hooked_forward, module_table, trace_layers
from ssc_jax.nets.linen_capture import LinenModel, linen_forward, linen_input_channels, trace_linen
from ssc_jax.nets.taps import KINDS, has_taps, name_taps, tap_forward, trace_taps

Layers = str | type | Sequence[str] | Sequence[type]
Forward = Callable[[jax.Array], dict[str, jax.Array]]

# (graphdef, input shape, layers) -> layers: tracing a deep net takes seconds, and an
# analysis traces the same architecture once per checkpoint.
_TRACES: dict[tuple, list] = {}


class _Plan(NamedTuple):
    """The selected layers (name, per-sample shape) in forward order, and ``forward``: layer
    names -> a function of a batch (B, ...) giving {name: output (B, ...)} of those layers."""

    layers: list[tuple[str, tuple[int, ...]]]
    forward: Callable[[frozenset[str]], Forward]


def _default_input_shape(model) -> tuple[int, ...]:
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


def _tap_plan(model: nnx.Module, layers: str | tuple[str, ...], input_shape) -> _Plan:
    taps = trace_taps(model, input_shape)
    if isinstance(layers, str):
        selected = [(name, shape) for kind, name, shape in taps if kind == layers]
    else:
        unknown = sorted(set(layers) - {name for _, name, _ in taps})
        if unknown:
            valid = ", ".join(name for _, name, _ in taps)
            raise ValueError(f"unknown layer names {unknown}; this model's layers are: {valid}")
        selected = [(name, shape) for _, name, shape in taps if name in set(layers)]
    graphdef, state = nnx.split(model)
    return _Plan(selected, lambda names: functools.partial(tap_forward(graphdef, names), state))


def _hook_plan(model: nnx.Module, layers: tuple, input_shape) -> _Plan:
    graphdef, state = nnx.split(model)
    key = (graphdef, input_shape, layers)
    if key not in _TRACES:
        _TRACES[key] = trace_layers(model, layers, input_shape)

    def forward(names: frozenset[str]) -> Forward:
        hooked = frozenset(name.split("#", 1)[0] for name in names)
        return functools.partial(hooked_forward(graphdef, hooked, names), state)

    return _Plan(_TRACES[key], forward)


def _linen_plan(model: LinenModel, layers: tuple, input_shape) -> _Plan:
    selected = trace_linen(model, layers, input_shape)
    return _Plan(
        selected, lambda names: functools.partial(linen_forward(model, names), model.variables)
    )


def _plan(model, layers: Layers, input_shape: tuple[int, ...]) -> _Plan:
    """The selected layers of ``model`` and their forward functions (see the module doc)."""
    shape = (1, *(int(d) for d in input_shape[1:]))
    if isinstance(layers, str):
        if layers not in KINDS:
            raise ValueError(
                f"layers must be one of {KINDS}, module types or a list of layer names; "
                f"got {layers!r}"
            )
    else:
        layers = (layers,) if isinstance(layers, type) else tuple(layers)
        if not layers:
            raise ValueError("layers is an empty list; name at least one layer or module type")
        if len({isinstance(item, type) for item in layers}) > 1:
            raise ValueError("layers mixes module types and names; pass one or the other")
    typed = not isinstance(layers, str) and isinstance(layers[0], type)
    if has_taps(model) and not typed:
        return _tap_plan(name_taps(model), layers, shape)
    if layers == "blocks":
        table = module_table(model) if isinstance(model, nnx.Module) else []
        raise ValueError(
            "layers='blocks' names the block outputs of the zoo's models, which this model does "
            f"not mark; pass module types or module paths. Its submodules: {describe(table)}"
        )
    if isinstance(model, LinenModel):
        return _linen_plan(model, (nn.Conv,) if layers == "conv" else layers, shape)
    if not isinstance(model, nnx.Module):
        raise ValueError(
            "model must be a flax.nnx.Module or a LinenModel(module, variables); "
            f"got {type(model).__name__}"
        )
    return _hook_plan(model, (nnx.Conv,) if layers == "conv" else layers, shape)


def layer_names(
    model, layers: Layers = "conv", *, input_shape: tuple[int, ...] | None = None
) -> list[str]:
    """Names of the selected layers in forward order, found by tracing (no computation).

    ``input_shape`` (B, ...) defaults to 32x32 images (B, 32, 32, C) with as many channels
    as the model's first convolution takes.
    """
    shape = _default_input_shape(model) if input_shape is None else input_shape
    return [name for name, _ in _plan(model, layers, shape).layers]


def _check_images(images, model) -> np.ndarray:
    """Inputs as float32: images (n, H, W, C) for the zoo's models, (n, ...) for others."""
    if has_taps(model):
        check_ndim("images", images, 4, "a batch of images (n, H, W, C)")
    elif np.ndim(images) < 2:
        raise ValueError(f"images must be a batch of inputs (n, ...); got shape {np.shape(images)}")
    images = np.asarray(images, dtype=np.float32)
    check_finite("images", images)
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one image")
    return images


def _batches(forward, images: np.ndarray, batch_size: int):
    """Yield (start, output) of ``forward(batch)`` over ``images`` in batches; the output is
    a pytree of (b, ...) arrays. The last batch is padded to ``batch_size`` so that one
    compiled function serves all."""
    check_positive("batch_size", batch_size)
    size = min(int(batch_size), len(images))
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        count = len(batch)
        if count < size:
            batch = np.concatenate([batch, np.zeros((size - count, *batch.shape[1:]), batch.dtype)])
        output = forward(jnp.asarray(batch))
        yield start, jax.tree.map(lambda value, count=count: value[:count], output)


@functools.lru_cache(maxsize=16)
def _probabilities(graphdef: nnx.GraphDef):
    """Jitted (state, x (B, H, W, C)) -> softmax of the logits (B, classes), eval mode."""

    def forward(state: nnx.State, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        model.eval()
        return jax.nn.softmax(model(x), axis=-1)

    return jax.jit(forward)


def predict(model: nnx.Module, images, *, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n, classes) float32 of ``images`` (n, H, W, C), preprocessed as
    the model was trained, with BatchNorm in eval mode."""
    images = _check_images(images, model)
    forward = functools.partial(_probabilities(nnx.graphdef(model)), nnx.state(model))
    return np.concatenate([np.asarray(p) for _, p in _batches(forward, images, batch_size)])


def capture_activations(
    model, images, layers: Layers = "conv", *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Activations of the selected layers on ``images`` (n, H, W, C) float32 ((n, ...) for
    models other than the zoo's), preprocessed as the model was trained (see
    :func:`ssc_jax.normalize_images`). ``model`` and ``layers``: see the module docstring.

    Returns an ordered dict, forward order, name -> float32 array (n, ...) (the layer's output
    shape, e.g. (n, h, w, c) for a convolution). Holds every selected layer at once; for
    Gram matrices of many layers use :func:`activation_grams`, whose memory is bounded.
    """
    images = _check_images(images, model)
    plan = _plan(model, layers, images.shape)
    out = {name: np.empty((len(images), *shape), np.float32) for name, shape in plan.layers}
    for start, values in _batches(plan.forward(frozenset(out)), images, batch_size):
        for name, value in values.items():
            out[name][start : start + len(value)] = np.asarray(value)
    return out


# Features are held in float32.
_FEATURE_BYTES = 4


class LayerGroup(NamedTuple):
    """Layers whose features are held together, and the inputs per row block.

    Attributes:
      layers: indices of the group's layers, in forward order.
      rows: inputs per row block: n when the group's features for all n inputs are held at
        once; fewer for a single layer too large for that, whose features are then held for
        two row blocks at a time.
    """

    layers: tuple[int, ...]
    rows: int


def plan_layer_groups(widths: Sequence[int], n: int, budget: int) -> list[LayerGroup]:
    """Split layers of ``widths`` float32 features each (flattened) into groups whose features
    are held within ``budget`` bytes.

    Layers whose features for all n inputs fit together form a group, in forward order. A
    layer too large for that on its own is a group of row blocks, two of which fit in the
    budget (a pair of blocks gives an off-diagonal Gram block); the layers around it go on
    filling the open group.

    Raises:
      MemoryBudgetError (a ``ValueError``): when the features of two inputs of a layer exceed
        the budget, naming the bytes needed.
    """
    groups: list[LayerGroup] = []
    current: list[int] = []
    current_bytes = 0
    for index, width in enumerate(widths):
        layer_bytes = _FEATURE_BYTES * n * width
        if layer_bytes > budget:
            rows = budget // (2 * _FEATURE_BYTES * width)
            if rows < 1:
                raise MemoryBudgetError(
                    f"a layer of {width:,} features (two inputs)",
                    2 * _FEATURE_BYTES * width,
                    budget,
                )
            groups.append(LayerGroup(layers=(index,), rows=int(rows)))
            continue
        if current and current_bytes + layer_bytes > budget:
            groups.append(LayerGroup(layers=tuple(current), rows=n))
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += layer_bytes
    if current:
        groups.append(LayerGroup(layers=tuple(current), rows=n))
    return groups


def _features(
    forward: Forward, images: np.ndarray, dims: dict[str, int], batch_size: int, bar=None
) -> dict[str, np.ndarray]:
    """Flattened activations {name: (n, d)} of the layers named in ``dims`` (name -> d),
    whose outputs ``forward`` gives; ``bar``, a tqdm bar, counts the inputs done."""
    out = {name: np.empty((len(images), d), np.float32) for name, d in dims.items()}
    for start, values in _batches(forward, images, batch_size):
        for name, value in values.items():
            out[name][start : start + len(value)] = np.asarray(value).reshape(len(value), -1)
        if bar is not None:
            bar.update(min(batch_size, len(images) - start))
    return out


def _gram(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """a b^T, or a a^T, in float32 at full precision (no TF32 on GPUs): (m, d), (k, d) -> (m, k).

    Each operand is moved to the device once."""
    a = jnp.asarray(a)
    b = a if b is None else jnp.asarray(b)
    return np.asarray(jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))


def _fill_grams(
    forward: Forward,
    images: np.ndarray,
    dims: dict[str, int],
    rows: int,
    batch_size: int,
    grams: dict[str, np.ndarray],
    bar=None,
) -> None:
    """Write the Gram (n, n) of each layer in ``dims`` (name -> d) into ``grams[name]``, from
    row blocks of ``rows`` inputs, holding the features of at most two blocks at a time;
    ``bar`` counts the inputs passed through the model (`_passed_inputs`)."""
    n = len(images)
    starts = range(0, n, rows)
    for a in starts:
        xa = _features(forward, images[a : a + rows], dims, batch_size, bar)
        for name, x in xa.items():
            grams[name][a : a + rows, a : a + rows] = _gram(x)
        for b in starts[starts.index(a) + 1 :]:
            xb = _features(forward, images[b : b + rows], dims, batch_size, bar)
            for name, x in xa.items():
                block = _gram(x, xb[name])
                grams[name][a : a + rows, b : b + rows] = block
                grams[name][b : b + rows, a : a + rows] = block.T
            del xb  # before the next block's features are captured
        del xa


def _passed_inputs(n: int, rows: int) -> int:
    """The inputs `_fill_grams` passes through the model for n inputs in blocks of ``rows``:
    each block once for its own Gram block, then again for each block before it."""
    sizes = [min(rows, n - a) for a in range(0, n, rows)]
    return sum(size * (1 + i) for i, size in enumerate(sizes))


def activation_grams(
    model,
    images,
    layers: Layers = "conv",
    *,
    batch_size: int = 256,
    memory_budget_bytes: int | None = None,
    spill_dir: str | None = None,
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Per-layer Gram matrices G_l = X_l X_l^T of the inputs (X_l: layer l's activations,
    flattened, one row per input). Returns (names in forward order, float32 (L, n, n)).
    ``model``, ``images`` and ``layers`` as in :func:`capture_activations`.

    With ``spill_dir``, a result larger than the budget is an ``np.memmap`` on a file there
    (unlinked at once: freed with the array), so that its pages leave memory as it is read a
    layer at a time; without it, or when it fits, it is in memory.

    At most ``memory_budget_bytes`` of features are held at once (default
    :func:`ssc_jax.core.memory.default_memory_budget`, half the default device's memory),
    on the host and, one layer at a time, on the device, besides the (L, n, n) result and
    one batch of activations. Layers are split into groups whose features for all n inputs
    fit the budget (:func:`plan_layer_groups`); for each group the inputs are streamed
    through the model in batches and only that group's features are kept, then its Grams
    are formed and the features dropped. A layer too large on its own is done in row
    blocks: features of two blocks of inputs at a time give the off-diagonal Gram blocks,
    at the cost of recomputing the forward pass.

    With ``progress``, a bar counts the inputs passed through the model, once per group of
    layers (more for a layer done in row blocks).

    Raises:
      ValueError: for a budget below the features of two inputs of a layer, and for
        invalid images or layer names.
    """
    images = _check_images(images, model)
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    plan = _plan(model, layers, images.shape)
    names = [name for name, _ in plan.layers]
    dims = [math.prod(shape) for _, shape in plan.layers]
    n = len(images)
    shape = (len(names), n, n)
    if spill_dir is not None and math.prod(shape) * 4 > budget:
        grams = disk_array(shape, np.float32, spill_dir)
    else:
        grams = np.empty(shape, np.float32)
    groups = plan_layer_groups(dims, n, int(budget))
    total = sum(_passed_inputs(n, group.rows) for group in groups)
    with tqdm(total=total, desc="activations", unit="input", disable=not progress) as bar:
        for group in groups:
            group_dims = {names[i]: dims[i] for i in group.layers}
            _fill_grams(
                forward=plan.forward(frozenset(group_dims)),
                images=images,
                dims=group_dims,
                rows=group.rows,
                batch_size=batch_size,
                grams={names[i]: grams[i] for i in group.layers},
                bar=bar,
            )
    return names, grams
