"""What each command of ``python -m ssc_jax.run`` does, given its parsed arguments.

Every analysis command claims its output folder (refusing one that is not its own), computes,
and publishes the folder atomically on the writing process of a job (``metrics.json``,
``figures/``, ``graphs/``, ``report.html``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from ssc_jax.pipeline.analysis.computation import Computation
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import InputError
from ssc_jax.pipeline.cli.arguments import (
    DEFAULT_TRAIN_OPTIONS,
    TRAIN_OPTIONS,
    Option,
    analysis_settings,
    layer_selection,
    measure_names,
    option_values,
    resampling_settings,
    solver_settings,
)
from ssc_jax.pipeline.report.html import Report, Section
from ssc_jax.pipeline.store.locks import folder_lock
from ssc_jax.pipeline.store.outputs import (
    DISK_FULL,
    OutputError,
    check_output_dir,
    check_training_dir,
    removed_on_failure,
)
from ssc_jax.solver.distributed import is_writer
from ssc_jax.training.checkpoints import list_checkpoints
from ssc_jax.training.datasets import TFDS_NAMES
from ssc_jax.training.trainer import TrainConfig, train


def _train_config(args, options: Sequence[Option], **fixed: Any) -> TrainConfig:
    """A ``TrainConfig`` from the training ``options`` of ``args`` and the ``fixed`` fields."""
    return TrainConfig(**option_values(args, options), **fixed)


def _has_checkpoint(run: Path) -> bool:
    return bool(list_checkpoints(run))


def _train(config, run: Path, progress: bool) -> None:
    """Train into ``run``, holding its lock; a run that fails before its first checkpoint
    leaves nothing.

    The trainer checks its configuration, data and model name, raising ``ValueError``, before
    its first step; those are the user's errors, and so is a full disk.
    """
    check_training_dir(run)
    with folder_lock(run), removed_on_failure(run, keep=_has_checkpoint):
        try:
            train(config, run, progress=progress)
        except ValueError as err:
            raise InputError(str(err)) from err
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            raise OutputError(
                f"cannot write the run folder {run}: {err.strerror}; free space on its disk, "
                "then run the same command again to resume"
            ) from None


def _claim_output(out: str | Path, *, kind: str, inputs: list) -> AbstractContextManager:
    """Refuse ``out`` now unless a ``kind`` output may replace it, then lock it (on the
    writing process of a job; the others leave it alone)."""
    if not is_writer():
        return nullcontext()
    check_output_dir(out, kind=kind, inputs=inputs)
    return folder_lock(out)


def _computed(computation: Computation):
    """The result of ``computation`` on the process that writes (process 0 of a
    ``jax.distributed`` job, or the only one); on the others, which take part in the solves
    only, None."""
    if is_writer():
        return computation.result()
    computation.solve_only()
    return None


def _run_analysis(
    args,
    plan: Callable[..., Computation],
    render: Callable,
    *,
    title: Callable[[Any], str],
    sources: list,
    applied: Callable[[Any, AnalysisSet], AnalysisSet | dict] = lambda result, chosen: chosen,
) -> Path:
    """The analysis commands of trained runs: claim ``args.out``, compute ``plan`` with the
    settings the arguments give, and publish the result with the report's sections from
    ``render(result)``, its title from ``title(result)`` and the analysis settings that
    ``applied(result, chosen)`` says applied. The other processes of a job take part in the
    solves only, and publish nothing."""
    from ssc_jax.pipeline.publish.write import publish

    analysis, solver = analysis_settings(args)
    inputs = [*sources, analysis.data]
    with _claim_output(args.out, kind=args.command, inputs=inputs):
        result = _computed(
            plan(
                analysis=analysis,
                solver=solver,
                measures=measure_names(args),
                progress=not args.quiet,
                resampling=resampling_settings(args),
            )
        )
        if result is None:
            return Path(args.out)
        return publish(
            args.out,
            command=args.command,
            inputs=inputs,
            report=Report(title(result), render(result)),
            metrics=result.metrics,
            exports=result.exports,
            analysis=applied(result, analysis),
            solver=solver,
        )


def cmd_train(args) -> Path:
    config = _train_config(args, TRAIN_OPTIONS)
    if config.dataset not in ("digits", *TFDS_NAMES) and config.test_dataset is None:
        raise InputError("--dataset is a folder or zip, so --test-data must name the test images")
    out = Path(args.out or f"runs/{config.model}-{Path(str(config.dataset)).stem}-s{config.seed}")
    _train(config, out, progress=not args.quiet)
    print(f"run: {out.absolute()}")
    return out


def cmd_analyze(args) -> Path:
    from ssc_jax.pipeline.analysis import analyze
    from ssc_jax.pipeline.report.render import render_checkpoint

    name = Path(args.run).name
    return _run_analysis(
        args,
        partial(analyze.plan, args.run, epoch=args.epoch, n_wrong=args.wrong),
        render_checkpoint,
        title=lambda r: f"ssc-jax analysis: {name}, epoch {r.epoch}",
        sources=[args.run],
    )


def cmd_dynamics(args) -> Path:
    from ssc_jax.pipeline.analysis import dynamics
    from ssc_jax.pipeline.report.render_dynamics import render_dynamics

    name = Path(args.run).name
    return _run_analysis(
        args,
        partial(
            dynamics.plan, args.run, epochs=args.checkpoints, heatmap_epochs=args.heatmap_epochs
        ),
        render_dynamics,
        title=lambda r: f"ssc-jax training dynamics: {name}",
        sources=[args.run],
    )


def cmd_tau_path(args) -> Path:
    from ssc_jax.pipeline.analysis import tau_path
    from ssc_jax.pipeline.report.render_tau_path import render_tau_path

    name = Path(args.run).name
    return _run_analysis(
        args,
        partial(tau_path.plan, args.run, args.taus, epoch=args.epoch),
        render_tau_path,
        title=lambda r: f"ssc-jax tau path: {name}, epoch {r.epoch}",
        sources=[args.run],
    )


def cmd_compare(args) -> Path:
    from ssc_jax.pipeline.analysis import compare
    from ssc_jax.pipeline.analysis.compare import parse_run
    from ssc_jax.pipeline.report.render import render_comparison

    def applied(result, chosen: AnalysisSet) -> AnalysisSet | dict:
        # The chosen inputs apply to training runs; saved activations bring their own.
        if any(run.epoch is not None for run in result.runs):
            return chosen
        return {"n": result.n, "layers": "every layer given"}

    return _run_analysis(
        args,
        partial(compare.plan, args.runs, names=args.names),
        render_comparison,
        title=lambda r: f"ssc-jax comparison of {len(r.runs)} networks",
        sources=[parse_run(spec)[0] for spec in args.runs],
        applied=applied,
    )


def cmd_activations(args) -> Path:
    from ssc_jax.pipeline.publish.api import analyze_activations, write_analysis

    inputs = [args.path]
    with _claim_output(args.out, kind="activations", inputs=inputs):
        solver = solver_settings(args)
        resampling = resampling_settings(args)
        result = analyze_activations(
            args.path,
            select=layer_selection(args),
            tokens=args.tokens,
            solver=solver,
            n_wrong=args.wrong,
            measures=measure_names(args),
            progress=not args.quiet,
            resamples=resampling.resamples,
            level=resampling.level,
        )
        title = f"ssc-jax analysis of saved activations: {Path(args.path).name}"
        return write_analysis(result, args.out, solver=solver, title=title)


def cmd_torch(args) -> Path:
    import torch

    from ssc_jax.pipeline.analysis.inputs import load_inputs
    from ssc_jax.pipeline.cli.torch_model import (
        TORCH_ANALYSIS_OPTIONS,
        ImageBatches,
        build_model,
        layers_of,
        load_weights,
    )
    from ssc_jax.pipeline.publish.api import write_analysis
    from ssc_jax.pipeline.publish.torch_api import analyze_torch

    analysis = AnalysisSet(**option_values(args, TORCH_ANALYSIS_OPTIONS))
    solver = solver_settings(args)
    resampling = resampling_settings(args)
    measures = measure_names(args)
    inputs = [analysis.data, args.weights]
    with _claim_output(args.out, kind="activations", inputs=inputs):
        model = build_model(args.model, args.model_args)
        if args.weights:
            load_weights(model, args.weights)
        given = load_inputs(analysis, analysis.data)
        loader = torch.utils.data.DataLoader(
            ImageBatches(given.images, given.labels, args), batch_size=analysis.batch_size
        )
        try:
            result = analyze_torch(
                model,
                loader,
                layers=layers_of(args),
                tokens=args.tokens,
                images=given.images,
                class_names=given.class_names,
                device=args.device,
                solver=solver,
                n_wrong=args.wrong,
                measures=measures,
                progress=not args.quiet,
                source=args.model,
                resamples=resampling.resamples,
                level=resampling.level,
            )
        except ValueError as err:  # the model's layers or outputs do not fit the analysis
            raise InputError(str(err)) from None
        title = f"ssc-jax analysis of {args.model} on N = {len(given.labels)} inputs"
        return write_analysis(result, args.out, solver=solver, title=title)


def cmd_default(args) -> Path:
    """Train (or reuse) ``OUT/run`` in place, then publish the report to ``OUT/report``: the
    report is a folder of its own, so replacing it never touches the run."""
    from ssc_jax.pipeline.analysis.analyze import analyze_checkpoint
    from ssc_jax.pipeline.analysis.dynamics import training_dynamics
    from ssc_jax.pipeline.publish.write import publish
    from ssc_jax.pipeline.report.render import render_checkpoint
    from ssc_jax.pipeline.report.render_dynamics import render_dynamics

    analysis, solver = analysis_settings(args)
    resampling = resampling_settings(args)
    progress = not args.quiet
    start = time.perf_counter()
    run, out = Path(args.out).absolute() / "run", Path(args.out).absolute() / "report"
    check_training_dir(run)
    with _claim_output(out, kind="default", inputs=[run, analysis.data]):
        config = _train_config(
            args, DEFAULT_TRAIN_OPTIONS, model="small_cnn", dataset="digits", augment=False
        )
        _train(config, run, progress=progress)
        measures = measure_names(args)
        settings = dict(analysis=analysis, solver=solver, measures=measures, progress=progress)
        result = analyze_checkpoint(run, resampling=resampling, **settings)
        dynamics = training_dynamics(run, resampling=resampling, **settings)
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
