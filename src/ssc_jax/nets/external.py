"""Per-layer Gram matrices of activations from any network: arrays, files or a batch stream.

A Gram G = A A^T (A: a layer's activations flattened to (n, D)) is a sum over features,
G = sum_k A[:, k] A[:, k]^T, so it is accumulated over blocks of columns: only one block of
``n x width`` values (``width`` set by the memory budget) is in memory at a time, and a
memory-mapped ``.npy`` layer of 10,000 x 65,536 float32 is never read whole. Blocks are
multiplied in float32 at full precision (no TF32 on GPUs) with JAX, on its default device,
and checked for NaN and Inf as they are read.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.core.checks import check_positive
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.nets.activation_files import read_activations
from ssc_jax.nets.activation_source import ActivationSource, LazyLayers, check_layer

# Bytes in flight per value of a block besides the value as read: its float32 copy on the
# host and on the device.
_BLOCK_OVERHEAD = 8


@functools.partial(jax.jit, donate_argnums=0)
def _add_gram(gram: jax.Array, block: jax.Array) -> jax.Array:
    """gram (n, n) + block block^T, block (n, width), float32 at full precision."""
    return gram + jnp.matmul(block, block.T, precision=jax.lax.Precision.HIGHEST)


def _column_blocks(array, n: int, budget: int) -> Iterator[np.ndarray]:
    """Blocks (n, w) of the flattened (n, D) ``array``, each within ``budget`` bytes.

    A NumPy array (memory-mapped or not) is cut into columns of its (n, D) view; any other
    array-like (a safetensors tensor) along its axis 1, which are contiguous column ranges.
    """
    itemsize = np.dtype(array.dtype).itemsize + _BLOCK_OVERHEAD
    if isinstance(array, np.ndarray):
        flat = array.reshape(n, -1)
        width = max(1, min(flat.shape[1], budget // (n * itemsize)))
        for start in range(0, flat.shape[1], width):
            yield flat[:, start : start + width]
        return
    if len(array.shape) == 1:
        yield array[:].reshape(n, 1)
        return
    unit = math.prod(array.shape[2:])
    step = max(1, budget // (n * unit * itemsize))
    for start in range(0, array.shape[1], step):
        yield array[:, start : min(start + step, array.shape[1])].reshape(n, -1)


def layer_gram(
    activations,
    *,
    memory_budget_bytes: int | None = None,
    name: str = "activations",
    source: str = "layer_gram",
) -> np.ndarray:
    """Gram matrix A A^T (n, n) float32 of one layer's activations ``activations`` (n, ...).

    ``activations`` is an array (a ``np.memmap`` is read block by block) or an array-like
    with ``shape``, ``dtype`` and slicing along axis 1. At most ``memory_budget_bytes``
    (default: :func:`ssc_jax.core.memory.default_memory_budget`, half the memory of JAX's
    default device) of activations and their copies are held at once, besides the (n, n)
    result. ``name`` and ``source`` name the array and where it came from in error messages.
    """
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    if not isinstance(getattr(activations, "dtype", None), np.dtype):
        activations = np.asarray(activations)
    shape = tuple(activations.shape)
    n = shape[0] if shape else 0
    check_layer(source, name, shape, activations.dtype, n)
    gram = jnp.zeros((n, n), jnp.float32)
    width = None
    for block in _column_blocks(activations, n, int(budget)):
        block = np.asarray(block, dtype=np.float32)
        if not np.isfinite(block).all():
            raise ValueError(f"{source}: array {name!r} contains NaN or Inf")
        width = width or block.shape[1]
        if block.shape[1] < width:  # pad the last block, so that one compilation serves all
            block = np.pad(block, ((0, 0), (0, width - block.shape[1])))
        # Wait for each block, so that reading cannot run ahead with blocks queued in memory.
        gram = _add_gram(gram, jnp.asarray(block)).block_until_ready()
    return np.asarray(gram)


def _spill(batches: Iterable[Mapping], folder: Path) -> dict[str, np.memmap]:
    """Write a stream of sample batches {layer: (b, ...)} to one float32 file per layer and
    return them memory-mapped as {layer: (n, ...)}; one batch is in memory at a time."""
    names: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    files = {}
    rows = 0
    try:
        for index, batch in enumerate(batches):
            where = f"batch {index} of the activation stream"
            if not isinstance(batch, Mapping):
                kind = type(batch).__name__
                raise ValueError(f"{where}: must be a mapping {{layer: (b, ...)}}; got {kind}")
            if index == 0:
                names = list(batch)
                if not names:
                    raise ValueError(f"{where}: has no layer arrays")
                files = {name: (folder / f"{i}.f32").open("wb") for i, name in enumerate(names)}
            elif list(batch) != names:
                raise ValueError(f"{where}: has layers {list(batch)}; the first had {names}")
            size = None
            for name, value in batch.items():
                value = np.asarray(value)
                size = (len(value) if value.ndim else 0) if size is None else size
                check_layer(where, name, value.shape, value.dtype, size)
                if shapes.setdefault(name, value.shape[1:]) != value.shape[1:]:
                    raise ValueError(
                        f"{where}: array {name!r} has per-input shape {value.shape[1:]}; "
                        f"earlier batches had {shapes[name]}"
                    )
                np.ascontiguousarray(value, dtype=np.float32).tofile(files[name])
            rows += size
    finally:
        for file in files.values():
            file.close()
    if not names:
        raise ValueError("activation stream: yielded no batches")
    return {
        name: np.memmap(folder / f"{i}.f32", np.float32, "r", shape=(rows, *shapes[name]))
        for i, name in enumerate(names)
    }


def _mapping_grams(layers: Mapping, budget: int | None, source: str) -> np.ndarray:
    names = list(layers)
    if not names:
        raise ValueError(f"{source}: no layer arrays")
    n = None
    grams = None
    for index, name in enumerate(names):
        value = layers[name]
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        n = (len(value) if value.ndim else 0) if n is None else n
        check_layer(source, name, value.shape, value.dtype, n)
        if grams is None:
            grams = np.empty((len(names), n, n), np.float32)
        grams[index] = layer_gram(value, memory_budget_bytes=budget, name=name, source=source)
    return grams


def _lazy_grams(layers: LazyLayers, n: int, budget: int | None) -> np.ndarray:
    grams = np.empty((len(layers), n, n), np.float32)
    for index, name in enumerate(layers):
        with layers.open(name) as array:
            source = layers.file(name)
            grams[index] = layer_gram(array, memory_budget_bytes=budget, name=name, source=source)
    return grams


def grams_from_activations(
    layers: Mapping | Iterable[Mapping] | ActivationSource | str | Path,
    *,
    memory_budget_bytes: int | None = None,
    spill_dir: str | Path | None = None,
) -> tuple[list[str], np.ndarray]:
    """Per-layer Gram matrices of activations. Returns (layer names, float32 (L, n, n)).

    ``layers`` is one of:

    * a mapping {layer name: (n, ...) array} in forward order (NumPy, memory-mapped, or
      anything ``np.asarray`` takes, e.g. a CPU torch tensor); every entry is a layer;
    * an :class:`ActivationSource` from :func:`read_activations`, or a path to give it;
    * an iterable of sample batches {layer name: (b, ...) array}, the same layers in every
      batch, consumed once. As Grams pair every input with every other, the batches are
      written to one float32 file per layer in a temporary folder under ``spill_dir``
      (default: the system's), which needs n * sum(D_l) * 4 bytes of disk, and the Grams are
      then formed from those files. Only one batch is in memory at a time.

    Layers are done one at a time, in column blocks of at most ``memory_budget_bytes``
    (default: half the memory of JAX's default device); the memory needed is that, one
    (n, n) Gram in flight and the result.

    Raises:
      ValueError: naming the source (file, ``layers`` or the batch) and the array, for
        layers with differing numbers of inputs, a non-numeric or empty array, NaN or Inf.
    """
    if isinstance(layers, str | Path):
        layers = read_activations(layers)
    if isinstance(layers, ActivationSource):
        grams = _lazy_grams(layers.layers, len(layers.labels), memory_budget_bytes)
        return list(layers.names), grams
    if isinstance(layers, Mapping):
        return list(layers), _mapping_grams(layers, memory_budget_bytes, "layers")
    with tempfile.TemporaryDirectory(dir=spill_dir, prefix="ssc-jax-activations-") as folder:
        spilled = _spill(layers, Path(folder))
        grams = _mapping_grams(spilled, memory_budget_bytes, "activation stream")
        names = list(spilled)
        del spilled  # close the memory maps before their folder is removed
    return names, grams
