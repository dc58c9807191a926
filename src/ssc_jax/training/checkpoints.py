"""Per-epoch training checkpoints through orbax's ``CheckpointManager``, and reloading a model.

Layout of a run folder::

    run_dir/config.json                 the run: TrainConfig, num_classes, in_channels,
                                        image_shape, class_names, mean, std, train_size
    run_dir/checkpoints/<epoch>/        one orbax step per epoch (1, 2, ...), holding
        model/                          the model's variables (StandardSave)
        optimizer/                      the optimizer state (StandardSave)
        metrics/                        epoch, lr, losses, accuracies, time (JsonSave)
    run_dir/checksums/<epoch>.json      size and SHA-256 of every file of that step

Orbax writes a step under a temporary name and renames it when complete, so a killed run
leaves either a whole checkpoint or a temporary folder that is never listed (and that the
next save removes). A step damaged later (a truncated or altered file) no longer matches its
checksums; reading it raises a one-line ``CheckpointError`` naming the epoch and the file, and
:func:`readable_epoch` falls back to the last checkpoint that reads. Runs written before
ssc-jax used ``CheckpointManager``
(``checkpoints/epoch_0001/``) are not readable: retrain them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ssc_jax.nets.zoo import create_model
from ssc_jax.training.checksums import checksum_path, file_sums, first_mismatch, recorded_sums

_TEMP_PREFIX = ".tmp_"
_OLD_LAYOUT = re.compile(r"epoch_\d+")
ITEMS = ("model", "optimizer", "metrics")  # what each checkpoint holds
# What config.json must hold for the run's model to be rebuilt and its inputs prepared.
_RUN_KEYS = ("num_classes", "in_channels", "class_names", "mean", "std")
_CONFIG_KEYS = ("model", "dataset", "test_dataset", "seed", "width")
_METADATA_BYTES = 2**18  # orbax's files besides the arrays: 80 KiB for small_cnn
_BLOCK = 4096  # a file system's usual allocation unit


class CheckpointError(ValueError):
    """A checkpoint that is listed but cannot be read: a file is missing, truncated or
    altered since it was saved. The message is one line naming the epoch and the file."""


def _checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


def _manager(run_dir: str | os.PathLike, *, writable: bool = False) -> ocp.CheckpointManager:
    """A synchronous manager of the run's checkpoints. A ``writable`` one creates the folder
    and, before its first save, removes the temporary folders of killed saves.

    A reading manager is this process's own: in a ``jax.distributed`` job orbax would
    otherwise wait for every process at each manager it makes, and process 0 alone lists the
    checkpoints for the report."""
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
        lightweight_initialize=True,  # else every step's metrics are read, damaged or not
        # orbax creates no folder for a manager of some processes only; training runs in one.
        multiprocessing_options=ocp.options.MultiprocessingOptions()
        if writable
        else ocp.options.MultiprocessingOptions(
            primary_host=jax.process_index(), active_processes={jax.process_index()}
        ),
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
    try:
        temp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json``; ``ValueError`` if the folder holds no run or it is damaged."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a training run folder: it has no config.json")
    try:
        run = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is damaged ({err}); retrain the run into a new folder") from None
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise ValueError(f"{path} is damaged (no run config in it); retrain into a new folder")
    missing = [key for key in _RUN_KEYS if key not in run]
    missing += [f"config.{key}" for key in _CONFIG_KEYS if key not in run["config"]]
    if missing:
        raise ValueError(
            f"{path} is damaged (it lacks {', '.join(missing)}); retrain the run into a new folder"
        )
    return run


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


def _trial_restore(run_dir: str | os.PathLike, epoch: int, items: Sequence[str]) -> str | None:
    """The error reading ``items`` of a checkpoint that has no checksums; None if they read."""
    restores = {
        "model": ocp.args.StandardRestore,
        "optimizer": ocp.args.StandardRestore,
        "metrics": ocp.args.JsonRestore,
    }
    with _manager(run_dir) as manager:
        for item in items:
            try:
                manager.restore(epoch, args=ocp.args.Composite(**{item: restores[item]()}))
            except Exception as err:  # orbax and tensorstore raise many kinds
                step = _checkpoints_dir(run_dir) / str(epoch) / item
                return f"{step} cannot be read ({_first_line(err)})"
    return None


def _first_line(err: BaseException) -> str:
    """``Type: message``, cut at the first line break (or TensorStore's spec dump)."""
    text = str(err).split("See full TensorStore details")[0].strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def checkpoint_problem(
    run_dir: str | os.PathLike, epoch: int, items: Sequence[str] = ITEMS
) -> str | None:
    """What is wrong with ``items`` of the listed checkpoint of ``epoch``, naming the file,
    or None when they are intact: their files match the checksums recorded when it was
    saved or, for a step saved without them, they read."""
    recorded = recorded_sums(run_dir, epoch)
    if recorded is None:
        return _trial_restore(run_dir, epoch, items)
    return first_mismatch(_checkpoints_dir(run_dir) / str(epoch), recorded, items)


def _damaged(epoch: int, problem: str) -> CheckpointError:
    return CheckpointError(f"the checkpoint of epoch {epoch} is damaged: {problem}")


def readable_epoch(
    run_dir: str | os.PathLike, epoch: int | None = None, items: Sequence[str] = ITEMS
) -> int:
    """``epoch`` if ``items`` of its checkpoint are intact (see :func:`checkpoint_problem`),
    or when None the last such epoch, warning for each later damaged checkpoint it skips.

    Raises:
      ValueError: when there is no such checkpoint (a ``CheckpointError`` when it, or every
        checkpoint, is damaged).
    """
    if epoch is not None:
        _check_listed(run_dir, epoch)
        problem = checkpoint_problem(run_dir, epoch, items)
        if problem is not None:
            raise _damaged(epoch, problem)
        return epoch
    epochs = list_checkpoints(run_dir)
    if not epochs:
        raise ValueError(f"the run in {str(run_dir)!r} has no complete checkpoint yet")
    for candidate in reversed(epochs):
        problem = checkpoint_problem(run_dir, candidate, items)
        if problem is None:
            return candidate
        warnings.warn(f"skipping the checkpoint of epoch {candidate}: {problem}", stacklevel=2)
    raise CheckpointError(
        f"every checkpoint of the run in {str(run_dir)!r} is damaged (epochs {epochs}); "
        "retrain it into a new folder"
    )


def _pure(node) -> dict:
    return nnx.to_pure_dict(nnx.state(node))


def _checkpoint_bytes(run_dir, epoch: int, model, optimizer) -> int:
    """What the checkpoint of ``epoch`` will take on disk: as much as the one before it (its
    files in whole blocks), or its arrays and a margin for orbax's metadata."""
    previous = recorded_sums(run_dir, epoch - 1)
    if previous:
        return sum(-(-size // _BLOCK) * _BLOCK for size, _ in previous.values())
    leaves = jax.tree.leaves((_pure(model), _pure(optimizer)))
    return sum(leaf.nbytes for leaf in leaves) + _METADATA_BYTES


@contextlib.contextmanager
def _orbax_errors_raised_only() -> Any:
    """Orbax logs the failure of each of its writing threads, then raises it: let the
    raised error alone report it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: dict[str, Any],
) -> Path:
    """Write the checkpoint of ``epoch`` (replacing one already there); returns its folder.

    Raises:
      OSError: ``ENOSPC`` when the disk is full, or has less free space than the previous
        checkpoint took; the part written is removed.
    """
    step = _checkpoints_dir(run_dir) / str(epoch)
    if shutil.disk_usage(run_dir).free < _checkpoint_bytes(run_dir, epoch, model, optimizer):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(step))
    try:
        with _orbax_errors_raised_only(), _manager(run_dir, writable=True) as manager:
            if epoch in manager.all_steps():
                checksum_path(run_dir, epoch).unlink(missing_ok=True)
                manager.delete(epoch)
            items = ocp.args.Composite(
                model=ocp.args.StandardSave(_pure(model)),
                optimizer=ocp.args.StandardSave(_pure(optimizer)),
                metrics=ocp.args.JsonSave(metrics),
            )
            manager.save(epoch, args=items, force=True)
    except Exception as err:  # TensorStore reports a full disk as a ValueError
        for partial in step.parent.glob(f"{epoch}.orbax-checkpoint-tmp*"):
            shutil.rmtree(partial, ignore_errors=True)
        if os.strerror(errno.ENOSPC) in str(err):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(step)) from None
        raise
    sums = checksum_path(run_dir, epoch)
    sums.parent.mkdir(exist_ok=True)
    write_json(sums, file_sums(step))
    return step


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


def _restore(run_dir: str | os.PathLike, epoch: int, targets: dict) -> Any:
    """Orbax's restore of ``targets``, with any failure turned into a ``CheckpointError``."""
    problem = checkpoint_problem(run_dir, epoch, list(targets))
    if problem is None:
        try:
            with _manager(run_dir) as manager:
                return manager.restore(epoch, args=ocp.args.Composite(**targets))
        except Exception as err:  # orbax and tensorstore raise many kinds
            step = _checkpoints_dir(run_dir) / str(epoch)
            problem = f"{step} cannot be read ({_first_line(err)})"
    raise _damaged(epoch, problem) from None


def read_metrics(run_dir: str | os.PathLike, epoch: int) -> dict[str, Any]:
    """The metrics saved with the checkpoint of ``epoch``."""
    _check_listed(run_dir, epoch)
    return _restore(run_dir, epoch, {"metrics": ocp.args.JsonRestore()}).metrics


def restore_checkpoint(
    run_dir: str | os.PathLike,
    epoch: int,
    model: nnx.Module,
    optimizer: nnx.Optimizer | None = None,
) -> dict[str, Any]:
    """Load the checkpoint of ``epoch`` into ``model`` (and ``optimizer``), in place;
    returns its metrics. A damaged checkpoint raises ``CheckpointError``."""
    _check_listed(run_dir, epoch)
    targets = {"model": _restore_target(model), "metrics": ocp.args.JsonRestore()}
    if optimizer is not None:
        targets["optimizer"] = _restore_target(optimizer)
    items = _restore(run_dir, epoch, targets)
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
    """The model of ``epoch`` (the last intact one when None, see :func:`readable_epoch`),
    in eval mode, and an info dict: the run's config.json entries (``config``,
    ``num_classes``, ``in_channels``, ``mean``, ``std``, ``class_names``, ...) plus ``epoch``
    and that epoch's ``metrics``. Preprocess inputs with
    ``ssc_jax.normalize_images(images, info["mean"], info["std"])``."""
    run = read_run_config(run_dir)
    if epoch is None:
        epoch = readable_epoch(run_dir, items=("model", "metrics"))
    model = model_from_run_config(run)
    metrics = restore_checkpoint(run_dir, epoch, model)
    model.eval()
    return model, {**run, "epoch": epoch, "metrics": metrics}
