"""A torch model's layer activations saved to disk, streamed batch by batch, in the layouts
the file door reads (:mod:`ssc_jax.nets.activation_files`).

The model runs once over its inputs (after a first batch that sizes the layers): each batch's
pooled (b, D) outputs go straight into their rows of the file, so memory holds one batch of
activations at a time, whatever n. Rows are the inputs in the order they were given, with
their labels and the model's logits beside them. ``.safetensors``: one file, its header
written first (the forward order, the pooling and any class names in its metadata), each
tensor then filled in place. Otherwise a folder of ``.npy`` files with ``manifest.json``. The
output is written under a temporary name beside ``path`` and renamed when complete, so it is
never seen half-written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ssc_jax.core.checks import check_positive
from ssc_jax.nets.activation_files import MANIFEST
from ssc_jax.nets.activation_source import CLASS_NAMES, RESERVED, checked_class_names
from ssc_jax.nets.tokens import DEFAULT_TOKENS
from ssc_jax.nets.torch_capture import evaluating, surveyed
from ssc_jax.nets.torch_layers import Layers
from ssc_jax.nets.torch_passes import Passes, Survey, full_pass

_SAFETENSORS_CODES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
# safetensors aligns the start of its data to 8 bytes.
_ALIGN = 8


def _layouts(found: Survey, labels: np.ndarray) -> dict[str, tuple[tuple, np.dtype]]:
    """{array name: (shape, dtype)} of what is saved: the layers in forward order, then the
    labels and the logits."""
    arrays = {name: ((found.n, d), np.dtype(np.float32)) for name, d in found.dims.items()}
    taken = sorted(set(arrays) & set(RESERVED))
    if taken:
        raise ValueError(f"layer names {taken} are reserved in activation files; select others")
    arrays["labels"] = ((len(labels),), np.dtype(np.int64))
    if found.classes is not None:
        arrays["logits"] = ((found.n, found.classes), np.dtype(np.float32))
    return arrays


def _safetensors_arrays(
    path: Path, arrays: dict, metadata: dict[str, str], class_names: tuple[str, ...] | None
) -> dict:
    """Create the ``.safetensors`` file at ``path`` for ``arrays`` {name: (shape, dtype)},
    the class names (if any) a JSON list in its metadata, and return {name: writable memory
    map} of each tensor's bytes."""
    named = {} if class_names is None else {CLASS_NAMES: json.dumps(class_names)}
    header: dict = {"__metadata__": {**metadata, **named}}
    offset = 0
    for name, (shape, dtype) in arrays.items():
        size = math.prod(shape) * dtype.itemsize
        code = _SAFETENSORS_CODES[dtype]
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % _ALIGN)
    with open(path, "wb") as file:
        file.write(len(text).to_bytes(8, "little"))
        file.write(text)
        file.truncate(8 + len(text) + offset)
    start = 8 + len(text)
    return {
        name: np.memmap(
            path, dtype, "r+", offset=start + header[name]["data_offsets"][0], shape=shape
        )
        for name, (shape, dtype) in arrays.items()
    }


def _npy_arrays(
    folder: Path, arrays: dict, metadata: dict[str, str], class_names: tuple[str, ...] | None
) -> dict:
    """Create ``folder`` with a ``.npy`` file per array and ``manifest.json`` (with the class
    names, if any); return {name: writable memory map}."""
    folder.mkdir()
    layers = {name: f"{name}.npy" for name in arrays if name not in RESERVED}
    manifest = {"layers": layers, **{k: f"{k}.npy" for k in arrays if k in RESERVED}}
    if class_names is not None:
        manifest[CLASS_NAMES] = list(class_names)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "metadata": metadata}, indent=1))
    return {
        name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype, shape)
        for name, (shape, dtype) in arrays.items()
    }


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed to ``path`` on success, removed on failure."""
    if path.exists():
        raise ValueError(f"{path} exists; save the activations to a new path")
    staged = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield staged
        os.replace(staged, path)
    finally:
        if staged.is_dir():
            shutil.rmtree(staged)
        elif staged.exists():
            staged.unlink()


def save_torch_activations(
    model,
    inputs,
    path: str | Path,
    *,
    layers: Layers = None,
    tokens: str = DEFAULT_TOKENS,
    labels=None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
    device="cpu",
) -> Path:
    """Save a torch model's per-layer activations on n inputs to ``path``; return ``path``.

    ``path`` ending in ``.safetensors`` gives one safetensors file, any other a folder of
    ``.npy`` files with ``manifest.json``; either is what ``read_activations``, ``python -m
    ssc_jax.run activations`` and ``compare`` read. Each layer is saved as float32 (n, D),
    token outputs pooled by ``tokens``, with ``labels`` (n,) and, when the model outputs
    (b, K) logits, ``logits`` (n, K), rows in the inputs' order, and ``class_names`` when
    given, which the report then names the classes by.

    Args:
      model, inputs, layers, tokens, batch_size, device: as for
        :func:`ssc_jax.nets.torch_capture.torch_activation_grams`.
      labels: (n,) integer classes; default those the batches carry (a DataLoader's (inputs,
        labels) tuples, a mapping's ``labels``).
      class_names: the K names of the classes (strings, each once): one per logit, or
        without logits at least one per class the labels reach.

    Raises:
      ValueError: in one line, when ``path`` exists, no labels are known, the class names do
        not fit, or as ``torch_activation_grams`` does.
    """
    check_positive("batch_size", batch_size)
    path = Path(path)
    with evaluating(model, device) as torch:
        passes = Passes.of(
            model, inputs, layers=layers, tokens=tokens, batch_size=batch_size, device=device
        )
        with torch.no_grad():
            found = surveyed(passes)
            given = found.labels if labels is None else np.asarray(labels, dtype=np.int64)
            if given is None:
                raise ValueError("the batches carry no labels; pass labels= (n,)")
            if given.shape != (found.n,):
                raise ValueError(f"labels have shape {given.shape}, the inputs n = {found.n}")
            arrays = _layouts(found, given)
            if class_names is not None:
                seen = int(given.max()) + 1
                class_names = checked_class_names(
                    str(path), class_names, seen=seen, width=found.classes
                )
            metadata = {
                "layers": json.dumps(list(found.dims)),
                "tokens": passes.tokens if passes.token_layers else "none",
                "selection": passes.selection.description,
            }
            with _staged(path) as staged:
                create = _safetensors_arrays if path.suffix == ".safetensors" else _npy_arrays
                files = create(staged, arrays, metadata, class_names)
                files["labels"][:] = given
                _fill(passes, found, files)
                for array in files.values():
                    array.flush()
                del files  # close the memory maps before the rename
    return path


def _fill(passes: Passes, found: Survey, files: dict) -> None:
    """One pass over the inputs, each batch's layers written into their rows of ``files``."""

    def write(start: int, batch: dict) -> None:
        for name, values in batch.items():
            files[name][start : start + len(values)] = values

    modules = {m: name for m, name in passes.selection.modules.items() if name in found.dims}
    logits = full_pass(passes, modules, found, write, number=2)
    if "logits" in files:
        files["logits"][:] = logits
