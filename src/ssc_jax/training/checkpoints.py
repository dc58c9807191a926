"""Per-epoch training checkpoints (orbax), written atomically, and reloading a model alone.

Layout of a run folder::

    run_dir/config.json                      the run: TrainConfig, num_classes, in_channels,
                                             image_shape, class_names, mean, std, train_size
    run_dir/checkpoints/epoch_0001/model/     orbax checkpoint of the model's variables
    run_dir/checkpoints/epoch_0001/optimizer/ orbax checkpoint of the optimizer state
    run_dir/checkpoints/epoch_0001/metrics.json  epoch, lr, losses, accuracies, time

An epoch's folder is written under a temporary name and renamed when complete, so a killed
run leaves either a whole checkpoint or none (the temporary folder is removed next time).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ssc_jax.nets.zoo import create_model

_EPOCH_DIR = re.compile(r"epoch_(\d+)")
_TEMP_PREFIX = ".tmp_"


def _checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


def _epoch_dir(run_dir: str | os.PathLike, epoch: int) -> Path:
    return _checkpoints_dir(run_dir) / f"epoch_{epoch:04d}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (temporary file + rename)."""
    temp = path.with_name(_TEMP_PREFIX + path.name)
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json``; ``ValueError`` if the folder holds no run."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a training run folder: it has no config.json")
    return json.loads(path.read_text())


def list_checkpoints(run_dir: str | os.PathLike) -> list[int]:
    """Epochs (ascending) that have a complete checkpoint in ``run_dir``."""
    folder = _checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    epochs = [
        int(match[1])
        for entry in folder.iterdir()
        if (match := _EPOCH_DIR.fullmatch(entry.name)) and (entry / "metrics.json").is_file()
    ]
    return sorted(epochs)


def _pure(node) -> dict:
    return nnx.to_pure_dict(nnx.state(node))


def save_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: dict[str, Any],
) -> Path:
    """Write the checkpoint of ``epoch`` atomically; returns its folder."""
    final = _epoch_dir(run_dir, epoch)
    temp = final.with_name(_TEMP_PREFIX + final.name)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(temp / "model", _pure(model))
        checkpointer.save(temp / "optimizer", _pure(optimizer))
        checkpointer.wait_until_finished()
    write_json(temp / "metrics.json", metrics)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temp, final)
    return final


def remove_incomplete(run_dir: str | os.PathLike) -> None:
    """Delete the temporary folders a killed run left behind."""
    folder = _checkpoints_dir(run_dir)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(_TEMP_PREFIX):
                shutil.rmtree(entry)


def _restore_into(node, path: Path) -> None:
    state = nnx.state(node)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(state))
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(node, state)


def read_metrics(run_dir: str | os.PathLike, epoch: int) -> dict[str, Any]:
    """The metrics.json of the checkpoint of ``epoch``."""
    return json.loads((_epoch_dir(run_dir, epoch) / "metrics.json").read_text())


def restore_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer | None = None,
) -> dict[str, Any]:
    """Load the checkpoint of ``epoch`` into ``model`` (and ``optimizer``), in place;
    returns its metrics."""
    folder = _epoch_dir(run_dir, epoch)
    if epoch not in list_checkpoints(run_dir):
        available = list_checkpoints(run_dir)
        raise ValueError(
            f"no checkpoint of epoch {epoch} in {str(run_dir)!r}; available epochs: "
            f"{available if available else 'none'}"
        )
    _restore_into(model, folder / "model")
    if optimizer is not None:
        _restore_into(optimizer, folder / "optimizer")
    return read_metrics(run_dir, epoch)


def model_from_run_config(run: dict[str, Any]) -> nnx.Module:
    """A freshly initialised model of the architecture a run trained."""
    config = run["config"]
    return create_model(
        config["model"],
        num_classes=run["num_classes"],
        seed=config["seed"],
        width=config["width"],
        in_channels=run["in_channels"],
    )


def load_checkpoint(
    run_dir: str | os.PathLike, epoch: int | None = None
) -> tuple[nnx.Module, dict[str, Any]]:
    """The model of ``epoch`` (the latest when None), in eval mode, and an info dict: the
    run's config.json entries (``config``, ``num_classes``, ``in_channels``, ``mean``,
    ``std``, ``class_names``, ...) plus ``epoch`` and that epoch's ``metrics``.
    Preprocess inputs with ``ssc_jax.normalize(images, info["mean"], info["std"])``."""
    run = read_run_config(run_dir)
    if epoch is None:
        epochs = list_checkpoints(run_dir)
        if not epochs:
            raise ValueError(f"the run in {str(run_dir)!r} has no complete checkpoint yet")
        epoch = epochs[-1]
    model = model_from_run_config(run)
    metrics = restore_checkpoint(run_dir, epoch, model)
    model.eval()
    return model, {**run, "epoch": epoch, "metrics": metrics}
