"""Loading what an analysis needs, with clear errors: a checkpoint and the analysis inputs."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.store.locks import lock_holder
from ssc_jax.training.augment import normalize_images
from ssc_jax.training.checkpoints import list_checkpoints, read_run_config, readable_epoch
from ssc_jax.training.datasets import analysis_indices, load_dataset


class InputError(ValueError):
    """A run, checkpoint, dataset or setting the user named is missing or cannot be used."""


class AnalysisInputs(NamedTuple):
    """The n analysis inputs: ``images`` (n, H, W, C) uint8, ``labels`` (n,), the class
    names, the ``indices`` into the dataset split, and ``key`` identifying them for caching."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    indices: np.ndarray
    key: dict


def run_epochs(run_dir: str | Path) -> list[int]:
    """The epochs with a checkpoint in ``run_dir``, ascending; a warning when another
    command is training the run now (its completed checkpoints are safe to read).

    Raises:
      InputError: when ``run_dir`` is not a folder or holds no checkpoint.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"no training run at {run_dir} (expected a folder from `train`)")
    epochs = sorted(list_checkpoints(run_dir))
    holder = lock_holder(run_dir)
    if not epochs:
        training = f" (it is being trained now, {holder})" if holder else ""
        raise InputError(f"{run_dir} holds no checkpoints{training}; train first")
    if holder is not None:
        warnings.warn(
            f"{run_dir} is being trained now ({holder}); only the checkpoints it has "
            f"completed, epochs {epochs[0]}-{epochs[-1]}, are analysed",
            stacklevel=2,
        )
    return epochs


def resolve_epoch(run_dir: str | Path, epoch: int | None) -> int:
    """``epoch`` if ``run_dir`` has its checkpoint intact; when None the last intact one,
    with a warning naming each damaged checkpoint after it.

    Raises:
      InputError: when there is no such checkpoint, or it is damaged.
    """
    epochs = run_epochs(run_dir)
    if epoch is not None and epoch not in epochs:
        raise InputError(f"no checkpoint for epoch {epoch} in {run_dir}; it has epochs {epochs}")
    try:
        return readable_epoch(run_dir, epoch, items=("model", "metrics"))
    except ValueError as err:
        others = [e for e in epochs if e != epoch]
        hint = f"; pass --epoch with another of its epochs {others}" if epoch and others else ""
        raise InputError(f"{err}{hint}") from None


def run_info(run_dir: str | Path) -> dict:
    """The run's recorded configuration (``config``, ``mean``, ``std``, ``class_names``...).

    Raises:
      InputError: when its ``config.json`` is missing or damaged.
    """
    try:
        return read_run_config(Path(run_dir))
    except ValueError as err:
        raise InputError(str(err)) from None


class RunFacts(NamedTuple):
    """What a training run's folder records of it, for the report: its training
    ``config`` and the epoch of its last checkpoint."""

    config: dict
    last_epoch: int


def run_facts(run_dir: str | Path) -> RunFacts:
    """The `RunFacts` of the run in ``run_dir``, which has a checkpoint."""
    return RunFacts(run_info(run_dir)["config"], max(list_checkpoints(Path(run_dir))))


def held_out_data(info) -> str:
    """The dataset a checkpoint was tested on during training (name or path), from ``info``."""
    config = info["config"]
    return config["test_dataset"] or config["dataset"]


def preprocess(images: np.ndarray, info) -> np.ndarray:
    """Images (n, H, W, C) uint8 as the checkpoint's model saw them in training (float32)."""
    return np.asarray(normalize_images(images, info["mean"], info["std"]))


# Fewer inputs of a class than this, and it has no within-class pair to cluster.
MIN_PER_CLASS = 2


def _needed_n(labels: np.ndarray, seed: int) -> int | None:
    """The smallest N whose stratified sample has ``MIN_PER_CLASS`` inputs of every class."""
    classes = len(np.unique(labels))
    for n in range(MIN_PER_CLASS * classes, len(labels) + 1):
        if np.bincount(labels[analysis_indices(labels, n, seed=seed)]).min() >= MIN_PER_CLASS:
            return n
    return None


def _check_classes(labels, chosen, class_names, analysis: AnalysisSet, data: str) -> None:
    """Refuse data of one class, and an N that leaves a class without a within-class pair."""
    present = np.unique(labels)
    where = f"the {analysis.split!r} split of {data!r}"
    if len(present) < 2:
        raise InputError(
            f"{where} holds one class ({class_names[present[0]]!r}); SSC analysis compares "
            "classes: pass --data with images of at least 2 classes"
        )
    counts = np.bincount(chosen, minlength=len(class_names))[present]
    if counts.min() >= MIN_PER_CLASS:
        return
    short = class_names[present[np.argmin(counts)]]
    needed = _needed_n(labels, analysis.seed)
    fix = (
        f"pass --n {needed} or more"
        if needed is not None
        else f"its class {short!r} has fewer than {MIN_PER_CLASS} inputs there: pass other --data"
    )
    raise InputError(
        f"N = {analysis.n} analysis inputs over the {len(present)} classes of {where} gives "
        f"class {short!r} only {counts.min()}; SSC needs at least {MIN_PER_CLASS} per class: {fix}"
    )


def check_fits_run(inputs: AnalysisInputs, info: dict, run_dir: str | Path) -> None:
    """Refuse inputs of another image shape or class count than the run's model was trained on.

    Raises:
      InputError: naming both shapes or counts.
    """
    shape = list(inputs.images.shape[1:])
    trained = info.get("image_shape")
    if trained is not None and shape != list(trained):
        raise InputError(
            f"the analysis images are {tuple(shape)} but the run in {run_dir} was trained on "
            f"{tuple(trained)} images; pass --data with images like its training data"
        )
    if len(inputs.class_names) != info["num_classes"]:
        raise InputError(
            f"the analysis data has {len(inputs.class_names)} classes but the run in {run_dir} "
            f"was trained on {info['num_classes']}; pass --data with the classes it was trained on"
        )


def load_inputs(analysis: AnalysisSet, default_data: str) -> AnalysisInputs:
    """A stratified sample of ``analysis.n`` inputs of ``analysis.data`` (or ``default_data``).

    Raises:
      InputError: when the data cannot be read, holds fewer than N inputs or one class, or
        N leaves a class fewer than ``MIN_PER_CLASS`` inputs.
    """
    data = analysis.data or default_data
    try:
        images, labels, class_names = load_dataset(data, analysis.split)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"cannot read the {analysis.split!r} split of data {data!r}: {err}"
            " (pass --data with a dataset name, or a readable folder or zip of images)"
        ) from err
    labels = np.asarray(labels)
    if analysis.n < 2:
        raise InputError(f"N = {analysis.n} analysis inputs asked for; SSC needs at least 2")
    if analysis.n > len(labels):
        raise InputError(
            f"N = {analysis.n} analysis inputs asked for, but the {analysis.split!r} split of "
            f"{data!r} holds only {len(labels)}; pass a smaller --n"
        )
    indices = np.asarray(analysis_indices(labels, analysis.n, seed=analysis.seed))
    _check_classes(labels, labels[indices], list(class_names), analysis, data)
    key = {
        "data": str(Path(data).resolve()) if Path(data).exists() else str(data),
        "split": analysis.split,
        "indices": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()[:16],
    }
    return AnalysisInputs(
        np.asarray(images)[indices], labels[indices], list(class_names), indices, key
    )
