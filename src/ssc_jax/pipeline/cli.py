"""The command line: ``python -m ssc_jax.run [default|train|analyze|dynamics|compare]``.

With no command it runs the offline default: train a small CNN on scikit-learn's digits with
per-epoch checkpoints, analyse every conv layer, run the training dynamics and write one
HTML report. Every analysis command writes its output folder atomically (all or nothing):
``metrics.json``, ``figures/`` (PNG and PDF), ``graphs/`` (the SSC graphs) and
``report.html``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ssc_jax._version import __version__
from ssc_jax.pipeline.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.outputs import (
    OutputError,
    atomic_output_dir,
    check_output_dir,
    removed_on_failure,
    write_json,
)
from ssc_jax.pipeline.report import Report

DEFAULT_OUT = "ssc_out/default"


def _add_analysis_options(p: argparse.ArgumentParser, *, n: int = 1000) -> None:
    g = p.add_argument_group("analysis inputs")
    g.add_argument(
        "--data",
        help="dataset name (digits, cifar10, cifar100) or image folder / zip to analyse on; "
        "default: the test set the run was evaluated on",
    )
    g.add_argument("--split", default="test", help="dataset split (default: %(default)s)")
    g.add_argument("--n", type=int, default=n, help="analysis inputs N (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the stratified N-input sample")
    g.add_argument(
        "--layers",
        choices=["conv", "blocks"],
        default="conv",
        help="every convolution output, or block outputs (default: %(default)s)",
    )
    g.add_argument("--batch-size", type=int, default=256, help="forward-pass batch size")
    s = p.add_argument_group("SSC solver")
    s.add_argument("--tau", type=float, default=10.0, help="data-fit weight (default: 10)")
    s.add_argument("--mu", type=float, default=10.0, help="initial ADMM penalty (default: 10)")
    s.add_argument(
        "--no-normalize",
        action="store_true",
        help="solve on raw activations instead of unit-norm samples",
    )
    s.add_argument("--max-iter", type=int, help="cap on ADMM iterations")
    s.add_argument("--rel-tol", type=float, help="relative tolerance on the ADMM residuals")
    s.add_argument("--gap-tol", type=float, help="tolerance on the estimated objective gap")
    s.add_argument(
        "--memory-gb", type=float, help="memory budget for one chunk of solver work (GiB)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _out_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help="output folder (default: %(default)s)")


def _settings(args) -> tuple[AnalysisSet, SolverSettings]:
    options = {}
    if args.max_iter is not None:
        options["max_iterations"] = args.max_iter
    if args.rel_tol is not None:
        options["rel_tol"] = args.rel_tol
    if args.gap_tol is not None:
        options["gap_tol"] = args.gap_tol
    budget = None if args.memory_gb is None else int(args.memory_gb * 2**30)
    analysis = AnalysisSet(args.data, args.split, args.n, args.seed, args.layers, args.batch_size)
    solver = SolverSettings(args.tau, args.mu, not args.no_normalize, options, budget)
    return analysis, solver


_TRAIN_OPTIONS = {
    "model": "model",
    "dataset": "dataset",
    "test_data": "test_dataset",
    "epochs": "epochs",
    "data_fraction": "data_fraction",
    "seed": "seed",
    "width": "width",
    "train_batch_size": "batch_size",
    "lr": "learning_rate",
    "lr_decay_epochs": "lr_decay_epochs",
}


def _train_config(args, **fixed):
    """A ``TrainConfig`` from the options the user gave; the rest keep the paper recipe."""
    from ssc_jax.training.trainer import TrainConfig

    given = {
        field: getattr(args, option)
        for option, field in _TRAIN_OPTIONS.items()
        if getattr(args, option, None) is not None
    }
    if getattr(args, "no_augment", False):
        given["augment"] = False
    return TrainConfig(**{**given, **fixed})


def _train(config, run: Path, progress: bool) -> None:
    """Train into ``run``; a run that fails before its first checkpoint leaves nothing."""
    from ssc_jax.training.checkpoints import list_checkpoints
    from ssc_jax.training.trainer import train

    with removed_on_failure(run, keep=lambda path: bool(list_checkpoints(path))):
        train(config, run, progress=progress)


def _finish(out_dir: Path, report: Report, metrics: dict, args) -> None:
    """Add the settings to the report and metrics, then write ``metrics.json`` and the report."""
    analysis, solver = _settings(args)
    settings = {
        "analysis": dataclasses.asdict(analysis),
        "solver": solver.key(),
        "memory_budget_bytes": solver.memory_budget_bytes,
    }
    report.heading("Settings")
    rows = [
        [f"{group}.{k}", v] for group in ("analysis", "solver") for k, v in settings[group].items()
    ]
    report.table(["setting", "value"], rows, caption="ssc-jax " + __version__)
    metrics = {"command": args.command, **metrics, "settings": settings, "version": __version__}
    write_json(out_dir / "metrics.json", metrics)
    report.write(out_dir / "report.html")


def _publish(args, title: str, write, result) -> Path:
    """Write ``result`` with ``write(result, folder, report)`` into ``args.out``, atomically."""
    with atomic_output_dir(args.out) as tmp:
        report = Report(title)
        _finish(tmp, report, write(result, tmp, report), args)
    return Path(args.out)


def cmd_train(args) -> Path:
    from ssc_jax.training.datasets import TFDS_NAMES

    if args.dataset not in ("digits", *TFDS_NAMES) and args.test_data is None:
        raise ValueError("--dataset is a folder or zip, so --test-data must name the test images")
    config = _train_config(args)
    out = Path(args.out or f"runs/{args.model}-{Path(str(args.dataset)).stem}-s{config.seed}")
    _train(config, out, progress=not args.quiet)
    print(f"run: {out.absolute()}")
    return out


def cmd_analyze(args) -> Path:
    from ssc_jax.pipeline.analyze import analyze_checkpoint, write_checkpoint

    check_output_dir(args.out)
    analysis, solver = _settings(args)
    result = analyze_checkpoint(
        args.run,
        epoch=args.epoch,
        analysis=analysis,
        solver=solver,
        n_wrong=args.wrong,
        progress=not args.quiet,
    )
    title = f"ssc-jax analysis: {Path(args.run).name}, epoch {result.epoch}"
    return _publish(args, title, write_checkpoint, result)


def cmd_dynamics(args) -> Path:
    from ssc_jax.pipeline.dynamics import training_dynamics, write_dynamics

    check_output_dir(args.out)
    analysis, solver = _settings(args)
    result = training_dynamics(
        args.run,
        analysis=analysis,
        solver=solver,
        epochs=args.epochs,
        heatmap_epochs=args.heatmap_epochs,
        progress=not args.quiet,
    )
    title = f"ssc-jax training dynamics: {Path(args.run).name}"
    return _publish(args, title, write_dynamics, result)


def cmd_compare(args) -> Path:
    from ssc_jax.pipeline.compare import compare_runs, write_comparison

    check_output_dir(args.out)
    analysis, solver = _settings(args)
    results = compare_runs(
        args.runs, names=args.names, analysis=analysis, solver=solver, progress=not args.quiet
    )
    title = f"ssc-jax comparison of {len(results)} runs"
    return _publish(args, title, write_comparison, results)


def cmd_default(args) -> Path:
    from ssc_jax.pipeline.analyze import analyze_checkpoint, write_checkpoint
    from ssc_jax.pipeline.dynamics import training_dynamics, write_dynamics

    check_output_dir(args.out)
    analysis, solver = _settings(args)
    start = time.perf_counter()
    with atomic_output_dir(args.out) as tmp:
        run = tmp / "run"
        config = _train_config(args, model="small_cnn", dataset="digits", augment=False)
        _train(config, run, progress=not args.quiet)
        result = analyze_checkpoint(
            run, analysis=analysis, solver=solver, n_wrong=3, progress=not args.quiet
        )
        dynamics = training_dynamics(run, analysis=analysis, solver=solver, progress=not args.quiet)
        report = Report("ssc-jax: a small CNN on scikit-learn's digits")
        report.text(
            f"small_cnn trained for {len(dynamics.epochs)} epochs on the digits training split; "
            f"every conv layer analysed on N = {args.n} stratified test digits "
            f"(tau = {solver.tau}, mu = {solver.mu}). Output folder: {Path(args.out).absolute()}."
        )
        metrics = write_checkpoint(result, tmp, report)
        metrics["dynamics"] = write_dynamics(dynamics, tmp, report)
        # The run is trained inside the temporary folder; record where it ends up.
        metrics["run"] = metrics["dynamics"]["run"] = str(Path(args.out).absolute() / "run")
        metrics["wall_seconds"] = time.perf_counter() - start
        _finish(tmp, report, metrics, args)
    return Path(args.out)


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
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    _out_option(p, DEFAULT_OUT)
    _add_analysis_options(p, n=500)
    p.set_defaults(func=cmd_default)

    p = sub.add_parser(
        "train",
        help="train a model with per-epoch checkpoints (resumable)",
        description="Train a model by name on a dataset with the paper's recipe (SGD, lr 0.1, "
        "momentum 0.9, weight decay 5e-4, lr x0.2 every 30 epochs, crop + flip), writing a "
        "checkpoint after every epoch. Rerunning on the same folder resumes.",
    )
    p.add_argument(
        "--model", required=True, help="model name, e.g. small_cnn (a wrong name lists them all)"
    )
    p.add_argument(
        "--dataset",
        default="cifar10",
        help="digits, cifar10, cifar100, or a folder / zip of class folders (default: %(default)s)",
    )
    p.add_argument(
        "--test-data",
        help="held-out images (name or folder / zip); required when --dataset is a path",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the paper's 100)")
    p.add_argument("--data-fraction", type=float, help="train on a stratified fraction, e.g. 0.05")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and subset")
    p.add_argument("--width", type=float, help="channel-width multiplier (default: 1)")
    p.add_argument(
        "--batch-size", dest="train_batch_size", type=int, help="batch size (default: 128)"
    )
    p.add_argument("--lr", type=float, help="initial learning rate (default: 0.1)")
    p.add_argument(
        "--lr-decay-epochs", type=int, help="multiply the lr by 0.2 every this many epochs (30)"
    )
    p.add_argument(
        "--no-augment", action="store_true", help="no random crop and flip (e.g. for digits)"
    )
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
    _add_analysis_options(p)
    p.set_defaults(func=cmd_analyze)

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
    _add_analysis_options(p)
    p.set_defaults(func=cmd_dynamics)

    p = sub.add_parser(
        "compare",
        help="several runs' heatmaps side by side (Fig 3/4/5/7)",
        description="Analyse the last (or RUN@EPOCH) checkpoint of several runs on the same "
        "inputs and show their pairwise SSC-CKA and linear-CKA heatmaps side by side.",
    )
    p.add_argument("runs", nargs="+", help="run folders, each optionally RUN@EPOCH")
    p.add_argument("--names", nargs="+", help="a label per run (default: folder@epoch)")
    _out_option(p, "ssc_out/compare")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (2 on a usage or input error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["default", *argv]
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        out = func(args)
    except (OutputError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command != "train":
        print(f"report: {(out / 'report.html').absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
