"""``analyze`` for any network: its per-layer activations, as arrays or saved files.

The framework-neutral door. A network of any framework is analysed from what it computed on
n inputs: per-layer activations, the labels and, optionally, its predictions or logits and
the input images. The result is the ``analyze`` result (modularity, SSC-CKA and linear CKA,
spectral embeddings, Table 1, and Fig 9 when images and predictions are given)::

    >>> import numpy as np
    >>> from ssc_jax.pipeline.activations import analyze_activations
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 20)
    >>> layers = {"conv1": rng.normal(size=(60, 8)) + labels[:, None],
    ...           "conv2": rng.normal(size=(60, 4)) + 2 * labels[:, None]}
    >>> result = analyze_activations(layers, labels, progress=False)
    >>> result.graphs.layers, result.ssc_cka.shape
    (['conv1', 'conv2'], (2, 2))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ssc_jax.nets.activation_files import ActivationSource, read_activations
from ssc_jax.nets.activation_source import softmax
from ssc_jax.nets.external import grams_from_activations
from ssc_jax.pipeline.analyze import CheckpointAnalysis, analyze_graphs
from ssc_jax.pipeline.config import DEFAULT_SOLVER, SolverSettings
from ssc_jax.pipeline.inputs import AnalysisInputs, InputError
from ssc_jax.pipeline.layer_graphs import LayerGraphs, solve_layers, warn_unconverged

Layers = Mapping | Iterable[Mapping] | ActivationSource | str | Path


def network_probabilities(
    n: int,
    n_classes: int,
    *,
    probs=None,
    logits=None,
    predictions=None,
) -> np.ndarray | None:
    """(n, n_classes) class probabilities from whichever of the network's outputs is given:
    ``probs`` as they are, the softmax of ``logits``, or one-hot ``predictions`` (then every
    confidence is 1). None when none is given.

    Raises:
      InputError: for a shape that does not fit n inputs of n_classes classes.
    """
    given = {
        name: value
        for name, value in (("probs", probs), ("logits", logits), ("predictions", predictions))
        if value is not None
    }
    if len(given) > 1:
        raise InputError(f"pass one of probs, logits and predictions, not {sorted(given)}")
    if not given:
        return None
    ((name, value),) = given.items()
    value = np.asarray(value)
    if name == "predictions":
        if value.shape != (n,) or not np.issubdtype(value.dtype, np.integer):
            raise InputError(
                f"predictions must be {n} integer classes; got {value.dtype} {value.shape}"
            )
        if value.min() < 0 or value.max() >= n_classes:
            raise InputError(
                f"predictions must lie in 0..{n_classes - 1}; got {value.min()}..{value.max()}"
            )
        return np.eye(n_classes, dtype=np.float32)[value]
    if value.shape != (n, n_classes):
        raise InputError(f"{name} must be (n, classes) = ({n}, {n_classes}); got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise InputError(f"{name} holds NaN or Inf")
    return softmax(value) if name == "logits" else value.astype(np.float32)


def display_images(images, n: int) -> np.ndarray | None:
    """``images`` as (n, H, W, C) uint8 for the figures: channels-first (n, C, H, W) arrays
    are moved to channels-last and floats are scaled from their range to 0-255."""
    if images is None:
        return None
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] != n:
        raise InputError(f"images must be (n, H, W, C) with n = {n}; got {images.shape}")
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.dtype == np.uint8:
        return images
    images = images.astype(np.float64)
    low, high = float(images.min()), float(images.max())
    return np.round(255 * (images - low) / max(high - low, 1e-12)).astype(np.uint8)


def _checked_labels(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"labels must be {n} integer classes (one per input); got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0:
        raise InputError(f"labels must be >= 0; got {labels.min()}")
    if np.unique(labels).size < 2:
        raise InputError(
            "labels hold one class; SSC analysis compares classes, pass inputs of at least two"
        )
    return labels.astype(np.int64)


def given_inputs(
    n: int,
    labels,
    *,
    probs=None,
    logits=None,
    predictions=None,
    images=None,
    class_names: Sequence[str] | None = None,
    source: str = "given",
) -> tuple[AnalysisInputs, np.ndarray | None]:
    """The analysis inputs and the network's (n, K) class probabilities (None when no output
    is given) from what a caller passes for n inputs, checked.

    Raises:
      InputError: for labels, outputs, images or class names that do not fit, or fewer
        inputs than classes.
    """
    labels = _checked_labels(labels, n)
    n_classes = int(labels.max()) + 1
    if logits is not None or probs is not None:
        n_classes = max(n_classes, np.shape(logits if probs is None else probs)[-1])
    if class_names is None:
        class_names = [str(k) for k in range(n_classes)]
    elif len(class_names) != n_classes:
        raise InputError(f"got {len(class_names)} class names for {n_classes} classes")
    if n <= n_classes:
        raise InputError(
            f"N = {n} inputs for {n_classes} classes cannot show class structure; "
            "pass several inputs per class"
        )
    probs = network_probabilities(n, n_classes, probs=probs, logits=logits, predictions=predictions)
    inputs = AnalysisInputs(
        images=display_images(images, n),
        labels=labels,
        class_names=list(class_names),
        indices=np.arange(n),
        key={"data": source, "split": "given", "n": n},
    )
    return inputs, probs


def solved_graphs(
    names: Sequence[str],
    grams,
    inputs: AnalysisInputs,
    probs: np.ndarray | None,
    *,
    solver: SolverSettings = DEFAULT_SOLVER,
    progress: bool = True,
) -> LayerGraphs:
    """The SSC graphs of a network given by its layers' Grams (L, n, n) on ``inputs``."""
    names = list(names)
    grams = np.asarray(grams, dtype=np.float32)
    n = len(inputs.labels)
    if grams.shape != (len(names), n, n):
        raise InputError(
            f"grams must be (L, n, n) = ({len(names)}, {n}, {n}) for the layers named; "
            f"got {grams.shape}"
        )
    coef, diagnostics = solve_layers(grams, solver, progress=progress)
    warn_unconverged(names, diagnostics, solver, epoch=None)
    return LayerGraphs(
        layers=names,
        grams=grams,
        coef=coef,
        diagnostics=diagnostics,
        probs=probs,
        key={"inputs": inputs.key, "layers": names, "solver": solver.key()},
        path=None,
    )


def activation_network(
    layers: Layers,
    labels=None,
    *,
    solver: SolverSettings = DEFAULT_SOLVER,
    progress: bool = True,
    **outputs,
) -> tuple[LayerGraphs, AnalysisInputs]:
    """The solved graphs and the checked inputs of a network given by its activations; the
    arguments are those of :func:`analyze_activations` (``outputs``: probs, logits,
    predictions, images, class_names)."""
    source = "activations"
    if isinstance(layers, str | Path):
        try:
            layers = read_activations(layers)
        except ValueError as err:
            raise InputError(str(err)) from err
    if isinstance(layers, ActivationSource):
        source = layers.path
        labels = layers.labels if labels is None else labels
        if not any(outputs.get(k) is not None for k in ("probs", "logits", "predictions")):
            saved = "logits" if layers.logits is not None else "predictions"
            outputs[saved] = getattr(layers, saved)
        if outputs.get("images") is None:
            outputs["images"] = layers.images
    if labels is None:
        raise InputError("labels are required: pass one integer class per input")
    try:
        names, grams = grams_from_activations(
            layers, memory_budget_bytes=solver.memory_budget_bytes
        )
    except ValueError as err:
        raise InputError(str(err)) from err
    inputs, probs = given_inputs(grams.shape[-1], labels, source=source, **outputs)
    graphs = solved_graphs(names, grams, inputs, probs, solver=solver, progress=progress)
    return graphs, inputs


def analyze_activations(
    layers: Layers,
    labels=None,
    *,
    probs=None,
    logits=None,
    predictions=None,
    images=None,
    class_names: Sequence[str] | None = None,
    solver: SolverSettings = DEFAULT_SOLVER,
    n_wrong: int = 3,
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
      labels, probs, logits, predictions, images, class_names, solver, n_wrong, progress,
        out: as for :func:`analyze_grams`; labels are required unless ``layers`` is a
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
    analysis = analyze_graphs(graphs, inputs, source=source, epoch=None, n_wrong=n_wrong)
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
    solver: SolverSettings = DEFAULT_SOLVER,
    n_wrong: int = 3,
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
    analysis = analyze_graphs(graphs, inputs, source=source, epoch=None, n_wrong=n_wrong)
    if out is not None:
        write_analysis(analysis, out, solver=solver)
    return analysis


def write_analysis(
    result: CheckpointAnalysis,
    out: str | Path,
    *,
    solver: SolverSettings = DEFAULT_SOLVER,
    title: str | None = None,
) -> Path:
    """Write ``result`` of :func:`analyze_activations` or :func:`analyze_grams` to the output
    folder ``out``, all or nothing, as the ``activations`` command does; return ``out``.

    Raises:
      OutputError: when ``out`` holds anything but a previous ``activations`` output.
    """
    from ssc_jax.pipeline.publish import publish
    from ssc_jax.pipeline.render import render_checkpoint
    from ssc_jax.pipeline.report import Report

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
