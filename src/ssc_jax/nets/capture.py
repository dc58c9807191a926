"""Activations and per-layer Gram matrices of a Flax model on a set of inputs.

``model`` is any ``flax.nnx.Module``, or a ``flax.linen`` model as a
:class:`~ssc_jax.nets.linen_capture.LinenModel`. The functions here run it in eval mode
(BatchNorm on running averages) under ``jax.jit``, in batches, and return only the selected
layers, in forward order, named by their module path. ``layers`` is one of

* ``"conv"`` (default): every convolution output (``nnx.Conv``, ``nn.Conv``); for a model with
  fewer than two (a transformer), its repeated blocks, said in a one-line warning;
* ``"blocks"``: the repeated blocks (the members of the model's longest run of same-class
  sibling modules: transformer layers, residual blocks); for the zoo's models their block,
  pooling and classifier outputs, as in Sec. 4 of the paper;
* ``"hidden_states"``: the hidden states the model returns
  (:mod:`ssc_jax.nets.flax_capture.hidden_states`);
* a module type or a tuple of them, e.g. ``(nnx.Conv, nnx.Linear)``: the output of every
  submodule of those types (:mod:`ssc_jax.nets.generic`);
* a list of layer names (module paths, e.g. ``["block1.conv", "head"]``) or shell-style
  patterns of them (``["blocks.*"]``).

One selected layer gives a warning; a selection that matches nothing is an error naming the
closest module paths. ``inputs`` is a batch (n, ...) passed as ``model(x)``, or a mapping of
batches passed as keyword arguments, ``model(**inputs)``
(:mod:`ssc_jax.nets.flax_capture.inputs`).

Token activations (n, T, D), the outputs of transformer layers, are pooled to one vector per
input by ``tokens`` (:mod:`ssc_jax.nets.tokens`; default ``"mean"``, over each input's real
tokens), with the padding ``mask`` (n, T) or the inputs' ``attention_mask``.
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
from tqdm.auto import tqdm

from ssc_jax.core.checks import check_positive
from ssc_jax.core.memory import MemoryBudgetError, default_memory_budget, disk_array
from ssc_jax.nets.flax_capture.inputs import batches, checked_inputs, count, padding_mask, spec
from ssc_jax.nets.flax_capture.plan import (
    Forward,
    Layers,
    default_input_shape,
    float_shapes,
    plan_layers,
)
from ssc_jax.nets.taps import has_taps
from ssc_jax.nets.tokens import DEFAULT_TOKENS, check_tokens, pool_tokens


def _traced_plan(model, layers: Layers, input_shape, inputs):
    if inputs is not None:
        shapes = spec(checked_inputs(inputs, images_only=has_taps(model)))
    else:
        shape = default_input_shape(model) if input_shape is None else input_shape
        shapes = float_shapes(shape)
    return plan_layers(model, layers, shapes)


def layer_names(
    model, layers: Layers = "conv", *, input_shape: tuple[int, ...] | None = None, inputs=None
) -> list[str]:
    """Names of the selected layers in forward order, found by tracing (no computation).

    The inputs are float32 of ``input_shape`` (B, ...), by default 32x32 images (B, 32, 32, C)
    with as many channels as the model's first convolution takes, or shaped like ``inputs``,
    a batch or a mapping of batches (token ids keep their integer dtype).
    """
    return [name for name, _ in _traced_plan(model, layers, input_shape, inputs).layers]


def layer_selection(
    model, layers: Layers = "conv", *, input_shape: tuple[int, ...] | None = None, inputs=None
) -> str:
    """One line on the layers ``layers`` selects of ``model`` (``"repeated blocks: the 4
    Block modules blocks.0 ... blocks.3"``), for ``analyze_grams(layer_selection=...)``;
    the inputs as for :func:`layer_names`."""
    return _traced_plan(model, layers, input_shape, inputs).description


def pooled_shape(shape: tuple[int, ...], tokens: str) -> tuple[int, ...]:
    """The per-input shape of a layer of per-input ``shape`` once its tokens are pooled."""
    if len(shape) != 2:
        return shape
    return (math.prod(shape),) if tokens == "flatten" else (shape[1],)


def _pooled(value, tokens: str, mask: np.ndarray | None) -> np.ndarray:
    """A batch of a layer's outputs (b, ...) with token outputs (b, T, D) pooled."""
    value = np.asarray(value)
    return pool_tokens(value, tokens, mask) if value.ndim == 3 else value


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
    images = checked_inputs(images, images_only=has_taps(model))
    forward = functools.partial(_probabilities(nnx.graphdef(model)), nnx.state(model))
    return np.concatenate([np.asarray(p) for _, p in batches(forward, images, batch_size)])


def capture_activations(
    model,
    inputs,
    layers: Layers = "conv",
    *,
    tokens: str = DEFAULT_TOKENS,
    mask=None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Activations of the selected layers on ``inputs``: images (n, H, W, C) float32 for the
    zoo's models, preprocessed as the model was trained (see
    :func:`ssc_jax.normalize_images`); for other models a batch (n, ...) or a mapping of them
    passed as keyword arguments. ``model``, ``layers``, ``tokens`` and ``mask`` (n, T): see the
    module docstring.

    Returns an ordered dict, forward order, name -> float32 array (n, ...) (the layer's output
    shape, e.g. (n, h, w, c) for a convolution; (n, D) for pooled tokens). Holds every
    selected layer at once; for Gram matrices of many layers use :func:`activation_grams`,
    whose memory is bounded.
    """
    check_tokens(tokens)
    inputs = checked_inputs(inputs, images_only=has_taps(model))
    mask = padding_mask(inputs, mask)
    n = count(inputs)
    plan = plan_layers(model, layers, spec(inputs))
    out = {
        name: np.empty((n, *pooled_shape(shape, tokens)), np.float32) for name, shape in plan.layers
    }
    for start, values in batches(plan.forward(frozenset(out)), inputs, batch_size):
        for name, value in values.items():
            rows = None if mask is None else mask[start : start + len(value)]
            out[name][start : start + len(value)] = _pooled(value, tokens, rows)
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


class _Pooling(NamedTuple):
    """How token outputs are pooled: ``tokens`` and the padding ``mask`` (n, T) or None."""

    tokens: str
    mask: np.ndarray | None

    def rows(self, start: int, stop: int) -> _Pooling:
        return self if self.mask is None else self._replace(mask=self.mask[start:stop])


def _rows(inputs, start: int, stop: int):
    """Inputs ``start:stop`` of a batch or a mapping of batches."""
    return jax.tree.map(lambda a: a[start:stop], inputs)


def _features(
    forward: Forward, inputs, dims: dict[str, int], batch_size: int, pooling: _Pooling, bar=None
) -> dict[str, np.ndarray]:
    """Flattened activations {name: (n, d)} of the layers named in ``dims`` (name -> d),
    whose outputs ``forward`` gives, tokens pooled; ``bar``, a tqdm bar, counts the inputs
    done."""
    n = count(inputs)
    out = {name: np.empty((n, d), np.float32) for name, d in dims.items()}
    for start, values in batches(forward, inputs, batch_size):
        for name, value in values.items():
            stop = start + len(value)
            pooled = _pooled(value, pooling.tokens, pooling.rows(start, stop).mask)
            out[name][start:stop] = pooled.reshape(len(value), -1)
        if bar is not None:
            bar.update(min(batch_size, n - start))
    return out


def _gram(a: np.ndarray, b: np.ndarray | None = None, *, out: np.ndarray | None = None):
    """a b^T, or a a^T, in float32: (m, d), (k, d) -> (m, k), written into ``out`` where
    given. On a CPU by NumPy's BLAS (``_host_gram``), elsewhere by XLA on the device
    (``_device_gram``)."""
    if jax.default_backend() == "cpu":
        return _host_gram(a, b, out=out)
    if out is None:
        return _device_gram(a, b)
    out[...] = _device_gram(a, b)
    return out


def _host_gram(a: np.ndarray, b: np.ndarray | None = None, *, out: np.ndarray | None = None):
    """a b^T, or a a^T, in float32 by NumPy's BLAS: a a^T is one symmetric rank-k update
    (syrk), half the multiply-adds of a general product, which XLA's CPU matmul does not
    take. Written straight into ``out`` where given, with no (m, k) temporary."""
    a = np.asarray(a, np.float32)
    return np.matmul(a, (a if b is None else np.asarray(b, np.float32)).T, out=out)


def _device_gram(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """a b^T, or a a^T, in float32 at full precision (no TF32 on GPUs) by XLA on the default
    device, each operand moved there once."""
    a = jnp.asarray(a)
    b = a if b is None else jnp.asarray(b)
    return np.asarray(jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))


def _fill_grams(
    forward: Forward,
    inputs,
    dims: dict[str, int],
    rows: int,
    batch_size: int,
    pooling: _Pooling,
    grams: dict[str, np.ndarray],
    bar=None,
) -> None:
    """Write the Gram (n, n) of each layer in ``dims`` (name -> d) into ``grams[name]``, from
    row blocks of ``rows`` inputs, holding the features of at most two blocks at a time;
    ``bar`` counts the inputs passed through the model (`_passed_inputs`)."""
    n = count(inputs)
    starts = range(0, n, rows)

    def features(start: int) -> dict[str, np.ndarray]:
        block = _rows(inputs, start, start + rows)
        return _features(forward, block, dims, batch_size, pooling.rows(start, start + rows), bar)

    for a in starts:
        xa = features(a)
        later = starts[starts.index(a) + 1 :]
        for name in list(xa):
            # Without later blocks a layer's features are done with once its Gram is formed.
            x = xa[name] if later else xa.pop(name)
            _gram(x, out=grams[name][a : a + rows, a : a + rows])
            del x
        for b in later:
            xb = features(b)
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
    inputs,
    layers: Layers = "conv",
    *,
    tokens: str = DEFAULT_TOKENS,
    mask=None,
    batch_size: int = 256,
    memory_budget_bytes: int | None = None,
    spill_dir: str | None = None,
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Per-layer Gram matrices G_l = X_l X_l^T of the inputs (X_l: layer l's activations,
    flattened, one row per input). Returns (names in forward order, float32 (L, n, n)).
    ``model``, ``inputs``, ``layers``, ``tokens`` and ``mask`` as in
    :func:`capture_activations`.

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
    check_tokens(tokens)
    inputs = checked_inputs(inputs, images_only=has_taps(model))
    pooling = _Pooling(tokens, padding_mask(inputs, mask))
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    plan = plan_layers(model, layers, spec(inputs))
    names = [name for name, _ in plan.layers]
    dims = [math.prod(pooled_shape(shape, tokens)) for _, shape in plan.layers]
    n = count(inputs)
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
                inputs=inputs,
                dims=group_dims,
                rows=group.rows,
                batch_size=batch_size,
                pooling=pooling,
                grams={names[i]: grams[i] for i in group.layers},
                bar=bar,
            )
    return names, grams
