"""Activations and per-layer Gram matrices of a model on a set of inputs.

Every convolution output and every block output of the zoo's models is a named tap
(:mod:`ssc_jax.nets.taps`), named by its path in the model (``"layer2.0.conv1"``,
``"layer2.0.shortcut.conv"``, ``"layer2.0"``). The functions here run the model in eval mode
(BatchNorm on running averages) under ``jax.jit``, in batches, and return only the selected
taps, in forward order. ``layers`` is ``"conv"`` (every convolution), ``"blocks"`` (block,
pooling and classifier outputs, as in Sec. 4 of the paper) or a list of tap names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssc_jax.core.checks import check_finite, check_ndim, check_positive
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.nets.taps import KINDS, name_taps, recording
from ssc_jax.nets.zoo.layers import Conv

Selection = str | frozenset[str]
Taps = list[tuple[str, str, tuple[int, ...]]]

# (graphdef, input shape) -> taps: tracing a deep net takes seconds, and an analysis traces
# the same architecture once per checkpoint.
_TRACES: dict[tuple[nnx.GraphDef, tuple[int, ...]], Taps] = {}


@functools.lru_cache(maxsize=16)
def _forward(graphdef: nnx.GraphDef, select: Selection):
    """Jitted (state, x (B, H, W, C)) -> {name: activation (B, ...)} for the selected taps."""

    def forward(state: nnx.State, x: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state)
        model.eval()
        with recording(select) as tape:
            model(x)
        return tape.values

    return jax.jit(forward)


def _trace(model: nnx.Module, input_shape: tuple[int, ...]) -> Taps:
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


def _default_input_shape(model: nnx.Module) -> tuple[int, ...]:
    """A 32x32 input with as many channels as the model's first convolution takes."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Conv):
            return (1, 32, 32, module.in_features)
    raise ValueError("the model has no ssc_jax.nets.zoo.layers.Conv, so it has no taps to name")


def _resolve(
    model: nnx.Module, layers: str | Sequence[str], input_shape: tuple[int, ...]
) -> tuple[list[tuple[str, tuple]], Selection]:
    """The selected taps as (name, per-sample shape) in forward order, and their selection."""
    taps = _trace(model, (1, *(int(d) for d in input_shape[1:])))
    if isinstance(layers, str):
        if layers not in KINDS:
            raise ValueError(
                f"layers must be one of {KINDS} or a list of layer names; got {layers!r}"
            )
        return [(name, shape) for kind, name, shape in taps if kind == layers], layers
    wanted = frozenset(layers)
    unknown = sorted(wanted - {name for _, name, _ in taps})
    if unknown:
        valid = ", ".join(name for _, name, _ in taps)
        raise ValueError(f"unknown layer names {unknown}; this model's layers are: {valid}")
    if not wanted:
        raise ValueError("layers is an empty list; name at least one layer")
    return [(name, shape) for _, name, shape in taps if name in wanted], wanted


def layer_names(
    model: nnx.Module,
    layers: str | Sequence[str] = "conv",
    *,
    input_shape: tuple[int, ...] | None = None,
) -> list[str]:
    """Names of the selected layers in forward order, found by tracing (no computation).

    ``input_shape`` (B, H, W, C) defaults to 32x32 images with the model's input channels.
    """
    shape = _default_input_shape(model) if input_shape is None else input_shape
    return [name for name, _ in _resolve(model, layers, shape)[0]]


def _check_images(images) -> np.ndarray:
    check_ndim("images", images, 4, "a batch of images (n, H, W, C)")
    images = np.asarray(images, dtype=np.float32)
    check_finite("images", images)
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one image")
    return images


def _batches(forward, model: nnx.Module, images: np.ndarray, batch_size: int):
    """Yield (start, output) of ``forward(state, batch)`` over ``images`` in batches; the
    output is a pytree of (b, ...) arrays. The last batch is padded to ``batch_size`` so that
    one compiled function serves all."""
    check_positive("batch_size", batch_size)
    state = nnx.state(model)
    size = min(int(batch_size), len(images))
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        count = len(batch)
        if count < size:
            batch = np.concatenate([batch, np.zeros((size - count, *batch.shape[1:]), batch.dtype)])
        output = forward(state, jnp.asarray(batch))
        yield start, jax.tree.map(lambda value, count=count: value[:count], output)


def _tap_batches(model: nnx.Module, images: np.ndarray, select: Selection, batch_size: int):
    """:func:`_batches` of the selected taps, {name: (b, ...)}."""
    forward = _forward(nnx.graphdef(name_taps(model)), select)
    return _batches(forward, model, images, batch_size)


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
    images = _check_images(images)
    forward = _probabilities(nnx.graphdef(model))
    return np.concatenate([np.asarray(p) for _, p in _batches(forward, model, images, batch_size)])


def capture_activations(
    model: nnx.Module, images, layers: str | Sequence[str] = "conv", *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Activations of the selected layers on ``images`` (n, H, W, C) float32, preprocessed as
    the model was trained (see :func:`ssc_jax.normalize`).

    Returns an ordered dict, forward order, name -> float32 array (n, ...) (the layer's output
    shape, e.g. (n, h, w, c) for a convolution). Holds every selected layer at once; for
    Gram matrices of many layers use :func:`activation_grams`, whose memory is bounded.
    """
    images = _check_images(images)
    selected, select = _resolve(model, layers, images.shape)
    out = {name: np.empty((len(images), *shape), np.float32) for name, shape in selected}
    for start, values in _tap_batches(model, images, select, batch_size):
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
      ValueError: when the features of two inputs of a layer exceed the budget, naming the
        bytes needed.
    """
    groups: list[LayerGroup] = []
    current: list[int] = []
    current_bytes = 0
    for index, width in enumerate(widths):
        layer_bytes = _FEATURE_BYTES * n * width
        if layer_bytes > budget:
            rows = budget // (2 * _FEATURE_BYTES * width)
            if rows < 1:
                raise ValueError(
                    f"a layer of {width:,} features needs a memory budget of at least "
                    f"{2 * _FEATURE_BYTES * width:,} bytes (two inputs); the budget is "
                    f"{budget:,}"
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
    model: nnx.Module, images: np.ndarray, dims: dict[str, int], batch_size: int
) -> dict[str, np.ndarray]:
    """Flattened activations {name: (n, d)} of the layers named in ``dims`` (name -> d)."""
    out = {name: np.empty((len(images), d), np.float32) for name, d in dims.items()}
    for start, values in _tap_batches(model, images, frozenset(dims), batch_size):
        for name, value in values.items():
            out[name][start : start + len(value)] = np.asarray(value).reshape(len(value), -1)
    return out


def _gram(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """a b^T, or a a^T, in float32 at full precision (no TF32 on GPUs): (m, d), (k, d) -> (m, k).

    Each operand is moved to the device once."""
    a = jnp.asarray(a)
    b = a if b is None else jnp.asarray(b)
    return np.asarray(jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))


def _fill_grams(
    model: nnx.Module,
    images: np.ndarray,
    dims: dict[str, int],
    rows: int,
    batch_size: int,
    grams: dict[str, np.ndarray],
) -> None:
    """Write the Gram (n, n) of each layer in ``dims`` (name -> d) into ``grams[name]``, from
    row blocks of ``rows`` inputs, holding the features of at most two blocks at a time."""
    n = len(images)
    starts = range(0, n, rows)
    for a in starts:
        xa = _features(model, images[a : a + rows], dims, batch_size)
        for name, x in xa.items():
            grams[name][a : a + rows, a : a + rows] = _gram(x)
        for b in starts[starts.index(a) + 1 :]:
            xb = _features(model, images[b : b + rows], dims, batch_size)
            for name, x in xa.items():
                block = _gram(x, xb[name])
                grams[name][a : a + rows, b : b + rows] = block
                grams[name][b : b + rows, a : a + rows] = block.T
            del xb  # before the next block's features are captured
        del xa


def activation_grams(
    model: nnx.Module,
    images,
    layers: str | Sequence[str] = "conv",
    *,
    batch_size: int = 256,
    memory_budget_bytes: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """Per-layer Gram matrices G_l = X_l X_l^T of the inputs (X_l: layer l's activations,
    flattened, one row per input). Returns (names in forward order, float32 (L, n, n)).

    At most ``memory_budget_bytes`` of features are held at once (default
    :func:`ssc_jax.core.memory.default_memory_budget`, half the default device's memory),
    on the host and, one layer at a time, on the device, besides the (L, n, n) result and
    one batch of activations. Layers are split into groups whose features for all n inputs
    fit the budget (:func:`plan_layer_groups`); for each group the inputs are streamed
    through the model in batches and only that group's features are kept, then its Grams
    are formed and the features dropped. A layer too large on its own is done in row
    blocks: features of two blocks of inputs at a time give the off-diagonal Gram blocks,
    at the cost of recomputing the forward pass.

    Raises:
      ValueError: for a budget below the features of two inputs of a layer, and for
        invalid images or layer names.
    """
    images = _check_images(images)
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    selected, _ = _resolve(model, layers, images.shape)
    names = [name for name, _ in selected]
    dims = [math.prod(shape) for _, shape in selected]
    n = len(images)
    grams = np.empty((len(names), n, n), np.float32)
    for group in plan_layer_groups(dims, n, int(budget)):
        _fill_grams(
            model=model,
            images=images,
            dims={names[i]: dims[i] for i in group.layers},
            rows=group.rows,
            batch_size=batch_size,
            grams={names[i]: grams[i] for i in group.layers},
        )
    return names, grams
