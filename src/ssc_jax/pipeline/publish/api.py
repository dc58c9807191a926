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

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ssc_jax.graphs.resampling import DEFAULT_LEVEL
from ssc_jax.nets.activation_files import read_activations
from ssc_jax.nets.activation_source import ActivationSource, narrowed_mapping, narrowed_source
from ssc_jax.nets.tokens import DEFAULT_TOKENS
from ssc_jax.pipeline.analysis.activations import (
    Layers,
    activation_network,
    given_inputs,
    solved_graphs,
)
from ssc_jax.pipeline.analysis.analyze import CheckpointAnalysis, analyze_graphs
from ssc_jax.pipeline.analysis.config import DEFAULT_SETTINGS, N_WRONG, SolverSettings
from ssc_jax.pipeline.analysis.inputs import InputError
from ssc_jax.pipeline.analysis.uncertainty import DEFAULT_RESAMPLES, Resampling
from ssc_jax.pipeline.publish.write import publish
from ssc_jax.pipeline.report.html import Report
from ssc_jax.pipeline.report.render import render_checkpoint
from ssc_jax.pipeline.report.wording import analysis_title


def _narrowed(layers: Layers, select, tokens: str, mask) -> tuple[Layers, str | None, list]:
    """``layers`` with the layers ``select`` keeps and token layers pooled (see
    ``nets.activation_source.narrowed_source``); the line on the selection; and a list that
    holds, once the layers are read, whether each mapping or batch had a token layer."""
    try:
        if isinstance(layers, str | Path):
            layers = read_activations(layers)
        if isinstance(layers, ActivationSource):
            layers, selection, has_tokens = narrowed_source(layers, select, tokens)
            return layers, selection, [has_tokens]
        if isinstance(layers, Mapping):
            layers, selection, has_tokens = narrowed_mapping(layers, select, tokens, mask)
            return layers, selection, [has_tokens]
    except ValueError as err:
        raise InputError(str(err)) from err
    if select is not None or mask is not None:
        raise InputError(
            "select and mask need the activations as a mapping or files; a stream of batches "
            "is read once (give each batch its own 'attention_mask')"
        )
    seen: list[bool] = []

    def pooled_batches():
        for batch in layers:
            pooled, _, has_tokens = narrowed_mapping(batch, None, tokens)
            seen.append(has_tokens)
            yield pooled

    return pooled_batches(), None, seen


def _analysed(
    graphs,
    inputs,
    resampling: Resampling,
    *,
    source: str,
    tokens: str | None,
    layer_selection: str | None,
    solver: SolverSettings,
    n_wrong: int,
    measures: Sequence[str] | None,
    out: str | Path | None,
) -> CheckpointAnalysis:
    """The ``analyze`` result of a network's solved ``graphs`` on ``inputs``, saying how its
    layers were chosen and pooled; written to ``out`` when given."""
    analysis = analyze_graphs(
        graphs,
        inputs,
        source=source,
        epoch=None,
        n_wrong=n_wrong,
        measures=measures,
        solver=solver,
        resampling=resampling,
    )._replace(tokens=tokens, layer_selection=layer_selection)
    if out is not None:
        write_analysis(analysis, out, solver=solver)
    return analysis


def analyze_activations(
    layers: Layers,
    labels=None,
    *,
    select: str | Sequence[str] | None = None,
    tokens: str = DEFAULT_TOKENS,
    mask=None,
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
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> CheckpointAnalysis:
    """The ``analyze`` result for a network given by its activations on n inputs.

    Args:
      layers: per-layer activations in forward order: a mapping {name: (n, ...) array}, an
        iterable of such mappings over batches of inputs, an ``ActivationSource`` or the
        path of an ``.npz``, a folder with ``manifest.json`` or ``.safetensors`` files (see
        ``nets.activation_files``); a path brings its own labels, logits or predictions
        and images. The Grams are formed one layer at a time within the memory budget.
      select: the layers to analyse: None (all), ``"blocks"`` (the repeated blocks: the
        longest run of same-shaped layers ``blocks.0``, ``blocks.1``...), ``"hidden_states"``,
        or layer names and shell-style patterns (``["blocks.*", "head"]``); not for a stream.
      tokens: how token layers (n, T, D) become one vector per input: ``"mean"`` (default),
        ``"cls"``, ``"last"`` or ``"flatten"`` (``ssc_jax.nets.tokens``).
      mask: the padding mask (n, T) that "mean" and "last" honour; default the mapping's or
        the files' ``attention_mask`` (each batch's own for a stream).
      labels, probs, logits, predictions, images, class_names, solver, n_wrong, measures,
        progress, out, resamples, level: as for :func:`analyze_grams`; labels are required
        unless ``layers`` is a source or path.

    Raises:
      InputError (a ``ValueError``): for inputs that do not fit, in one line naming them.
    """
    layers, selection, had_tokens = _narrowed(layers, select, tokens, mask)
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
    return _analysed(
        graphs,
        inputs,
        Resampling(resamples=resamples, level=level),
        source=inputs.key["data"],
        tokens=tokens if any(had_tokens) else None,
        layer_selection=selection,
        solver=solver,
        n_wrong=n_wrong,
        measures=measures,
        out=out,
    )


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
    tokens: str | None = None,
    layer_selection: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
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
      tokens, layer_selection: how the Grams' token layers were pooled and their layers
        chosen (``activation_grams(..., tokens=, layers=)``), for the report and
        ``metrics.json``; None when not said.
      resamples: halves of the inputs (both halves of resamples / 2 random splits, so an
        even number) on which every layer is solved again, for the intervals beside every
        number (``result.intervals``, ``x_ci`` in ``metrics.json``; docs/statistics.md); 0
        turns them off.
      level: the intervals' level.

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
    return _analysed(
        solved_graphs(names, grams, inputs, probs, solver=solver, progress=progress),
        inputs,
        Resampling(resamples=resamples, level=level),
        source=source,
        tokens=tokens,
        layer_selection=layer_selection,
        solver=solver,
        n_wrong=n_wrong,
        measures=measures,
        out=out,
    )


def _title(result: CheckpointAnalysis) -> str:
    return analysis_title(
        result.run, result.epoch, int(result.inputs.labels.size), len(result.graphs.layers)
    )


def write_analysis(
    result: CheckpointAnalysis,
    out: str | Path,
    *,
    solver: SolverSettings = DEFAULT_SETTINGS,
    title: str | None = None,
) -> Path:
    """Write ``result`` of :func:`analyze_activations` or :func:`analyze_grams` to the output
    folder ``out``, all or nothing, as the ``activations`` command does; return ``out``. The
    report's settings are those that applied: the N inputs, the layer selection and the
    token pooling, and the solver's.

    Raises:
      OutputError: when ``out`` holds anything but a previous ``activations`` output.
    """
    return publish(
        out,
        command="activations",
        inputs=[result.run] if Path(result.run).exists() else [],
        report=Report(title or _title(result), render_checkpoint(result)),
        metrics=result.metrics,
        exports=result.exports,
        analysis={
            "n": int(result.inputs.labels.size),
            "layers": result.layer_selection or "every layer given",
            "tokens": result.tokens,
        },
        solver=solver,
    )
