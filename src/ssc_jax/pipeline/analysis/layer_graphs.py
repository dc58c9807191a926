"""The SSC graphs of one checkpoint: activation Grams, the batched solve, and its cache.

A checkpoint's graphs may be stored in a cache folder (the commands use ``<run>/ssc_graphs/``)
under a key made of the analysis set and the solver settings, so a later command on the same
checkpoint loads them instead of solving again. The Grams are recomputed each time (one
forward pass) because linear CKA needs them and they are dense.

Memory: the coefficients are kept as one SciPy CSR array per layer, converted as each group
of layers comes back from the solver (groups of at most ``SOLVE_GROUP_BYTES`` of dense
coefficients), so no (L, n, n) dense coefficient or affinity stack exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ssc_jax.nets.capture import activation_grams, capture_activations, predict
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.analysis.inputs import AnalysisInputs, InputError, check_fits_run, preprocess
from ssc_jax.pipeline.analysis.measures import RowMoments
from ssc_jax.pipeline.store.graph_store import (
    DIAGNOSTICS,
    OWN,
    GraphFileError,
    StoredGraphs,
    cache_graphs,
    graph_path,
    load_graphs,
    sparse_layers,
)
from ssc_jax.solver.convergence import ConvergenceWarning
from ssc_jax.solver.solve import ssc_gram
from ssc_jax.training.checkpoints import CheckpointError, load_checkpoint

CACHE_DIR = "ssc_graphs"

# Most bytes of dense float32 coefficients one solver call returns: layers are solved in
# groups of max(1, SOLVE_GROUP_BYTES // (4 n^2)), one group at n = 500 and L <= 1000.
SOLVE_GROUP_BYTES = 2**30


class LayerGraphs(NamedTuple):
    """The L analysed layers of one checkpoint on n inputs.

    Attributes:
      layers: the L layer names, forward order.
      grams: (L, n, n) linear-kernel Grams ``X_l X_l^T`` of the flattened activations (an
        array, or an ``np.memmap``: its consumers read it a layer or row block at a time).
      coef: L float32 ``scipy.sparse.csr_array`` (n, n), the SSC coefficients, rows rebuild
        rows.
      diagnostics: name -> (L,) solver diagnostics (``graph_store.DIAGNOSTICS``), and under
        ``graph_store.OWN`` the solver's own, name -> (L,).
      probs: (n, K) the network's class probabilities on the inputs, None if not known.
      key: what the cache key is made of (inputs, layers, solver settings).
      path: the cached ``.npz`` file, or None without a cache (or if it could not be written).
      moments: the inputs' feature sums and the layers' feature counts, for the measures of
        the row-centred Grams (``measures.RowMoments``); None where only Grams were given.
    """

    layers: list[str]
    grams: np.ndarray
    coef: list[sp.csr_array]
    diagnostics: dict
    probs: np.ndarray | None
    key: dict
    path: Path | None
    moments: RowMoments | None = None

    @property
    def affinity(self) -> list[sp.csr_array]:
        """L symmetric affinity graphs ``|C| + |C|^T``, float32 CSR (n, n)."""
        return [sp.csr_array(abs(c) + abs(c).T) for c in self.coef]

    @property
    def measure_inputs(self) -> dict:
        """What the similarity measures take (``measures.cross_similarity_matrices``)."""
        return {"graphs": self.affinity, "grams": self.grams, "moments": self.moments}


def solve_layers(
    grams, solver: SolverSettings, *, progress: bool, init: Sequence | None = None
) -> tuple[list[sp.csr_array], dict]:
    """SSC of each layer's Gram in ``grams`` (L, n, n), solved in groups of layers whose
    dense coefficients fit ``SOLVE_GROUP_BYTES``, each group's converted to CSR as it
    comes back. ``init``: L (n, n) sparse or dense starting coefficients, or None. With
    ``progress``, a bar counts the layers solved.

    Returns the L float32 CSR coefficient matrices and the (L,) diagnostics by name, the
    solver's own (``SSCResult.diagnostics``) under ``OWN``.
    """
    count, n = len(grams), grams.shape[-1]
    size = max(1, SOLVE_GROUP_BYTES // (4 * n * n))
    # Every process of a jax.distributed job goes on to the analysis.
    options = dataclasses.replace(solver.options, gather="all", progress=False)
    coef, parts = [], []
    bar = tqdm(total=count, desc="SSC", unit="layer", disable=not progress)
    for start in range(0, count, size):
        stop = min(count, start + size)
        start_at = None
        if init is not None:
            start_at = np.stack(
                [m.toarray() if sp.issparse(m) else np.asarray(m) for m in init[start:stop]]
            )
        with warnings.catch_warnings():
            # warn_unconverged names the layers, once for all of them
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = ssc_gram(
                np.asarray(grams[start:stop]), solver=solver.solver, options=options, init=start_at
            )
        coef += sparse_layers(np.asarray(result.coef, dtype=np.float32))
        parts.append(
            {name: np.asarray(getattr(result, name)) for name in DIAGNOSTICS}
            | {OWN: {k: np.asarray(v) for k, v in result.diagnostics._asdict().items()}}
        )
        bar.update(stop - start)
    bar.close()
    diagnostics = {name: np.concatenate([p[name] for p in parts]) for name in DIAGNOSTICS}
    own = {k: np.concatenate([p[OWN][k] for p in parts]) for k in parts[0][OWN]}
    return coef, diagnostics | {OWN: own}


class CheckpointGrams(NamedTuple):
    """What one forward pass of a checkpoint on the analysis inputs gives: the L layer
    names, their (L, n, n) Grams (an array or ``np.memmap``) and the (n, K) class
    probabilities; and the layers' ``moments``, from another pass when first used."""

    layers: list[str]
    grams: np.ndarray
    probs: np.ndarray
    moments: RowMoments | None = None


# Most inputs of the pass that sums the features: it holds every layer's features at once.
MOMENTS_BATCH = 64


def _feature_moments(model, images: np.ndarray, layers) -> tuple[np.ndarray, list[int]]:
    """Each input's feature sum (L, n) and each layer's feature count (L,), from one
    forward pass in batches of ``MOMENTS_BATCH``."""
    sums, widths = {}, {}
    for start in range(0, len(images), MOMENTS_BATCH):
        batch = capture_activations(model, images[start : start + MOMENTS_BATCH], layers)
        for name, values in batch.items():
            flat = values.reshape(len(values), -1)
            sums.setdefault(name, []).append(flat.sum(axis=1, dtype=np.float64))
            widths[name] = flat.shape[1]
    return np.stack([np.concatenate(sums[name]) for name in widths]), list(widths.values())


def checkpoint_grams(
    run_dir: str | Path,
    epoch: int,
    inputs: AnalysisInputs,
    *,
    analysis: AnalysisSet,
    memory_budget_bytes: int | None = None,
    progress: bool = False,
) -> CheckpointGrams:
    """Load the checkpoint of ``epoch`` in ``run_dir`` and run it on ``inputs`` (with
    ``progress``, a bar over the inputs). A damaged checkpoint raises ``InputError`` naming
    the epoch and file."""
    try:
        model, info = load_checkpoint(Path(run_dir), epoch)
    except CheckpointError as err:
        raise InputError(str(err)) from None
    check_fits_run(inputs, info, run_dir)
    images = preprocess(inputs.images, info)
    names, grams = activation_grams(
        model,
        images,
        layers=analysis.layers,
        batch_size=analysis.batch_size,
        memory_budget_bytes=memory_budget_bytes,
        spill_dir=tempfile.gettempdir(),
        progress=progress,
    )
    probs = np.asarray(predict(model, images, batch_size=analysis.batch_size))
    moments = RowMoments(lambda: _feature_moments(model, images, analysis.layers))
    return CheckpointGrams(list(names), grams, probs, moments)


def checkpoint_graphs(
    run_dir: str | Path,
    epoch: int,
    inputs: AnalysisInputs,
    *,
    analysis: AnalysisSet,
    solver: SolverSettings,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    init: Sequence | None = None,
) -> LayerGraphs:
    """The graphs of the checkpoint of ``epoch`` in ``run_dir`` on ``inputs``: its
    ``checkpoint_grams``, then ``solved_graphs``."""
    computed = checkpoint_grams(
        run_dir,
        epoch,
        inputs,
        analysis=analysis,
        memory_budget_bytes=solver.memory_budget_bytes,
        progress=progress,
    )
    return solved_graphs(
        computed,
        inputs,
        epoch=epoch,
        solver=solver,
        cache_dir=cache_dir,
        progress=progress,
        init=init,
    )


def solved_graphs(
    computed: CheckpointGrams,
    inputs: AnalysisInputs,
    *,
    epoch: int,
    solver: SolverSettings,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    init: Sequence | None = None,
) -> LayerGraphs:
    """The SSC graphs of a checkpoint's ``computed`` Grams, solved or loaded from
    ``cache_dir``. With a ``cache_dir`` a new solution is stored there; without one nothing
    is written.

    ``init``: L (n, n) coefficients (sparse or dense) to start the solver from, such as a
    neighbouring epoch's or tau's; the solution is the same to the solver's tolerance,
    reached in fewer iterations."""
    names, grams, probs, moments = computed
    key = {"inputs": inputs.key, "layers": names, "solver": solver.key()}
    path = None if cache_dir is None else graph_path(cache_dir, epoch, key)
    if path is not None and path.exists():
        stored = _cached(path, names, grams.shape[-1])
        if stored is not None:
            warn_unconverged(names, stored.diagnostics, solver, epoch)
            return LayerGraphs(
                names, grams, stored.coef, stored.diagnostics, probs, key, path, moments
            )
    if init is not None and (
        len(init) != len(names) or any(m.shape != grams.shape[1:] for m in init)
    ):
        init = None  # another layer selection or N: start cold
    coef, diagnostics = solve_layers(grams, solver, progress=progress, init=init)
    warn_unconverged(names, diagnostics, solver, epoch)
    if path is not None:
        path = cache_graphs(path, names, coef, diagnostics, key)
    return LayerGraphs(names, grams, coef, diagnostics, probs, key, path, moments)


def unconverged_layers(layers: list[str], diagnostics: dict[str, np.ndarray]) -> list[str]:
    """The layers whose SSC solve stopped before its stopping tests passed."""
    converged = np.asarray(diagnostics["converged"], dtype=bool)
    return [name for name, ok in zip(layers, converged, strict=True) if not ok]


def warn_unconverged(
    layers: list[str],
    diagnostics: dict[str, np.ndarray],
    solver: SolverSettings,
    epoch: int | None,
) -> None:
    """One warning when some layers' solves stopped unconverged, saying how far they were;
    ``epoch`` is the checkpoint's, None for a network given by its activations."""
    missed = unconverged_layers(layers, diagnostics)
    if not missed:
        return
    off = ~np.asarray(diagnostics["converged"], dtype=bool)
    gap = float(np.max(np.asarray(diagnostics["duality_gap"])[off]))
    primal = float(np.max(np.asarray(diagnostics["primal_residual"])[off]))
    where = "the network" if epoch is None else f"epoch {epoch}"
    shown = ", ".join(missed[:4]) + (f" and {len(missed) - 4} more" if len(missed) > 4 else "")
    if solver.method == "admm":
        cap = f"max_iterations = {solver.admm.max_iterations}"
        largest, remedy = f"largest primal residual {primal:.2g}", "a larger --max-iter"
    else:
        cap = f"max_rounds = {solver.working_set.max_rounds}"
        largest = f"largest KKT violation {primal:.2g}"
        remedy = "a larger --max-rounds or --working-set-size"
    warnings.warn(
        f"SSC did not converge on {len(missed)} of {len(layers)} layer problems of "
        f"{where} ({shown}) within {cap}: largest certified gap {gap:.2g} (gap_tol "
        f"{solver.solver.gap_tol:.2g}), {largest}; metrics.json lists them as "
        f"unconverged_layers; pass {remedy}",
        RuntimeWarning,
        stacklevel=3,
    )


def _cached(path: Path, names: list[str], n: int) -> StoredGraphs | None:
    """The graphs cached in ``path``; None, with a warning and the file removed, when it is
    damaged, holds other layers or inputs, or lacks the solver's own diagnostics (a file of
    an earlier version)."""
    try:
        stored = load_graphs(path)
    except GraphFileError as err:
        problem = str(err)
    else:
        if stored.layers != names or any(c.shape != (n, n) for c in stored.coef):
            problem = f"{path} holds graphs of other layers or inputs"
        elif OWN not in stored.diagnostics:
            problem = f"{path} was written by an earlier version, without the solver's diagnostics"
        else:
            return stored
    warnings.warn(f"cached SSC graphs removed, solving again: {problem}", stacklevel=3)
    with contextlib.suppress(OSError):  # a read-only cache: the new solution is not stored
        path.unlink()
    return None


def run_cache(run_dir: str | Path, cache: bool) -> Path | None:
    """The graph cache folder of the run in ``run_dir``, or None when ``cache`` is off."""
    return Path(run_dir) / CACHE_DIR if cache else None


GraphSource = Path | StoredGraphs
"""What a graph file of an output folder is made from: the cached file, or the graphs."""


def export_name(graphs: LayerGraphs, epoch: int, folder: str | Path = "graphs") -> str:
    """Where the graphs of ``epoch`` go in an output folder, relative to it."""
    return graph_path(folder, epoch, graphs.key).as_posix()


def export_source(graphs: LayerGraphs) -> GraphSource:
    """The cached file of ``graphs``, or without one their coefficients, diagnostics and key
    (the Grams, as large, are not kept)."""
    if graphs.path is not None:
        return graphs.path
    return StoredGraphs(
        layers=graphs.layers, coef=graphs.coef, diagnostics=graphs.diagnostics, settings=graphs.key
    )
