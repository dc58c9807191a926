"""Compressed storage of SSC coefficient matrices, keyed by checkpoint and solver settings.

One ``.npz`` file holds the L coefficient matrices of one checkpoint on one analysis set,
with the layer names, the solver's diagnostics and the settings that produced them. The
diagnostics are those of ``DIAGNOSTICS``, which every solver reports, and under ``OWN`` the
solver's own by their names (``SSCResult.diagnostics``). A layer is stored as CSR
(``scipy.sparse`` components) when that is smaller than dense, which it is for SSC at the
paper's tau; the whole file is zlib-compressed either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ssc_jax.solver.distributed import is_writer

DIAGNOSTICS = (
    "iterations",
    "converged",
    "primal_residual",
    "dual_residual",
    "duality_gap",
    "objective",
    "verified",
)
# Diagnostics that files of earlier versions lack; they read back as NaN.
LATER_DIAGNOSTICS = ("verified",)
# The key of the solver's own diagnostics, name -> (L,), in a diagnostics mapping; files of
# earlier versions lack them.
OWN = "own"


class GraphFileError(ValueError):
    """A graph file that cannot be read: truncated, altered or not written by ``save_graphs``."""


class StoredGraphs(NamedTuple):
    """What one file holds. ``coef`` is L float32 ``scipy.sparse.csr_array`` (n, n), rows
    reconstructing rows; ``diagnostics`` maps each of ``DIAGNOSTICS`` to (L,) and ``OWN``
    to the solver's own, name -> (L,), when the file has them."""

    layers: list[str]
    coef: list[sp.csr_array]
    diagnostics: dict
    settings: dict


def sparse_layers(coef: Iterable) -> list[sp.csr_array]:
    """Each (n, n) layer of ``coef`` (an (L, n, n) array or a sequence of dense or sparse
    matrices) as a float32 CSR array without explicit zeros, converted one at a time."""
    out = []
    for c in coef:
        m = sp.csr_array(c, dtype=np.float32)
        m.eliminate_zeros()
        out.append(m)
    return out


def dense_stack(coef: Sequence) -> np.ndarray:
    """(L, n, n) dense float32 copy of L sparse layers: L n^2 entries, for small n only."""
    return np.stack([np.asarray(c.toarray(), dtype=np.float32) for c in coef])


def settings_key(settings: Mapping) -> str:
    """A short stable hash of JSON-serialisable ``settings`` (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def graph_path(cache_dir: str | Path, epoch: int, settings: Mapping) -> Path:
    """Where the graphs of checkpoint ``epoch`` under ``settings`` live in ``cache_dir``."""
    return Path(cache_dir) / f"epoch_{epoch:04d}_{settings_key(settings)}.npz"


def _sparse_pays(nnz: int, n: int) -> bool:
    """CSR costs 8 bytes per nonzero (value + column) plus the row pointers; dense 4 per cell."""
    return 8 * nnz + 4 * (n + 1) < 4 * n * n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Remove the temporary files of ``path`` left by killed writers (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.stem}.*.tmp.npz"):
        pid = tmp.name[len(path.stem) + 2 : -len(".tmp.npz")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def save_graphs(
    path: str | Path,
    layers: Sequence[str],
    coef: Sequence,
    diagnostics: Mapping,
    settings: Mapping,
) -> Path:
    """Write L coefficient matrices ``coef`` (an (L, n, n) array, or L sparse or dense
    (n, n) matrices) with their layer names, diagnostics (each of ``DIAGNOSTICS`` (L,), and
    the solver's own under ``OWN`` if given) and settings.

    The file appears atomically: it is written beside ``path`` and renamed into place.
    """
    coef = sparse_layers(coef)
    shapes = {c.shape for c in coef}
    if len(coef) != len(layers) or len(shapes) != 1 or len({*shapes.pop()}) != 1:
        raise ValueError(
            f"coef must be L = len(layers) = {len(layers)} matrices (n, n); got "
            f"{[c.shape for c in coef]}"
        )
    n = coef[0].shape[0]
    arrays: dict[str, np.ndarray] = {
        "layers": np.asarray(list(layers), dtype=str),
        "settings_json": np.asarray(json.dumps(dict(settings), sort_keys=True, default=str)),
        "n": np.asarray(n),
    }
    for name in DIAGNOSTICS:
        arrays[f"diag_{name}"] = np.asarray(diagnostics[name])
    for name, values in diagnostics.get(OWN, {}).items():
        arrays[f"own_{name}"] = np.asarray(values)
    for i, m in enumerate(coef):
        if _sparse_pays(m.nnz, n):
            arrays[f"c{i}_data"], arrays[f"c{i}_indices"] = m.data, m.indices
            arrays[f"c{i}_indptr"] = m.indptr
        else:
            arrays[f"c{i}_dense"] = m.toarray()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def cache_graphs(
    path: Path, layers: Sequence[str], coef: Sequence, diagnostics: Mapping, settings: Mapping
) -> Path | None:
    """`save_graphs` into a graph cache, by the process that writes (process 0 of a
    ``jax.distributed`` job, where the others hold no solution): the path stored, or None
    where nothing was, with a warning if the write failed."""
    if not is_writer():
        return None
    try:
        return save_graphs(path, layers, coef, diagnostics, settings)
    except OSError as err:
        warnings.warn(f"could not store the SSC graphs in {path.parent}: {err}", stacklevel=3)
        return None


def load_graphs(path: str | Path) -> StoredGraphs:
    """Read a file written by ``save_graphs``; ``coef`` comes back as L float32 CSR arrays
    (layers stored dense, as in files of earlier versions, are converted one at a time).

    Raises:
      GraphFileError: naming ``path``, when the file is damaged; ``FileNotFoundError`` when
        there is none.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    try:
        return _read(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        text = " ".join(str(err).split())[:200]
        raise GraphFileError(f"{path} is damaged ({type(err).__name__}: {text})") from None


def _read(path: str | Path) -> StoredGraphs:
    with np.load(path, allow_pickle=False) as f:
        layers = [str(s) for s in f["layers"]]
        n = int(f["n"])
        coef = []
        for i in range(len(layers)):
            if f"c{i}_dense" in f:
                coef += sparse_layers([f[f"c{i}_dense"]])
            else:
                parts = (f[f"c{i}_data"], f[f"c{i}_indices"], f[f"c{i}_indptr"])
                m = sp.csr_array(parts, shape=(n, n), dtype=np.float32)
                m.check_format(full_check=True)
                coef.append(m)
        diagnostics = {
            name: f[f"diag_{name}"]
            if f"diag_{name}" in f or name not in LATER_DIAGNOSTICS
            else np.full(len(layers), np.nan)
            for name in DIAGNOSTICS
        }
        own = {key[len("own_") :]: f[key] for key in f.files if key.startswith("own_")}
        if own:
            diagnostics[OWN] = own
        settings = json.loads(str(f["settings_json"]))
    return StoredGraphs(layers, coef, diagnostics, settings)
