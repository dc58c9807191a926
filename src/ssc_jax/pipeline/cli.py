"""The command line: ``python -m ssc_jax.run [default|train|analyze|activations|dynamics|compare]``.

With no command it runs the offline default: train a small CNN on scikit-learn's digits with
per-epoch checkpoints, analyse every conv layer, run the training dynamics and write one
HTML report. Every analysis command writes its output folder atomically (all or nothing):
``metrics.json``, ``figures/`` (PNG and PDF), ``graphs/`` (the SSC graphs) and
``report.html``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from ssc_jax.pipeline import launch
from ssc_jax.pipeline.arguments import (
    TRAIN_OPTIONS,
    add_analysis_options,
    add_options,
    add_solver_options,
    analysis_settings,
    changed,
    given,
    solver_settings,
)
from ssc_jax.pipeline.config import AnalysisSet
from ssc_jax.pipeline.inputs import InputError
from ssc_jax.pipeline.locks import folder_lock
from ssc_jax.pipeline.outputs import (
    OutputError,
    check_output_dir,
    check_training_dir,
    removed_on_failure,
)
from ssc_jax.pipeline.report import Report, Section
from ssc_jax.solver.distributed import is_writer
from ssc_jax.training.checkpoints import list_checkpoints
from ssc_jax.training.datasets import TFDS_NAMES
from ssc_jax.training.trainer import TrainConfig, train

DEFAULT_OUT = "ssc_out/default"
# Commands that train: training is not spread over processes (each would train the same model
# into one run folder), so they run in one.
_TRAINING = ("default", "train")


def _out_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help="output folder (default: %(default)s)")


def _analysis_options(p: argparse.ArgumentParser, *, n: int = 1000) -> None:
    add_analysis_options(p, n=n)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_config(args, **fixed) -> TrainConfig:
    """A ``TrainConfig`` from the training options of ``args``, then ``fixed``."""
    return TrainConfig(**{**given(args, TrainConfig), **fixed})


def _has_checkpoint(run: Path) -> bool:
    return bool(list_checkpoints(run))


def _train(config, run: Path, progress: bool) -> None:
    """Train into ``run``, holding its lock; a run that fails before its first checkpoint
    leaves nothing.

    The trainer checks its configuration, data and model name, raising ``ValueError``, before
    its first step; those are the user's errors.
    """
    check_training_dir(run)
    with folder_lock(run), removed_on_failure(run, keep=_has_checkpoint):
        try:
            train(config, run, progress=progress)
        except ValueError as err:
            raise InputError(str(err)) from err


def _claim_output(out: str | Path, *, kind: str, inputs: list) -> AbstractContextManager:
    """Refuse ``out`` now unless a ``kind`` output may replace it, then lock it (on the
    writing process of a job; the others leave it alone)."""
    if not is_writer():
        return nullcontext()
    check_output_dir(out, kind=kind, inputs=inputs)
    return folder_lock(out)


def _publish_result(args, result, sections: list[Section], *, title: str, inputs: list) -> Path:
    """Publish a computed ``result`` and its rendered ``sections`` to ``args.out`` (on the
    writing process of a job)."""
    from ssc_jax.pipeline.publish import publish

    if not is_writer():
        return Path(args.out)
    analysis, solver = analysis_settings(args)
    return publish(
        args.out,
        command=args.command,
        inputs=inputs,
        report=Report(title, sections),
        metrics=result.metrics,
        exports=result.exports,
        analysis=analysis,
        solver=solver,
    )


def cmd_train(args) -> Path:
    config = _train_config(args)
    if config.dataset not in ("digits", *TFDS_NAMES) and config.test_dataset is None:
        raise InputError("--dataset is a folder or zip, so --test-data must name the test images")
    out = Path(args.out or f"runs/{config.model}-{Path(str(config.dataset)).stem}-s{config.seed}")
    _train(config, out, progress=not args.quiet)
    print(f"run: {out.absolute()}")
    return out


def cmd_analyze(args) -> Path:
    from ssc_jax.pipeline.analyze import analyze_checkpoint
    from ssc_jax.pipeline.render import render_checkpoint

    analysis, solver = analysis_settings(args)
    inputs = [args.run, analysis.data]
    with _claim_output(args.out, kind="analyze", inputs=inputs):
        result = analyze_checkpoint(
            args.run,
            epoch=args.epoch,
            analysis=analysis,
            solver=solver,
            n_wrong=args.wrong,
            progress=not args.quiet,
        )
        title = f"ssc-jax analysis: {Path(args.run).name}, epoch {result.epoch}"
        return _publish_result(args, result, render_checkpoint(result), title=title, inputs=inputs)


def cmd_dynamics(args) -> Path:
    from ssc_jax.pipeline.dynamics import training_dynamics
    from ssc_jax.pipeline.render import render_dynamics

    analysis, solver = analysis_settings(args)
    inputs = [args.run, analysis.data]
    with _claim_output(args.out, kind="dynamics", inputs=inputs):
        result = training_dynamics(
            args.run,
            analysis=analysis,
            solver=solver,
            epochs=args.epochs,
            heatmap_epochs=args.heatmap_epochs,
            progress=not args.quiet,
        )
        title = f"ssc-jax training dynamics: {Path(args.run).name}"
        return _publish_result(args, result, render_dynamics(result), title=title, inputs=inputs)


def cmd_compare(args) -> Path:
    from ssc_jax.pipeline.compare import compare_runs, parse_run
    from ssc_jax.pipeline.render import render_comparison

    analysis, solver = analysis_settings(args)
    inputs = [*(parse_run(spec)[0] for spec in args.runs), analysis.data]
    with _claim_output(args.out, kind="compare", inputs=inputs):
        result = compare_runs(
            args.runs, names=args.names, analysis=analysis, solver=solver, progress=not args.quiet
        )
        title = f"ssc-jax comparison of {len(result.runs)} runs"
        return _publish_result(args, result, render_comparison(result), title=title, inputs=inputs)


def cmd_activations(args) -> Path:
    from ssc_jax.pipeline.activations import analyze_activations, write_analysis

    inputs = [args.path]
    with _claim_output(args.out, kind="activations", inputs=inputs):
        solver = solver_settings(args)
        result = analyze_activations(
            args.path, solver=solver, n_wrong=args.wrong, progress=not args.quiet
        )
        title = f"ssc-jax analysis of saved activations: {Path(args.path).name}"
        return write_analysis(result, args.out, solver=solver, title=title)


def cmd_default(args) -> Path:
    """Train (or reuse) ``OUT/run`` in place, then publish the report to ``OUT/report``: the
    report is a folder of its own, so replacing it never touches the run."""
    from ssc_jax.pipeline.analyze import analyze_checkpoint
    from ssc_jax.pipeline.dynamics import training_dynamics
    from ssc_jax.pipeline.publish import publish
    from ssc_jax.pipeline.render import render_checkpoint, render_dynamics

    analysis, solver = analysis_settings(args)
    progress = not args.quiet
    start = time.perf_counter()
    run, out = Path(args.out).absolute() / "run", Path(args.out).absolute() / "report"
    check_training_dir(run)
    with _claim_output(out, kind="default", inputs=[run, analysis.data]):
        config = _train_config(args, model="small_cnn", dataset="digits", augment=False)
        _train(config, run, progress=progress)
        result = analyze_checkpoint(
            run, analysis=analysis, solver=solver, n_wrong=3, progress=progress
        )
        dynamics = training_dynamics(run, analysis=analysis, solver=solver, progress=progress)
        intro = Section()
        intro.text(
            f"small_cnn trained for {len(dynamics.epochs)} epochs on the digits training split "
            f"(run: {run}); every conv layer analysed on N = {analysis.n} stratified test "
            f"digits (tau = {solver.solver.tau}, solver: {solver.method})."
        )
        sections = [intro, *render_checkpoint(result), *render_dynamics(dynamics, opening=False)]
        metrics = {
            **result.metrics,
            "dynamics": dynamics.metrics,
            "wall_seconds": time.perf_counter() - start,
        }
        return publish(
            out,
            command=args.command,
            inputs=[run, analysis.data],
            report=Report("ssc-jax: a small CNN on scikit-learn's digits", sections),
            metrics=metrics,
            exports={**result.exports, **dynamics.exports},
            analysis=analysis,
            solver=solver,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ssc_jax.run",
        description="Sparse subspace clustering analysis of neural networks. With no "
        "command: the offline default (train a small CNN on digits, analyse, report).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "default",
        help="offline demo on digits: train, analyze, dynamics, report (the no-argument run)",
        description="Train small_cnn on scikit-learn's digits with per-epoch checkpoints, "
        "analyse every conv layer, run the training dynamics and write one report.",
    )
    epochs = [o._replace(default=5) for o in TRAIN_OPTIONS if o.field == "epochs"]
    add_options(p, TrainConfig, epochs)
    _out_option(p, DEFAULT_OUT)
    _analysis_options(p, n=AnalysisSet().n)
    p.set_defaults(func=cmd_default)

    p = sub.add_parser(
        "train",
        help="train a model with per-epoch checkpoints (resumable)",
        description="Train a model by name on a dataset with the paper's recipe (SGD, lr 0.1, "
        "momentum 0.9, weight decay 5e-4, lr x0.2 every 30 epochs, crop + flip), writing a "
        "checkpoint after every epoch. Rerunning on the same folder resumes.",
    )
    train_options = changed(TRAIN_OPTIONS, model={"required": True}, dataset={"default": "cifar10"})
    add_options(p, TrainConfig, train_options)
    p.add_argument("--out", help="run folder (default: runs/MODEL-DATASET-sSEED)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "analyze",
        help="one checkpoint: SSC graphs, modularity, CKA heatmaps, embeddings, Table 1, Fig 9",
        description="Analyse one checkpoint: per-layer SSC graphs (batched solver), "
        "modularity, pairwise SSC-CKA and linear CKA, spectral embeddings, SSC labels vs. the "
        "network (Table 1) and the confidently wrong inputs with their neighbours (Fig 9).",
    )
    p.add_argument("run", help="run folder written by `train`")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")
    p.add_argument("--wrong", type=int, default=3, help="confidently wrong inputs to show")
    _out_option(p, "ssc_out/analyze")
    _analysis_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "activations",
        help="any network's saved activations (.npz, .npy folder, .safetensors): as analyze",
        description="Analyse a network of any framework from its saved per-layer "
        "activations on N inputs: an .npz (one array per layer in forward order, plus "
        "labels and optional predictions or logits and images), a folder of .npy files with "
        "a manifest.json, or .safetensors files. Layers are read one at a time.",
    )
    p.add_argument("path", help=".npz file, folder with manifest.json, or .safetensors")
    p.add_argument("--wrong", type=int, default=3, help="confidently wrong inputs to show")
    _out_option(p, "ssc_out/activations")
    add_solver_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser(
        "dynamics",
        help="per-epoch modularity and CKA to the final epoch (Fig 1/2), heatmaps (Fig 6)",
        description="Analyse every per-epoch checkpoint of a run on the same inputs: the "
        "modularity of each layer, SSC-CKA and linear CKA of each layer against its final "
        "state, and pairwise heatmaps at chosen epochs.",
    )
    p.add_argument("run", help="run folder written by `train`")
    p.add_argument("--epochs", type=int, nargs="+", help="epochs to analyse (default: all)")
    p.add_argument(
        "--heatmap-epochs",
        type=int,
        nargs="+",
        help="epochs for pairwise heatmaps (default: 4 spread from first to last)",
    )
    _out_option(p, "ssc_out/dynamics")
    _analysis_options(p)
    p.set_defaults(func=cmd_dynamics)

    p = sub.add_parser(
        "compare",
        help="several networks' heatmaps side by side (Fig 3/4/5/7), and across networks",
        description="Analyse the last (or RUN@EPOCH) checkpoint of several runs, or saved "
        "activations of any network, on the same inputs; show their pairwise SSC-CKA and "
        "linear-CKA heatmaps side by side, and the first network against each other one "
        "layer by layer.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        help="run folders, each optionally RUN@EPOCH, or saved activations (.npz, a folder "
        "with manifest.json, .safetensors) of the same inputs",
    )
    p.add_argument("--names", nargs="+", help="a label per run (default: folder@epoch)")
    _out_option(p, "ssc_out/compare")
    _analysis_options(p)
    p.set_defaults(func=cmd_compare)
    for command in sub.choices.values():
        launch.add_process_options(command)
    return parser


_PACKAGE = Path(__file__).resolve().parents[1]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """ssc-jax's own warnings as one line each; others as Python shows them."""
    if not Path(filename).resolve().is_relative_to(_PACKAGE):
        text = warnings.formatwarning(message, category, filename, lineno, line)
    else:
        text = f"ssc-jax: warning: {' '.join(str(message).split())}\n"
    (file or sys.stderr).write(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status.

    A user's error (a bad option, a missing run or checkpoint, unreadable data, an output
    folder that is not ours) prints one line and returns 2; anything else is a bug and
    propagates with its traceback.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["default", *argv]
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        if args.command in _TRAINING and (args.processes or 1) > 1:
            raise InputError(f"`{args.command}` trains in one process; drop --processes")
        if launch.spawns(args):
            return launch.spawn([sys.executable, "-m", "ssc_jax.run", *argv], args.processes)
        launch.join(args)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            out = func(args)
    except (OutputError, InputError) as err:
        message = " ".join(str(err).split())
        print(f"ssc-jax: error: {message}", file=sys.stderr)
        return 2
    if args.command != "train" and is_writer():
        print(f"report: {(out / 'report.html').absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
