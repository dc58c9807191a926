"""The command line: ``python -m ssc_jax.run [default|train|analyze|activations|dynamics|
compare|tau-path|torch|sparse]``.

With no command it runs the offline default: train a small CNN on scikit-learn's digits with
per-epoch checkpoints, analyse every conv layer, run the training dynamics and write one
HTML report. Every analysis command writes its output folder atomically (all or nothing):
``metrics.json``, ``figures/`` (PNG and PDF), ``graphs/`` (the SSC graphs) and
``report.html``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from ssc_jax.pipeline.analysis.config import N_WRONG, AnalysisSet
from ssc_jax.pipeline.analysis.inputs import InputError
from ssc_jax.pipeline.cli import commands, launch, sparse_layer, torch_model
from ssc_jax.pipeline.cli.arguments import (
    DEFAULT_TRAIN_OPTIONS,
    TRAIN_OPTIONS,
    add_analysis_options,
    add_interval_options,
    add_measures_option,
    add_options,
    add_selection_options,
    add_solver_options,
    changed,
)
from ssc_jax.pipeline.cli.resources import ResourceError, memory_reported
from ssc_jax.pipeline.store.outputs import OutputError
from ssc_jax.solver.distributed import is_writer
from ssc_jax.training.trainer import TrainConfig

DEFAULT_OUT = "ssc_out/default"
DIGITS_N = 500
"""The default command's N: the digits test split holds 540 inputs."""
# Commands that train: training is not spread over processes (each would train the same model
# into one run folder), so they run in one.
_TRAINING = ("default", "train")


def _out_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help="output folder (default: %(default)s)")


def _quiet_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _wrong_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wrong", type=int, default=N_WRONG, help="confidently wrong inputs to show")


def _checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by `train`")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")


def _analysis_options(p: argparse.ArgumentParser, *, n: int = AnalysisSet.n) -> None:
    add_analysis_options(p, n=n)
    add_measures_option(p)
    _quiet_option(p)


def _run_analysis_options(p: argparse.ArgumentParser, command: str) -> None:
    """The output folder, inputs, solver, measures and intervals of an analysis of runs."""
    _out_option(p, f"ssc_out/{command}")
    _analysis_options(p)
    add_interval_options(p)


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
    add_options(p, TrainConfig, DEFAULT_TRAIN_OPTIONS)
    _out_option(p, DEFAULT_OUT)
    _analysis_options(p, n=DIGITS_N)
    add_interval_options(p)
    p.set_defaults(func=commands.cmd_default)

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
    _quiet_option(p)
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser(
        "analyze",
        help="one checkpoint: SSC graphs, modularity, CKA heatmaps, embeddings, Table 1, Fig 9",
        description="Analyse one checkpoint: per-layer SSC graphs (batched solver), "
        "modularity, pairwise SSC-CKA and linear CKA, spectral embeddings, SSC labels vs. the "
        "network (Table 1) and the confidently wrong inputs with their neighbours (Fig 9).",
    )
    _checkpoint_arguments(p)
    _wrong_option(p)
    _run_analysis_options(p, "analyze")
    p.set_defaults(func=commands.cmd_analyze)

    p = sub.add_parser(
        "activations",
        help="any network's saved activations (.npz, .npy folder, .safetensors): as analyze",
        description="Analyse a network of any framework from its saved per-layer "
        "activations on N inputs: an .npz (one array per layer in forward order, plus "
        "labels and optional predictions or logits and images), a folder of .npy files with "
        "a manifest.json, or .safetensors files. Layers are read one at a time.",
    )
    p.add_argument("path", help=".npz file, folder with manifest.json, or .safetensors")
    add_selection_options(p)
    _wrong_option(p)
    _out_option(p, "ssc_out/activations")
    add_solver_options(p)
    add_measures_option(p)
    add_interval_options(p)
    _quiet_option(p)
    p.set_defaults(func=commands.cmd_activations)

    p = sub.add_parser(
        "dynamics",
        help="per-epoch modularity and CKA to the final epoch (Fig 1/2), heatmaps (Fig 6)",
        description="Analyse every per-epoch checkpoint of a run on the same inputs: the "
        "modularity of each layer, SSC-CKA and linear CKA of each layer against its final "
        "state, and pairwise heatmaps at chosen epochs.",
    )
    p.add_argument("run", help="run folder written by `train`")
    p.add_argument(
        "--checkpoints",
        type=int,
        nargs="+",
        metavar="EPOCH",
        help="epochs to analyse (default: all)",
    )
    p.add_argument(
        "--heatmap-epochs",
        type=int,
        nargs="+",
        help="epochs for pairwise heatmaps (default: 4 spread from first to last)",
    )
    _run_analysis_options(p, "dynamics")
    p.set_defaults(func=commands.cmd_dynamics)

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
    _run_analysis_options(p, "compare")
    p.set_defaults(func=commands.cmd_compare)

    p = sub.add_parser(
        "tau-path",
        help="one checkpoint at several tau: modularity, SSC-CKA, sparsity and Table 1 per tau",
        description="Analyse one checkpoint at each of several values of tau (the weight of "
        "the data fit): per layer, modularity, the nonzeros per row of C and SSC-CKA to the "
        "graph at the reference tau (the one nearest --tau); Table 1 per tau. The solves go "
        "from the smallest tau up, each warm-started from the one before.",
    )
    _checkpoint_arguments(p)
    p.add_argument(
        "--taus",
        type=float,
        nargs="+",
        default=[1.0, 2.0, 5.0, 10.0, 20.0],
        help="values of tau (default: %(default)s); from tau = 50 up, the rows of a real "
        "CNN layer's early convolutions can outgrow the working set (--working-set-size)",
    )
    _run_analysis_options(p, "tau-path")
    p.set_defaults(func=commands.cmd_tau_path)

    p = sub.add_parser(
        "torch",
        help="a PyTorch model built from an import path, on an image folder or zip: as analyze",
        description="Build a torch model from PACKAGE.MODULE:CALLABLE (e.g. "
        "torchvision.models:resnet18), load its --weights without unpickling, feed it N "
        "images of --data scaled to [0, 1], resized (--image-size) and normalised (--mean, "
        "--std), and analyse its layers with the logits of the same forward pass.",
    )
    torch_model.add_torch_options(p)
    add_interval_options(p)
    _wrong_option(p)
    _out_option(p, "ssc_out/torch")
    _quiet_option(p)
    p.set_defaults(func=commands.cmd_torch)
    sparse_layer.add_sparse_parser(sub)
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
    folder that is not ours, a full disk, memory too small for the work) prints one line and
    returns 2; anything else is a bug and propagates with its traceback.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["default", *argv]
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        if args.command in (*_TRAINING, "sparse") and (args.processes or 1) > 1:
            does = "trains" if args.command in _TRAINING else "solves"
            raise InputError(f"`{args.command}` {does} in one process; drop --processes")
        if launch.spawns(args):
            return launch.spawn([sys.executable, "-m", "ssc_jax.run", *argv], args.processes)
        launch.join(args)
        with warnings.catch_warnings(), memory_reported(args.command):
            warnings.showwarning = _show_warning
            out = func(args)
    except (OutputError, InputError, ResourceError) as err:
        message = " ".join(str(err).split())
        print(f"ssc-jax: error: {message}", file=sys.stderr)
        return 2
    if args.command not in ("train", "sparse") and is_writer():
        print(f"report: {(out / 'report.html').absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
