"""Per-epoch training checkpoints through orbax's ``CheckpointManager``, and reloading a model.

Layout of a run folder::

    run_dir/config.json                 the run: TrainConfig, num_classes, in_channels,
                                        image_shape, class_names, mean, std, train_size
    run_dir/checkpoints/<epoch>/        one orbax step per epoch (1, 2, ...), holding
        model/                          the model's variables (StandardSave)
        optimizer/                      the optimizer state (StandardSave)
        metrics/                        epoch, lr, losses, accuracies, time (JsonSave)

Orbax writes a step under a temporary name and renames it when complete, so a killed run
leaves either a whole checkpoint or a temporary folder that is never listed (and that the
next save removes). Runs written before ssc-jax used ``CheckpointManager``
(``checkpoints/epoch_0001/``) are not readable: retrain them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ssc_jax.nets.zoo import create_model

_TEMP_PREFIX = ".tmp_"
_OLD_LAYOUT = re.compile(r"epoch_\d+")


def _checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


def _manager(run_dir: str | os.PathLike, *, writable: bool = False) -> ocp.CheckpointManager:
    """A synchronous manager of the run's checkpoints. A ``writable`` one creates the folder
    and, before its first save, removes the temporary folders of killed saves."""
    folder = _checkpoints_dir(run_dir)
    if folder.is_dir() and any(_OLD_LAYOUT.fullmatch(entry.name) for entry in folder.iterdir()):
        raise ValueError(
            f"{str(run_dir)!r} holds checkpoints in the layout of ssc-jax before orbax's "
            "CheckpointManager (checkpoints/epoch_NNNN), which this version cannot read; "
            "retrain it into a new folder"
        )
    options = ocp.CheckpointManagerOptions(
        create=writable,
        cleanup_tmp_directories=writable,
        enable_async_checkpointing=False,
    )
    handlers = {
        "model": ocp.StandardCheckpointHandler(),
        "optimizer": ocp.StandardCheckpointHandler(),
        "metrics": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(folder, options=options, item_handlers=handlers)


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
    """Epochs (ascending) that have a complete checkpoint in ``run_dir``: the steps orbax
    finalised that hold its commit marker (a step folder copied in part lacks it)."""
    folder = _checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    with _manager(run_dir) as manager:
        steps = manager.all_steps()
    marker = ocp.path.atomicity.COMMIT_SUCCESS_FILE
    return sorted(step for step in steps if (folder / str(step) / marker).is_file())


def _pure(node) -> dict:
    return nnx.to_pure_dict(nnx.state(node))


def save_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: dict[str, Any],
) -> Path:
    """Write the checkpoint of ``epoch`` (replacing one already there); returns its folder."""
    with _manager(run_dir, writable=True) as manager:
        if epoch in manager.all_steps():
            manager.delete(epoch)
        items = ocp.args.Composite(
            model=ocp.args.StandardSave(_pure(model)),
            optimizer=ocp.args.StandardSave(_pure(optimizer)),
            metrics=ocp.args.JsonSave(metrics),
        )
        manager.save(epoch, args=items, force=True)
    return _checkpoints_dir(run_dir) / str(epoch)


def _restore_target(node) -> ocp.args.StandardRestore:
    return ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, _pure(node)))


def _update_from(node, restored: dict) -> None:
    state = nnx.state(node)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(node, state)


def _check_listed(run_dir: str | os.PathLike, epoch: int) -> None:
    available = list_checkpoints(run_dir)
    if epoch not in available:
        raise ValueError(
            f"no checkpoint of epoch {epoch} in {str(run_dir)!r}; available epochs: "
            f"{available if available else 'none'}"
        )


def read_metrics(run_dir: str | os.PathLike, epoch: int) -> dict[str, Any]:
    """The metrics saved with the checkpoint of ``epoch``."""
    _check_listed(run_dir, epoch)
    with _manager(run_dir) as manager:
        items = manager.restore(epoch, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
    return items.metrics


def restore_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer | None = None,
) -> dict[str, Any]:
    """Load the checkpoint of ``epoch`` into ``model`` (and ``optimizer``), in place;
    returns its metrics."""
    _check_listed(run_dir, epoch)
    targets = {"model": _restore_target(model), "metrics": ocp.args.JsonRestore()}
    if optimizer is not None:
        targets["optimizer"] = _restore_target(optimizer)
    with _manager(run_dir) as manager:
        items = manager.restore(epoch, args=ocp.args.Composite(**targets))
    _update_from(model, items.model)
    if optimizer is not None:
        _update_from(optimizer, items.optimizer)
    return items.metrics


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
