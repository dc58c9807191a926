"""Activations of a network on n inputs as the analysis reads them: an
:class:`ActivationSource` of lazily read layers, the checks every layer passes, the layers a
selection keeps with their tokens pooled (:func:`narrowed_source`), and the network's class
probabilities (:func:`class_probabilities`). The files they come from are read by
:mod:`ssc_jax.nets.activation_files`.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.nets.layer_choice import (
    BLOCKS,
    HIDDEN_STATES,
    entry,
    no_match_message,
    repeated_blocks,
    warn_if_one_layer,
)
from ssc_jax.nets.tokens import check_tokens, pool_tokens

MASK = "attention_mask"
RESERVED = ("labels", "predictions", "logits", "images", MASK)
# The classes' names: an array of strings in .npz, a list in manifest.json, a JSON list in
# the safetensors metadata.
CLASS_NAMES = "class_names"
# Inputs pooled at a time when a stored token layer (n, T, D) is read.
_POOLED_ROWS = 1024


class Layer(NamedTuple):
    """Where a layer lives, its shape and dtype (read without its values), and its opener."""

    file: str
    shape: tuple[int, ...]
    dtype: np.dtype
    open: Callable[[], contextlib.AbstractContextManager]


class LazyLayers(Mapping):
    """Layer name -> activations (n, ...), read from disk on each access, in forward order.

    ``layers[name]`` returns a NumPy array (memory-mapped for ``.npy``). :meth:`open` gives,
    for the length of a ``with`` block, an array-like that reads only the slices asked of it
    (``a[:, i:j]`` along axis 1), which is how the Gram matrices are accumulated.
    """

    def __init__(self, entries: dict[str, Layer]):
        self._entries = entries

    def __getitem__(self, name: str) -> np.ndarray:
        with self.open(name) as array:
            return array if isinstance(array, np.ndarray) else array[:]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def file(self, name: str) -> str:
        """The file that holds layer ``name``."""
        return self._entries[name].file

    def open(self, name: str) -> contextlib.AbstractContextManager:
        """A context manager yielding layer ``name`` as an array-like (n, ...) read by slices."""
        return self._entries[name].open()


class ActivationSource(NamedTuple):
    """Activations of a network on n inputs, read from ``path`` by :func:`read_activations`.

    ``names`` and ``shapes`` (per input, i.e. without the leading n) are in forward order;
    ``labels`` and ``predictions`` are int64 (n,); ``logits`` is float (n, classes) or None
    (the predictions are then their argmax); ``images`` is (n, ...) or None; ``mask`` is the
    padding mask (n, T) of token layers, saved as ``attention_mask``, or None;
    ``class_names`` the K names of the classes, or None.
    """

    path: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    layers: LazyLayers
    labels: np.ndarray
    predictions: np.ndarray | None
    logits: np.ndarray | None
    images: np.ndarray | None
    mask: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None


def check_numeric(where: str, name: str, dtype: np.dtype) -> None:
    """Raise unless ``dtype`` is a real number or bool (activations can be summed)."""
    dtype = np.dtype(dtype)
    real = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if not (real or dtype == np.bool_):
        raise ValueError(f"{where}: array {name!r} has dtype {dtype}, not a real number")


def check_layer(where: str, name: str, shape: tuple[int, ...], dtype: np.dtype, n: int) -> None:
    """Raise unless a layer is numeric, non-empty and has one row per input (``n`` rows)."""
    check_numeric(where, name, dtype)
    if len(shape) == 0:
        raise ValueError(f"{where}: array {name!r} is a scalar, not activations (n, ...)")
    if shape[0] != n:
        rows = f"{shape[0]} rows (inputs)"
        raise ValueError(f"{where}: array {name!r} has {rows} but the first layer has {n}")
    if 0 in shape:
        raise ValueError(f"{where}: array {name!r} is empty (shape {shape})")


def check_labels(where: str, name: str, values: np.ndarray, n: int) -> np.ndarray:
    """Integer class labels (or predictions) (n,) as int64."""
    values = np.asarray(values)
    check_numeric(where, name, values.dtype)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(
            f"{where}: array {name!r} has shape {values.shape} but must be ({n},), one per input"
        )
    whole = np.issubdtype(values.dtype, np.integer) or (
        np.isfinite(values).all() and (values == np.round(values)).all()
    )
    if not whole:
        raise ValueError(f"{where}: array {name!r} must hold integer class labels")
    return values.astype(np.int64)


def checked_class_names(where: str, names, *, seen: int, width: int | None) -> tuple[str, ...]:
    """``names`` (a list or 1-D array of strings) as the K class names of a network whose
    labels and predictions lie in 0..``seen``-1 and whose logits, if any, have ``width``
    columns; one-line ``ValueError`` naming ``where`` unless they fit."""
    if isinstance(names, np.ndarray) and names.dtype.kind == "U" and names.ndim == 1:
        names = names.tolist()
    if not isinstance(names, list | tuple) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{where}: {CLASS_NAMES!r} must be a list of strings, one per class")
    if "" in names:
        raise ValueError(f"{where}: {CLASS_NAMES!r} holds an empty name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{where}: {CLASS_NAMES!r} repeats {repeated}; name each class once")
    if width is not None and len(names) != width:
        raise ValueError(
            f"{where}: {len(names)} class names for logits of {width} classes; "
            "give one name per logit column"
        )
    if len(names) < seen:
        raise ValueError(
            f"{where}: {len(names)} class names, but the labels or predictions reach class "
            f"{seen - 1}; give one name per class"
        )
    return tuple(names)


def assemble_source(path: Path, layers: dict[str, Layer], extras: dict[str, tuple[str, Callable]]):
    """Check and assemble the source read from ``path``: ``layers`` in forward order, and
    ``extras``, reserved names (and ``class_names``) -> (file, loader of the value)."""
    where = str(path)
    if not layers:
        raise ValueError(f"{where}: no layer arrays (only reserved names {sorted(extras)})")
    if "labels" not in extras:
        raise ValueError(f"{where}: no array 'labels'; add the class label (n,) of every input")
    first = next(iter(layers.values()))
    n = first.shape[0] if first.shape else 0
    for name, layer in layers.items():
        check_layer(layer.file, name, layer.shape, layer.dtype, n)
    labels = check_labels(extras["labels"][0], "labels", extras["labels"][1](), n)
    if "predictions" in extras and "logits" in extras:
        raise ValueError(f"{where}: arrays 'predictions' and 'logits' are both given; keep one")
    predictions = logits = None
    if "predictions" in extras:
        file, load = extras["predictions"]
        predictions = check_labels(file, "predictions", load(), n)
    if "logits" in extras:
        file, load = extras["logits"]
        logits = np.asarray(load())
        check_numeric(file, "logits", logits.dtype)
        if logits.ndim != 2 or len(logits) != n:
            raise ValueError(f"{file}: array 'logits' has shape {logits.shape}, not ({n}, classes)")
        if not np.isfinite(logits).all():
            raise ValueError(f"{file}: array 'logits' contains NaN or Inf")
        predictions = np.argmax(logits, axis=1).astype(np.int64)
    images = None
    if "images" in extras:
        file, load = extras["images"]
        images = np.asarray(load())
        if images.ndim == 0 or len(images) != n:
            raise ValueError(f"{file}: array 'images' has shape {images.shape}, not ({n}, ...)")
    mask = None
    if MASK in extras:
        file, load = extras[MASK]
        mask = np.asarray(load())
        if mask.ndim != 2 or len(mask) != n:
            raise ValueError(f"{file}: array {MASK!r} has shape {mask.shape}, not ({n}, T)")
    class_names = None
    if CLASS_NAMES in extras:
        file, load = extras[CLASS_NAMES]
        seen = 1 + int(max(labels.max(), -1 if predictions is None else predictions.max()))
        width = None if logits is None else logits.shape[1]
        class_names = checked_class_names(file, load(), seen=seen, width=width)
    return ActivationSource(
        path=where,
        names=tuple(layers),
        shapes=tuple(layer.shape[1:] for layer in layers.values()),
        layers=LazyLayers(layers),
        labels=labels,
        predictions=predictions,
        logits=logits,
        images=images,
        mask=mask,
        class_names=class_names,
    )


def chosen_layers(
    shapes: Mapping[str, tuple[int, ...]], select: str | Sequence[str] | None
) -> tuple[list[str], str | None]:
    """The layers ``select`` keeps of those stored (name -> per-input shape, forward order),
    and a line on how they were chosen (None when all are kept).

    ``select`` is None (every stored layer), ``"blocks"`` (the longest run of same-shaped
    siblings, ``blocks.0``, ``blocks.1``...: the repeated blocks), ``"hidden_states"``
    (``hidden_states.0``, ...), or layer names and shell-style patterns of them; one layer
    kept warns.

    Raises:
      ValueError: in one line naming the closest layer names, when nothing matches.
    """
    names = list(shapes)
    if select is None:
        return names, None
    if select == BLOCKS:
        entries = [entry(name, str(shape)) for name, shape in shapes.items()]
        blocks = repeated_blocks(entries)
        if len(blocks) < 2:
            raise ValueError(no_match_message(BLOCKS, names) + " (no repeated blocks)")
        shape = "x".join(map(str, shapes[blocks[0]]))
        return (
            blocks,
            f"repeated blocks: the {len(blocks)} layers {blocks[0]} ... {blocks[-1]} ({shape})",
        )
    patterns = [f"{HIDDEN_STATES}.*"] if select == HIDDEN_STATES else [select]
    patterns = patterns if isinstance(select, str) else list(select)
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise ValueError(no_match_message(pattern, names))
    kept = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    warn_if_one_layer(kept)
    return kept, f"named: {', '.join(patterns)}"


def pooled(values, tokens: str, mask: np.ndarray | None) -> np.ndarray:
    """A stored layer (n, ...) with token layers (n, T, D) pooled, read ``_POOLED_ROWS``
    inputs at a time; other layers as they are."""
    if len(values.shape) != 3:
        return values
    n = values.shape[0]
    parts = []
    for start in range(0, n, _POOLED_ROWS):
        rows = None if mask is None else mask[start : start + _POOLED_ROWS]
        parts.append(pool_tokens(values[start : start + _POOLED_ROWS], tokens, rows))
    return np.concatenate(parts)


def _pooled_layer(layer: Layer, tokens: str, mask: np.ndarray | None) -> Layer:
    @contextlib.contextmanager
    def opener():
        with layer.open() as values:
            yield pooled(values, tokens, mask)

    n, length, width = layer.shape
    shape = (n, length * width) if tokens == "flatten" else (n, width)
    return layer._replace(shape=shape, dtype=np.result_type(layer.dtype, np.float32), open=opener)


def narrowed_source(
    source: ActivationSource, select: str | Sequence[str] | None, tokens: str
) -> tuple[ActivationSource, str | None, bool]:
    """``source`` with the layers ``select`` keeps (:func:`chosen_layers`), its token layers
    (n, T, D) pooled by ``tokens`` with its padding mask when read; also the line on the
    selection and whether any kept layer has tokens."""
    check_tokens(tokens)
    names, description = chosen_layers(dict(zip(source.names, source.shapes, strict=True)), select)
    entries = source.layers._entries
    has_tokens = any(len(entries[name].shape) == 3 for name in names)
    layers = {
        name: _pooled_layer(entries[name], tokens, source.mask)
        if len(entries[name].shape) == 3
        else entries[name]
        for name in names
    }
    narrowed = source._replace(
        names=tuple(names),
        shapes=tuple(layer.shape[1:] for layer in layers.values()),
        layers=LazyLayers(layers),
    )
    return narrowed, description, has_tokens


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (n, K) float32 of ``logits`` (n, K), computed in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def class_probabilities(source: ActivationSource, *, num_classes: int | None = None) -> np.ndarray:
    """The network's class probabilities (n, K) float32 on the source's inputs: the softmax
    of its ``logits`` when they were saved, else the one-hot rows of its ``predictions``.

    ``num_classes`` K defaults to the logits' width, or to the number of saved class names,
    or to one more than the largest label or prediction.

    Raises:
      ValueError: when the source has neither logits nor predictions, or ``num_classes``
        disagrees with the logits or is below a label or prediction.
    """
    if source.logits is not None:
        classes = source.logits.shape[1]
        if num_classes is not None and num_classes != classes:
            raise ValueError(
                f"{source.path}: num_classes is {num_classes} but 'logits' has {classes} columns"
            )
        return softmax(source.logits)
    if source.predictions is None:
        raise ValueError(f"{source.path}: no 'logits' or 'predictions' to give probabilities")
    largest = int(max(source.labels.max(), source.predictions.max()))
    named = largest + 1 if source.class_names is None else len(source.class_names)
    classes = named if num_classes is None else int(num_classes)
    if classes <= largest or min(source.labels.min(), source.predictions.min()) < 0:
        raise ValueError(
            f"{source.path}: classes must lie in 0..{classes - 1}; the labels and predictions "
            f"span {min(source.labels.min(), source.predictions.min())}..{largest}"
        )
    return np.eye(classes, dtype=np.float32)[source.predictions]


def narrowed_mapping(
    layers: Mapping, select: str | Sequence[str] | None, tokens: str, mask=None
) -> tuple[dict, str | None, bool]:
    """Activations given as {name: (n, ...)} narrowed as :func:`narrowed_source` does, with
    the padding ``mask`` (n, T), or the mapping's ``attention_mask`` (not a layer)."""
    check_tokens(tokens)
    layers = dict(layers)
    saved = layers.pop(MASK, None)
    mask = saved if mask is None else mask
    mask = None if mask is None else np.asarray(mask)
    arrays = {name: v if hasattr(v, "shape") else np.asarray(v) for name, v in layers.items()}
    names, description = chosen_layers({k: tuple(v.shape[1:]) for k, v in arrays.items()}, select)
    has_tokens = any(len(arrays[name].shape) == 3 for name in names)
    return {name: pooled(arrays[name], tokens, mask) for name in names}, description, has_tokens
