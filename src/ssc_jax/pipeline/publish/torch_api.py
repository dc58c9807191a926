"""The Python API's doors for torch models: ``analyze`` of one model and ``compare`` of
several, from their forward passes on the same inputs."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ssc_jax.graphs.resampling import DEFAULT_LEVEL
from ssc_jax.nets.tokens import DEFAULT_TOKENS
from ssc_jax.pipeline.analysis.analyze import CheckpointAnalysis
from ssc_jax.pipeline.analysis.compare import Comparison, compare_runs
from ssc_jax.pipeline.analysis.config import DEFAULT_SETTINGS, N_WRONG, SolverSettings
from ssc_jax.pipeline.analysis.uncertainty import DEFAULT_RESAMPLES, Resampling
from ssc_jax.pipeline.publish.api import analyze_grams, write_analysis
from ssc_jax.pipeline.publish.write import publish
from ssc_jax.pipeline.report.html import Report
from ssc_jax.pipeline.report.render import render_comparison


def analyze_torch(
    model,
    inputs,
    *,
    layers=None,
    tokens: str = DEFAULT_TOKENS,
    images=None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
    device="cpu",
    solver: SolverSettings = DEFAULT_SETTINGS,
    n_wrong: int = N_WRONG,
    measures: Sequence[str] | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    source: str = "torch model",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> CheckpointAnalysis:
    """The ``analyze`` result for a ``torch.nn.Module`` on n inputs, from one forward pass
    per group of layers: its layers' Grams, the labels its batches carry and its logits::

        result = ssc_jax.analyze_torch(model, loader, images=images, class_names=names,
                                       out="report")

    Args:
      model, inputs, layers, tokens, batch_size, device: as for
        :func:`ssc_jax.nets.torch_capture.torch_activation_grams` (the batches must carry the
        labels: (inputs, labels) tuples or a mapping's ``labels``).
      images: (n, H, W, C) or (n, C, H, W) inputs in the batches' order, shown in Fig 9.
      class_names, solver, n_wrong, measures, progress, out, source, resamples, level: as
        for :func:`analyze_grams`.
    """
    from ssc_jax.nets.torch_capture import torch_activation_grams

    grams = torch_activation_grams(
        model, inputs, layers=layers, tokens=tokens, batch_size=batch_size, device=device
    )
    if grams.labels is None:
        raise ValueError("the batches carry no labels: give (inputs, labels) or a 'labels' key")
    result = analyze_grams(
        grams.names,
        grams.grams,
        grams.labels,
        logits=grams.logits,
        images=images,
        class_names=class_names,
        solver=solver,
        n_wrong=n_wrong,
        measures=measures,
        progress=progress,
        source=source,
        resamples=resamples,
        level=level,
    )
    result = result._replace(tokens=grams.tokens, layer_selection=grams.selection)
    if out is not None:
        write_analysis(result, out, solver=solver)
    return result


def compare_models(
    models: Mapping[str, object],
    inputs,
    *,
    layers=None,
    tokens: str = DEFAULT_TOKENS,
    labels=None,
    batch_size: int = 256,
    device="cpu",
    solver: SolverSettings = DEFAULT_SETTINGS,
    measures: Sequence[str] | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Comparison:
    """Several torch models on the same inputs, as ``python -m ssc_jax.run compare`` sets
    saved networks side by side: each one's SSC-CKA and linear CKA (and any other selected
    measure) between its layers and its modularity, and the first model against each other
    one layer by layer (cross-network similarity, ``result.cross``)::

        result = ssc_jax.compare_models({"vit": vit, "resnet": resnet}, loader, out="compare")

    Each model's layers are saved by :func:`ssc_jax.nets.torch_save.save_torch_activations`
    into a temporary folder (one layer of one model is read at a time), then compared.

    Args:
      models: {name: ``torch.nn.Module``}, at least two, the first compared to the others.
      inputs, tokens, labels, batch_size, device: as for ``save_torch_activations``.
      layers: one selection for every model, or {model name: selection}.
      solver, measures, progress, resamples, level: as for :func:`analyze_grams`; the
        intervals of the cross-network measures pair the same subsampled inputs.
      out: when given, the usual ``compare`` output folder is written there.
    """
    if len(models) < 2:
        raise ValueError(f"compare_models needs at least two models; got {len(models)}")
    from ssc_jax.nets.torch_save import save_torch_activations

    with tempfile.TemporaryDirectory(prefix="ssc-jax-compare-") as folder:
        paths = []
        for index, (name, model) in enumerate(models.items()):
            chosen = layers.get(name) if isinstance(layers, Mapping) else layers
            path = Path(folder) / f"{index}.safetensors"
            save_torch_activations(
                model,
                inputs,
                path,
                layers=chosen,
                tokens=tokens,
                labels=labels,
                batch_size=batch_size,
                device=device,
            )
            paths.append(str(path))
        result = compare_runs(
            paths,
            names=[str(name) for name in models],
            solver=solver,
            measures=measures,
            progress=progress,
            resampling=Resampling(resamples=resamples, level=level),
        )
        if out is not None:
            publish(
                out,
                command="compare",
                inputs=[],
                report=Report(
                    f"ssc-jax comparison of {len(result.runs)} torch models",
                    render_comparison(result),
                ),
                metrics=result.metrics,
                exports=result.exports,
                analysis=None,
                solver=solver,
            )
    return result
