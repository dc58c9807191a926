"""``python -m ssc_jax.run sparse RUN --layer NAME --n N``: one layer's SSC at large N.

One layer of a checkpoint on N stratified inputs of a split, solved by ``ssc_sparse``
without forming the (N, N) Gram or a dense C (N = 50,000: 10 GB each in float32), so that
what the other commands solve for every layer at a few thousand inputs is solved here for
one layer on a whole training set. The output folder, written atomically, holds
``coef.npz`` (C, ``scipy.sparse.save_npz``), ``inputs.npz`` (the inputs' indices in the
split and their labels) and ``metrics.json`` (the certified gap, the rounds, N, d, tau and
the seconds of each phase).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ssc_jax._version import __version__
from ssc_jax.pipeline.analysis.config import COMMAND_SETTINGS, AnalysisSet
from ssc_jax.pipeline.analysis.inputs import (
    InputError,
    check_fits_run,
    held_out_data,
    load_inputs,
    preprocess,
    resolve_epoch,
    run_info,
)
from ssc_jax.pipeline.cli.arguments import (
    ANALYSIS_OPTIONS,
    SOLVER_OPTIONS,
    WORKING_SET_OPTIONS,
    Option,
    add_options,
    changed,
    option_values,
)
from ssc_jax.pipeline.store.locks import folder_lock
from ssc_jax.pipeline.store.outputs import atomic_output_dir, check_output_dir, write_json
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.working_set import WorkingSet

KIND = "sparse"
# The inputs and the solver settings this command takes: one layer (--layer), not a
# selection; the working set's tau and gap_tol, at the commands' default gap.
_INPUT_OPTIONS = tuple(o for o in ANALYSIS_OPTIONS if o.field != "layers")
_SOLVER_OPTIONS = (
    Option("tau", "--tau"),
    Option("gap_tol", "--gap-tol", default=COMMAND_SETTINGS.working_set.gap_tol),
    *WORKING_SET_OPTIONS,
)
# Inputs a forward-pass call takes at most, so that a bar shows the pass's progress.
_FORWARD_CHUNK = 4096


def add_sparse_parser(sub) -> argparse.ArgumentParser:
    """The ``sparse`` command's parser, added to the subparsers ``sub``."""
    p = sub.add_parser(
        KIND,
        help="one layer at large N (50,000 inputs) without the Gram: C as a sparse matrix",
        description="Solve SSC on one layer of a checkpoint at N inputs of a split with the "
        "sparse route (ssc_sparse): no (N, N) Gram and no dense C, so N can be a whole "
        "training set. Writes coef.npz (scipy.sparse.save_npz), inputs.npz (indices, labels) "
        "and metrics.json (certified gap, rounds, timings).",
    )
    p.add_argument("run", help="run folder written by `train`")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")
    p.add_argument("--layer", required=True, help="the layer's name, e.g. layer4.1.conv2")
    inputs = p.add_argument_group("inputs")
    add_options(inputs, AnalysisSet, changed(_INPUT_OPTIONS, split={"default": "train"}))
    solver = p.add_argument_group("SSC solver")
    add_options(solver, WorkingSet, _SOLVER_OPTIONS)
    add_options(solver, SolverOptions, SOLVER_OPTIONS)
    p.add_argument("--out", default=f"ssc_out/{KIND}", help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sparse)
    return p


def cmd_sparse(args: argparse.Namespace) -> Path:
    """Capture the layer, solve it, and write the output folder; return its path."""
    from ssc_jax.solver.working_set.from_features import ssc_sparse

    analysis = AnalysisSet(**option_values(args, _INPUT_OPTIONS))
    solver = WorkingSet(**option_values(args, _SOLVER_OPTIONS))
    options = SolverOptions(**option_values(args, SOLVER_OPTIONS), progress=not args.quiet)
    info = run_info(args.run)
    default_data = info["config"]["dataset"] if analysis.split == "train" else None
    data = analysis.data or default_data or held_out_data(info)
    sources = [args.run, data]
    check_output_dir(args.out, kind=KIND, inputs=sources)
    with folder_lock(args.out):
        seconds = {}
        start = time.perf_counter()
        epoch = resolve_epoch(args.run, args.epoch)
        given = load_inputs(analysis, data)
        check_fits_run(given, info, args.run)
        seconds["read"] = time.perf_counter() - start
        start = time.perf_counter()
        x = _activations(
            args.run, epoch, given.images, args.layer, analysis.batch_size, not args.quiet
        )
        seconds["activations"] = time.perf_counter() - start
        start = time.perf_counter()
        result = ssc_sparse(x, solver=solver, options=options)
        seconds["solve"] = time.perf_counter() - start
        metrics = _metrics(result, args, analysis, solver, epoch, x.shape, seconds)
        with atomic_output_dir(args.out, kind=KIND, inputs=sources) as folder:
            import scipy.sparse

            scipy.sparse.save_npz(folder / "coef.npz", result.coef)
            np.savez(folder / "inputs.npz", indices=given.indices, labels=given.labels)
            write_json(folder / "metrics.json", {**metrics, "inputs": given.key})
    out = Path(args.out).absolute()
    print(f"output: {out} (certified relative gap {result.duality_gap:.2e})")
    return out


def _activations(
    run: str, epoch: int, images: np.ndarray, layer: str, batch_size: int, progress: bool
) -> np.ndarray:
    """(n, d) float32 the flattened activations of ``layer`` on ``images`` (n, H, W, C) uint8,
    in chunks of inputs, with a bar where ``progress``.

    Raises:
      InputError: for a layer the model does not have.
    """
    from ssc_jax.nets.capture import capture_activations
    from ssc_jax.training.checkpoints import load_checkpoint

    model, info = load_checkpoint(run, epoch)
    n = len(images)
    chunk = max(batch_size, _FORWARD_CHUNK // batch_size * batch_size)
    parts = []
    with (
        warnings.catch_warnings(),
        tqdm(total=n, desc=f"activations of {layer}", unit="input", disable=not progress) as bar,
    ):
        # One layer is what this command asks for: no comparison of layers to warn about.
        warnings.filterwarnings("ignore", message="only one layer is selected")
        for first in range(0, n, chunk):
            inputs = preprocess(images[first : first + chunk], info)
            try:
                value = capture_activations(model, inputs, [layer], batch_size=batch_size)
            except ValueError as err:
                raise InputError(f"--layer {layer}: {err}") from None
            parts.append(value[layer].reshape(len(inputs), -1))
            bar.update(len(inputs))
    return np.concatenate(parts)


def _metrics(
    result,
    args: argparse.Namespace,
    analysis: AnalysisSet,
    solver: WorkingSet,
    epoch: int,
    shape: tuple[int, int],
    seconds: dict[str, float],
) -> dict:
    """What ``metrics.json`` records of the solve."""
    history = [
        {
            "relative_gap": r.relative_gap,
            "kkt_violation": r.kkt_violation,
            "rows_per_size": r.rows_per_size,
            "solve_seconds": r.solve_seconds,
            "correlation_seconds": r.correlation_seconds,
        }
        for r in result.history
    ]
    return {
        "command": KIND,
        "run": str(Path(args.run).absolute()),
        "epoch": epoch,
        "layer": args.layer,
        "n": shape[0],
        "d": shape[1],
        "split": analysis.split,
        "tau": solver.tau,
        "gap_tol": solver.gap_tol,
        "certified_relative_gap": result.duality_gap,
        "converged": result.converged,
        "objective": result.objective,
        "rounds": result.rounds,
        "verified": result.verified,
        "nonzeros": int(result.coef.nnz),
        "float64_finish": result.finish_seconds is not None,
        "seconds": {**seconds, "float64_finish": result.finish_seconds},
        "history": history,
        "settings": {
            "inputs": {k: v for k, v in asdict(analysis).items() if k != "layers"},
            "solver": asdict(solver),
        },
        "version": __version__,
    }
