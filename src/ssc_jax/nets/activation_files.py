"""Per-layer activations saved by another framework, read lazily, one layer at a time.

:func:`read_activations` opens one of three layouts and returns an :class:`ActivationSource`
whose ``layers`` mapping reads a layer only when it is asked for:

``.npz``
    One array (n, ...) per layer, in the order they were saved (``np.savez(path, conv1=...,
    conv2=..., labels=...)``), plus the reserved keys ``labels`` (required, integers (n,)),
    ``predictions`` (integers (n,)) or ``logits`` ((n, classes); the predictions are then
    their argmax), ``images`` ((n, ...)), ``attention_mask`` ((n, T), the padding mask
    of token layers (n, T, D), nonzero for real tokens) and ``class_names`` (strings (K,),
    ``np.array(names)``). A member is loaded whole when its layer is read.
A folder with ``manifest.json``
    The manifest names ``.npy`` files in the folder (read memory-mapped, so a layer larger
    than RAM is fine)::

        {"layers": ["conv1.npy", "conv2.npy"],       # forward order; names "conv1", "conv2"
         "labels": "labels.npy",
         "predictions": "predictions.npy",           # optional; or "logits": "logits.npy"
         "images": "images.npy",                     # optional
         "attention_mask": "mask.npy",               # optional, for token layers
         "class_names": ["cat", "dog"]}              # optional, one name per class

    ``"layers"`` may instead be an object {layer name: file name}, in forward order.
``.safetensors``
    A file, or a folder of them (files in name order). Tensors are layers, except the
    reserved names above (in any of the files). Writers of safetensors sort tensors by dtype
    and name, so the forward order is lost; give it as a JSON list in the metadata,
    ``save_file(tensors, path, metadata={"layers": json.dumps(names)})`` (in a folder, each
    file lists its own layers, and the files' lists are joined in file order). Without it
    the header's order (sorted) is used. The class names, if given, are a JSON list in the
    metadata too, ``"class_names": json.dumps(names)``. Each layer is read in slices, never
    whole. bfloat16 and float8 cannot be read by NumPy: save them as float32.

The class names (optional in every layout) are distinct strings, one per logit column, or
without logits at least one per class the labels and predictions reach; the report then
names the classes by them instead of ``"0"`` .. ``"K-1"``.

Every problem is a one-line ``ValueError`` naming the file and the array; a file that is
truncated or damaged says so, with the reader's complaint.
:func:`~ssc_jax.nets.activation_source.class_probabilities` turns the saved logits or
predictions into the (n, K) class probabilities that the analysis takes.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "acts.npz")
>>> np.savez(path, conv1=np.ones((4, 3, 3, 2)), labels=[0, 1, 2, 1], logits=np.eye(4, 3))
>>> source = read_activations(path)
>>> source.names, source.shapes, source.predictions.tolist()
(('conv1',), ((3, 3, 2),), [0, 1, 2, 0])
>>> from ssc_jax import class_probabilities
>>> class_probabilities(source).shape
(4, 3)
"""

from __future__ import annotations

import contextlib
import json
import struct
import zipfile
import zlib
from pathlib import Path
from tokenize import TokenError

import numpy as np
from safetensors import SafetensorError, safe_open

from ssc_jax.nets.activation_source import (
    CLASS_NAMES,
    RESERVED,
    ActivationSource,
    Layer,
    assemble_source,
)

MANIFEST = "manifest.json"
AGAIN = "save the activations again"
# What NumPy raises for a damaged .npy header (it parses the header as a Python literal) or
# a damaged zip member.
_NUMPY_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    TokenError,
    zipfile.BadZipFile,
    zlib.error,
)

_SAFETENSORS_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
}


def _cause(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _damaged(path, what: str, error: BaseException) -> ValueError:
    """The one-line error for ``what`` in ``path`` that cannot be read because of ``error``."""
    return ValueError(
        f"{path}: {what} cannot be read; the file is truncated or damaged ({_cause(error)}); "
        + AGAIN
    )


def _load_npy(path: Path, name: str) -> np.ndarray:
    """``path`` memory-mapped (read-only), with pickled objects refused by name."""
    if not path.is_file():
        raise ValueError(f"{path}: file for array {name!r} not found")
    try:
        with path.open("rb") as file:
            if file.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise ValueError("no .npy header")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _NUMPY_ERRORS as error:
        raise _damaged(path, f"array {name!r}", error) from None


def _npz_member(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except _NUMPY_ERRORS as error:
        raise _damaged(path, f"array {key!r}", error) from None


def _npz_header(path: Path, archive: np.lib.npyio.NpzFile, key: str):
    """(shape, dtype) of an npz member from its header, without reading its values."""
    with archive.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            array = _npz_member(path, key)
            shape, dtype = array.shape, array.dtype
    return tuple(shape), dtype


def _read_npz(path: Path) -> ActivationSource:
    layers: dict[str, Layer] = {}
    extras = {}
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a readable .npz archive (not a zip file; truncated or damaged); {AGAIN}"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except _NUMPY_ERRORS as error:
        raise _damaged(path, "the .npz archive", error) from None
    with archive:
        for key in archive.files:
            load = lambda key=key: _npz_member(path, key)
            if key in RESERVED:
                extras[key] = (str(path), load)
                continue
            try:
                shape, dtype = _npz_header(path, archive, key)
            except _NUMPY_ERRORS as error:
                raise _damaged(path, f"array {key!r}", error) from None
            if key == CLASS_NAMES:
                if dtype.hasobject:  # pickled, which is never loaded
                    raise ValueError(
                        f"{path}: array {key!r} holds Python objects; save the names as "
                        "np.array(names), an array of strings"
                    )
                extras[key] = (str(path), load)
                continue
            opener = lambda load=load: contextlib.nullcontext(load())
            layers[key] = Layer(file=str(path), shape=shape, dtype=dtype, open=opener)
    return assemble_source(path, layers, extras)


def _read_manifest(folder: Path) -> ActivationSource:
    where = folder / MANIFEST
    try:
        manifest = json.loads(where.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: not readable JSON ({_cause(error)}); write it again") from None
    if not isinstance(manifest, dict) or "layers" not in manifest:
        raise ValueError(f'{where}: must be an object with a "layers" list of .npy files')
    files = manifest["layers"]
    if isinstance(files, list):
        files = {Path(str(file)).name.removesuffix(".npy"): file for file in files}
    if not isinstance(files, dict):
        raise ValueError(f'{where}: "layers" must be a list of files or {{name: file}}')
    for name in [*files, *(key for key in RESERVED if key in manifest)]:
        if not isinstance(files.get(name, manifest.get(name)), str):
            raise ValueError(f"{where}: the file of array {name!r} must be a file name string")
    layers = {}
    for name, file in files.items():
        array = _load_npy(folder / file, name)
        opener = lambda path=folder / file, name=name: contextlib.nullcontext(_load_npy(path, name))
        layers[name] = Layer(
            file=str(folder / file), shape=array.shape, dtype=array.dtype, open=opener
        )
    extras = {
        key: (str(folder / manifest[key]), lambda key=key: _load_npy(folder / manifest[key], key))
        for key in RESERVED
        if key in manifest
    }
    if CLASS_NAMES in manifest:
        extras[CLASS_NAMES] = (str(where), lambda: manifest[CLASS_NAMES])
    return assemble_source(where, layers, extras)


class _Slices:
    """A safetensors tensor read by slices (``a[:, i:j]``), shaped like a NumPy array."""

    def __init__(self, tensor, dtype: np.dtype):
        self._tensor = tensor
        self.shape = tuple(tensor.get_shape())
        self.dtype = dtype

    def __getitem__(self, index) -> np.ndarray:
        return self._tensor[index]


def _header(path: Path) -> dict:
    """The JSON header of a safetensors file, in stored order."""
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: empty or truncated safetensors file; {AGAIN}")
        size = struct.unpack("<Q", head)[0]
        if size > path.stat().st_size - 8:
            raise ValueError(
                f"{path}: not a safetensors file, or truncated (its header would be {size:,} "
                f"bytes, the file has {path.stat().st_size:,}); {AGAIN}"
            )
        try:
            header = json.loads(file.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path}: not a safetensors file (bad header); {AGAIN}") from None
    try:
        with safe_open(str(path), framework="np"):  # checks the header against the data
            return header
    except SafetensorError as error:
        raise _damaged(path, "the safetensors file", error) from None


def _tensor(path: Path, name: str) -> np.ndarray:
    try:
        with safe_open(str(path), framework="np") as file:
            return file.get_tensor(name)
    except (OSError, SafetensorError) as error:
        raise _damaged(path, f"array {name!r}", error) from None


@contextlib.contextmanager
def _safetensors_slices(path: Path, name: str, dtype: np.dtype):
    try:
        file = safe_open(str(path), framework="np")
    except (OSError, SafetensorError) as error:
        raise _damaged(path, f"array {name!r}", error) from None
    with file:
        yield _Slices(file.get_slice(name), dtype)


def _metadata_list(file: Path, metadata: dict[str, str], key: str) -> list:
    """The JSON list under ``key`` of a safetensors file's metadata."""
    try:
        listed = json.loads(metadata[key])
    except json.JSONDecodeError:
        listed = None
    if not isinstance(listed, list):
        raise ValueError(f"{file}: metadata {key!r} must be a JSON list of names")
    return listed


def _read_safetensors(path: Path, files: list[Path]) -> ActivationSource:
    layers: dict[str, Layer] = {}
    extras = {}
    order = None
    for file in files:
        header = _header(file)
        metadata = header.pop("__metadata__", None) or {}
        if "layers" in metadata:
            order = [*(order or []), *_metadata_list(file, metadata, "layers")]
        if CLASS_NAMES in metadata:
            names = _metadata_list(file, metadata, CLASS_NAMES)
            if CLASS_NAMES in extras and extras[CLASS_NAMES][1]() != names:
                raise ValueError(
                    f"{file}: metadata {CLASS_NAMES!r} differs from that of "
                    f"{extras[CLASS_NAMES][0]}; give the same names, or give them once"
                )
            extras.setdefault(CLASS_NAMES, (str(file), lambda names=names: names))
        for name, info in header.items():
            if name in layers or name in extras:
                raise ValueError(f"{file}: array {name!r} is also in another file")
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise ValueError(
                    f"{file}: array {name!r} has dtype {info['dtype']}, which NumPy cannot "
                    "read; save it as float32"
                )
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            if name in RESERVED:
                extras[name] = (str(file), lambda file=file, name=name: _tensor(file, name))
                continue
            opener = lambda file=file, name=name, dtype=dtype: _safetensors_slices(
                file, name, dtype
            )
            layers[name] = Layer(
                file=str(file), shape=tuple(info["shape"]), dtype=dtype, open=opener
            )
    if order is not None:
        unknown = sorted(set(order) - set(layers))
        if unknown or len(order) != len(layers):
            raise ValueError(
                f"{path}: metadata 'layers' must list every layer once; it lists {order}, "
                f"the layers are {sorted(layers)}"
            )
        layers = {name: layers[name] for name in order}
    return assemble_source(path, layers, extras)


def read_activations(path: str | Path) -> ActivationSource:
    """Open saved activations (``.npz``, a folder with ``manifest.json``, or safetensors).

    Only headers, the small reserved arrays (labels, predictions, images) and the class
    names are read now; layers are read when used. See the module docstring for the layouts.

    Raises:
      ValueError: naming the file and the array, for a missing file or ``labels``, labels of
        the wrong length or not integers, layers with differing numbers of rows, a
        non-numeric or empty array, no layer arrays at all, or class names that are not
        strings, repeat, or are fewer than the classes.
    """
    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return _read_manifest(path)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{path}: a folder needs a {MANIFEST} or .safetensors files")
        return _read_safetensors(path, files)
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, [path])
    raise ValueError(f"{path}: not an .npz, .safetensors or a folder with a {MANIFEST}")
