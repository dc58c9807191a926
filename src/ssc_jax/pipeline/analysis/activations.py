"""A network of any framework, from what it computed on n inputs: its per-layer
activations (arrays or saved files) or their Grams, the labels and, optionally, its
predictions or logits and the input images, checked and solved into the graphs that
``analysis.analyze.analyze_graphs`` reads. ``publish.api`` is the public door."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ssc_jax.nets.activation_files import ActivationSource, read_activations
from ssc_jax.nets.activation_source import softmax
from ssc_jax.nets.external import grams_from_activations
from ssc_jax.pipeline.analysis.config import DEFAULT_SETTINGS, SolverSettings
from ssc_jax.pipeline.analysis.inputs import AnalysisInputs, InputError
from ssc_jax.pipeline.analysis.layer_graphs import LayerGraphs, solve_layers, warn_unconverged
from ssc_jax.pipeline.analysis.measures import RowMoments

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
    elif len(class_names) < n_classes:
        raise InputError(f"got {len(class_names)} class names for {n_classes} classes")
    n_classes = len(class_names)  # classes with no inputs among these keep their names
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
    solver: SolverSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    moments: RowMoments | None = None,
) -> LayerGraphs:
    """The SSC graphs of a network given by its layers' Grams (L, n, n) on ``inputs``;
    ``moments`` as in ``LayerGraphs``."""
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
        moments=moments,
    )


def activation_network(
    layers: Layers,
    labels=None,
    *,
    solver: SolverSettings = DEFAULT_SETTINGS,
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
        if outputs.get("class_names") is None:
            outputs["class_names"] = layers.class_names
    if labels is None:
        raise InputError("labels are required: pass one integer class per input")
    try:
        names, grams = grams_from_activations(
            layers, memory_budget_bytes=solver.memory_budget_bytes
        )
    except ValueError as err:
        raise InputError(str(err)) from err
    inputs, probs = given_inputs(grams.shape[-1], labels, source=source, **outputs)
    moments = _file_moments(layers, names)
    graphs = solved_graphs(
        names, grams, inputs, probs, solver=solver, progress=progress, moments=moments
    )
    return graphs, inputs


def _file_moments(layers, names: Sequence[str]) -> RowMoments | None:
    """The ``RowMoments`` of activations given as a mapping or an ``ActivationSource``
    (each layer read again when first used); None for a stream of batches, read once."""
    if isinstance(layers, ActivationSource):
        layers = layers.layers
    if not isinstance(layers, Mapping):
        return None

    def compute() -> tuple[np.ndarray, list[int]]:
        sums, widths = [], []
        for name in names:  # one layer in memory at a time
            values = np.asarray(layers[name])
            sums.append(values.reshape(len(values), -1).sum(axis=1, dtype=np.float64))
            widths.append(int(np.prod(values.shape[1:])))
        return np.stack(sums), widths

    return RowMoments(compute)
