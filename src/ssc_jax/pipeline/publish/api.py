"""``analyze`` for any network: its per-layer activations, as arrays or saved files, or
their Grams; the Python API's door, which can also write the output folder.

The framework-neutral door. A network of any framework is analysed from what it computed on
n inputs: per-layer activations, the labels and, optionally, its predictions or logits and
the input images. The result is the ``analyze`` result (modularity, SSC-CKA and linear CKA,
spectral embeddings, Table 1, and Fig 9 when images and predictions are given)::

    >>> import numpy as np
    >>> from ssc_jax.pipeline import analyze_activations
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 20)
    >>> layers = {"conv1": rng.normal(size=(60, 8)) + labels[:, None],
    ...           "conv2": rng.normal(size=(60, 4)) + 2 * labels[:, None]}
    >>> result = analyze_activations(layers, labels, progress=False)
    >>> result.graphs.layers, result.similarity["ssc_cka"].shape
    (['conv1', 'conv2'], (2, 2))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssc_jax.pipeline.analysis.activations import (
    Layers,
    activation_network,
    given_inputs,
    solved_graphs,
)
from ssc_jax.pipeline.analysis.analyze import CheckpointAnalysis, analyze_graphs
from ssc_jax.pipeline.analysis.config import DEFAULT_SETTINGS, N_WRONG, SolverSettings
from ssc_jax.pipeline.publish.write import publish
from ssc_jax.pipeline.report.html import Report
from ssc_jax.pipeline.report.render import render_checkpoint


def analyze_activations(
    layers: Layers,
    labels=None,
    *,
    probs=None,
    logits=None,
    predictions=None,
    images=None,
    class_names: Sequence[str] | None = None,
    solver: SolverSettings = DEFAULT_SETTINGS,
    n_wrong: int = N_WRONG,
    measures: Sequence[str] | None = None,
    progress: bool = True,
    out: str | Path | None = None,
) -> CheckpointAnalysis:
    """The ``analyze`` result for a network given by its activations on n inputs.

    Args:
      layers: per-layer activations in forward order: a mapping {name: (n, ...) array}, an
        iterable of such mappings over batches of inputs, an ``ActivationSource`` or the
        path of an ``.npz``, a folder with ``manifest.json`` or ``.safetensors`` files (see
        ``nets.activation_files``); a path brings its own labels, logits or predictions
        and images. The Grams are formed one layer at a time within the memory budget.
      labels, probs, logits, predictions, images, class_names, solver, n_wrong, measures,
        progress, out: as for :func:`analyze_grams`; labels are required unless ``layers`` is a
        source or path.

    Raises:
      InputError (a ``ValueError``): for inputs that do not fit, in one line naming them.
    """
    graphs, inputs = activation_network(
        layers,
        labels,
        solver=solver,
        progress=progress,
        probs=probs,
        logits=logits,
        predictions=predictions,
        images=images,
        class_names=class_names,
    )
    source = inputs.key["data"]
    analysis = analyze_graphs(
        graphs, inputs, source=source, epoch=None, n_wrong=n_wrong, measures=measures
    )
    if out is not None:
        write_analysis(analysis, out, solver=solver)
    return analysis


def analyze_grams(
    names: Sequence[str],
    grams,
    labels,
    *,
    probs=None,
    logits=None,
    predictions=None,
    images=None,
    class_names: Sequence[str] | None = None,
    solver: SolverSettings = DEFAULT_SETTINGS,
    n_wrong: int = N_WRONG,
    measures: Sequence[str] | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    source: str = "grams",
) -> CheckpointAnalysis:
    """The ``analyze`` result for a network given by its layers' Grams on n inputs, e.g.
    those of ``torch_activation_grams``::

        g = ssc_jax.torch_activation_grams(model, loader)
        result = ssc_jax.analyze_grams(g.names, g.grams, g.labels,
                                       predictions=g.predictions, out="report")

    Args:
      names: the L layer names, forward order.
      grams: (L, n, n) Grams ``X_l X_l^T`` of the flattened activations.
      labels: (n,) integer classes, at least two.
      probs, logits, predictions: the network's outputs, at most one: (n, K) probabilities,
        (n, K) logits, or (n,) predicted classes. Without them Table 1 has only the SSC
        label accuracy and there is no Fig 9.
      images: (n, H, W, C) or (n, C, H, W) inputs, shown in Fig 9.
      class_names: K names; default "0" .. "K-1".
      solver: how the SSC problems are solved.
      n_wrong: confidently wrong inputs to show in Fig 9.
      measures: the names of the similarity measures between layers (default the paper's
        SSC-CKA and linear CKA; ``ssc_jax.register_measure`` adds one); the result's
        ``similarity`` maps each name to its (L, L) values.
      progress: show the solver's progress bar.
      out: when given, the usual output folder (``metrics.json``, figures, graphs,
        ``report.html``) is written there, as by ``python -m ssc_jax.run activations``.
      source: what the network is called in the report and ``metrics.json``.

    Raises:
      InputError (a ``ValueError``): for inputs that do not fit, in one line naming them.
    """
    inputs, probs = given_inputs(
        np.shape(grams)[-1],
        labels,
        probs=probs,
        logits=logits,
        predictions=predictions,
        images=images,
        class_names=class_names,
        source=source,
    )
    graphs = solved_graphs(names, grams, inputs, probs, solver=solver, progress=progress)
    analysis = analyze_graphs(
        graphs, inputs, source=source, epoch=None, n_wrong=n_wrong, measures=measures
    )
    if out is not None:
        write_analysis(analysis, out, solver=solver)
    return analysis


def write_analysis(
    result: CheckpointAnalysis,
    out: str | Path,
    *,
    solver: SolverSettings = DEFAULT_SETTINGS,
    title: str | None = None,
) -> Path:
    """Write ``result`` of :func:`analyze_activations` or :func:`analyze_grams` to the output
    folder ``out``, all or nothing, as the ``activations`` command does; return ``out``.

    Raises:
      OutputError: when ``out`` holds anything but a previous ``activations`` output.
    """
    return publish(
        out,
        command="activations",
        inputs=[result.run] if Path(result.run).exists() else [],
        report=Report(title or f"ssc-jax analysis: {result.run}", render_checkpoint(result)),
        metrics=result.metrics,
        exports=result.exports,
        analysis=None,
        solver=solver,
    )
