"""Damaged files and exhausted resources end in one line that names them and what to do:
checkpoints, cached graphs, run metadata, activation files, datasets, a full disk, the
memory budget and a device's memory."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.errors import JaxRuntimeError
from PIL import Image
from safetensors.numpy import save_file

import ssc_jax
from ssc_jax import (
    TrainConfig,
    list_checkpoints,
    load_checkpoint,
    load_dataset,
    ssc,
    ssc_gram,
    train,
)
from ssc_jax.pipeline.analysis.analyze import analyze_checkpoint
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.analysis.inputs import InputError, load_inputs, resolve_epoch
from ssc_jax.pipeline.analysis.layer_graphs import checkpoint_graphs
from ssc_jax.pipeline.analysis.uncertainty import Resampling
from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.store.graph_store import GraphFileError, dense_stack, load_graphs
from ssc_jax.pipeline.store.locks import folder_lock, lock_holder, lock_path
from ssc_jax.pipeline.store.outputs import atomic_output_dir
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.working_set import WorkingSet
from ssc_jax.training.checkpoints import CheckpointError, checkpoint_problem, readable_epoch

TINY = TrainConfig(
    model="small_cnn",
    dataset="digits",
    width=0.25,
    epochs=2,
    batch_size=32,
    data_fraction=0.2,
    augment=False,
)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    history = train(TINY, run, progress=False, summary=False)
    return run, history


def largest_file(step, item: str = "model"):
    return max((p for p in (step / item).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged_run(two_epoch_run, tmp_path):
    """A copy of the two-epoch run whose epoch 2 model has its largest file cut in half."""
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    damaged = largest_file(run / "checkpoints" / "2")
    truncate(damaged)
    return run, damaged


def test_intact_checkpoints_have_no_problem(two_epoch_run):
    run, _ = two_epoch_run
    assert [checkpoint_problem(run, epoch) for epoch in (1, 2)] == [None, None]
    assert readable_epoch(run) == 2


@pytest.mark.parametrize("damage", [truncate, flip_bytes, lambda p: p.unlink()])
def test_a_damaged_checkpoint_is_named_and_the_last_intact_one_is_used(
    two_epoch_run, tmp_path, damage
):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    damaged = largest_file(run / "checkpoints" / "2")
    damage(damaged)
    assert list_checkpoints(run) == [1, 2]  # still listed: orbax committed it
    with pytest.raises(CheckpointError, match=f"epoch 2 is damaged: {damaged}") as error:
        load_checkpoint(run, 2)
    assert "\n" not in str(error.value)
    with pytest.warns(UserWarning, match=f"skipping the checkpoint of epoch 2: {damaged}"):
        _, info = load_checkpoint(run)
    assert info["epoch"] == 1
    assert info["metrics"] == two_epoch_run[1][0]


def test_without_checksums_a_read_failure_names_the_item(damaged_run):
    run, _ = damaged_run
    shutil.rmtree(run / "checksums")
    assert checkpoint_problem(run, 1) is None
    problem = checkpoint_problem(run, 2)
    assert problem.startswith(f"{run / 'checkpoints' / '2' / 'model'} cannot be read (")
    assert "\n" not in problem and "TensorStore details" not in problem
    with pytest.raises(CheckpointError, match="epoch 2 is damaged"):
        load_checkpoint(run, 2)


def test_damaged_metrics_do_not_stop_listing(two_epoch_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    truncate(run / "checkpoints" / "2" / "metrics" / "metrics")
    assert list_checkpoints(run) == [1, 2]
    with pytest.warns(UserWarning, match="epoch 2: .*metrics/metrics has"):
        assert readable_epoch(run) == 1


def test_every_checkpoint_damaged(damaged_run):
    run, _ = damaged_run
    truncate(largest_file(run / "checkpoints" / "1"))
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="every checkpoint"):
        readable_epoch(run)


def test_resume_restarts_after_the_last_intact_epoch(two_epoch_run, damaged_run):
    run, _ = damaged_run
    with pytest.warns(UserWarning, match="resuming after epoch 1, .* epoch 2 is trained again"):
        history = train(TINY, run, progress=False, summary=False)
    assert [m["epoch"] for m in history] == [1, 2]
    assert checkpoint_problem(run, 2) is None
    expected = two_epoch_run[1][1]
    assert history[1]["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
    assert history[1]["test_accuracy"] == pytest.approx(expected["test_accuracy"])


def test_resume_prints_where_it_resumes(two_epoch_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    train(TINY, run, progress=False)
    assert f"the run in {run} has finished its 2 epochs" in capsys.readouterr().out
    train(dataclasses.replace(TINY, epochs=3), run, progress=False)
    out = capsys.readouterr().out
    assert f"resuming the run in {run} after epoch 2 of 3" in out
    assert "epoch 3: train loss" in out and "test acc" in out  # progress=False keeps these


def test_analysis_names_a_damaged_epoch_and_falls_back(damaged_run):
    run, damaged = damaged_run
    with pytest.raises(InputError, match=r"epoch 2 is damaged: .* pass --epoch with .* \[1\]"):
        resolve_epoch(run, 2)
    with pytest.warns(UserWarning, match=f"skipping the checkpoint of epoch 2: {damaged}"):
        assert resolve_epoch(run, None) == 1


def test_cli_analyze_of_a_damaged_epoch_is_one_line(damaged_run, tmp_path, capsys):
    run, damaged = damaged_run
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--epoch", "2", "--out", str(out), "--n", "40"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssc-jax: error: the checkpoint of epoch 2 is damaged: ")
    assert str(damaged) in err and err.count("\n") == 1
    assert not out.exists()


def _without_num_classes(path) -> None:
    run = json.loads(path.read_text())
    del run["num_classes"]
    path.write_text(json.dumps(run))


@pytest.mark.parametrize("damage", [truncate, _without_num_classes])
def test_damaged_config_is_one_line(two_epoch_run, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    damage(run / "config.json")
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--out", str(out), "--n", "40", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'} is damaged" in err and err.count("\n") == 1
    assert "retrain the run into a new folder" in err
    assert not out.exists()


@pytest.mark.parametrize("sums", ["[1]", '{"model/_METADATA": 5}', "{"])
def test_damaged_checksums_fall_back_to_reading_the_checkpoint(damaged_run, sums):
    run, _ = damaged_run
    for epoch in (1, 2):
        (run / "checksums" / f"{epoch}.json").write_text(sums)
    assert checkpoint_problem(run, 1) is None
    assert checkpoint_problem(run, 2).startswith(f"{run / 'checkpoints' / '2' / 'model'} cannot")


@pytest.mark.parametrize("damage", [truncate, lambda p: p.write_text("not a zip")])
def test_a_damaged_cached_graph_is_named_removed_and_solved_again(two_epoch_run, tmp_path, damage):
    run, _ = two_epoch_run
    analysis = AnalysisSet(n=40)
    inputs = load_inputs(analysis, "digits")
    solve = dict(analysis=analysis, solver=SolverSettings(), cache_dir=tmp_path, progress=False)
    first = checkpoint_graphs(run, 2, inputs, **solve)
    damage(first.path)
    with pytest.raises(GraphFileError, match=f"{first.path} is damaged"):
        load_graphs(first.path)
    with pytest.warns(UserWarning, match=f"removed, solving again: {first.path} is damaged"):
        again = checkpoint_graphs(run, 2, inputs, **solve)
    np.testing.assert_allclose(
        dense_stack(again.coef), dense_stack(first.coef), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(
        dense_stack(load_graphs(again.path).coef), dense_stack(again.coef)
    )


def test_a_cached_graph_of_an_earlier_version_is_solved_again(two_epoch_run, tmp_path):
    run, _ = two_epoch_run
    analysis = AnalysisSet(n=40)
    inputs = load_inputs(analysis, "digits")
    solve = dict(analysis=analysis, solver=SolverSettings(), cache_dir=tmp_path, progress=False)
    first = checkpoint_graphs(run, 2, inputs, **solve)
    with np.load(first.path) as f:  # without the solver's own diagnostics
        older = {k: f[k] for k in f.files if not k.startswith("own_")}
    np.savez_compressed(first.path, **older)
    with pytest.warns(UserWarning, match=f"solving again: {first.path} was written by an earlier"):
        again = checkpoint_graphs(run, 2, inputs, **solve)
    assert list(load_graphs(again.path).diagnostics["own"]) == list(first.diagnostics["own"])


def class_folders(root, classes, per_class: int = 12):
    """A folder of digits as PNG files in class folders ``root/<digit>/<i>.png``."""
    images, labels, _ = load_dataset("digits", "test")
    for c in classes:
        (root / str(c)).mkdir(parents=True)
        for i, image in enumerate(images[labels == c][:per_class]):
            Image.fromarray(image[..., 0]).save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A one-epoch run trained on a folder of digits 0, 1, 2 (8x8 RGB)."""
    root = tmp_path_factory.mktemp("folders")
    data = class_folders(root / "three", [0, 1, 2], per_class=40)
    run = root / "run"
    argv = ["train", "--model", "small_cnn", "--dataset", str(data), "--test-data", str(data)]
    argv += ["--width", "0.25", "--epochs", "1", "--batch-size", "32", "--no-augment"]
    assert main([*argv, "--out", str(run), "--quiet"]) == 0
    return run, root


def _one_line_error(argv, capsys, out) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssc-jax: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not out.exists()
    return err


def test_n_too_small_for_the_classes(two_epoch_run, tmp_path, capsys):
    out = tmp_path / "out"
    for n in ("10", "19"):
        argv = ["analyze", str(two_epoch_run[0]), "--n", n, "--out", str(out), "--quiet"]
        err = _one_line_error(argv, capsys, out)
        assert f"N = {n} analysis inputs over the 10 classes" in err
        assert "at least 2 per class: pass --n 20 or more" in err


def test_one_class_data_is_refused(folder_run, tmp_path, capsys):
    run, _ = folder_run
    one = class_folders(tmp_path / "one", [3])
    out = tmp_path / "out"
    argv = ["analyze", str(run), "--data", str(one), "--n", "10", "--out", str(out), "--quiet"]
    err = _one_line_error(argv, capsys, out)
    assert "holds one class ('3')" in err and "at least 2 classes" in err


def test_data_of_another_shape_or_class_count_is_refused(folder_run, tmp_path, capsys):
    run, _ = folder_run
    out = tmp_path / "out"
    argv = ["analyze", str(run), "--data", "digits", "--n", "40", "--out", str(out), "--quiet"]
    err = _one_line_error(argv, capsys, out)
    assert "images are (8, 8, 1) but the run" in err and "trained on (8, 8, 3)" in err
    two = class_folders(tmp_path / "two", [0, 1])
    argv = ["analyze", str(run), "--data", str(two), "--n", "10", "--out", str(out), "--quiet"]
    err = _one_line_error(argv, capsys, out)
    assert "has 2 classes but the run" in err and "was trained on 3" in err


def test_train_and_test_classes_that_differ_are_refused_before_training(folder_run, capsys):
    _, root = folder_run
    three, two = root / "three", class_folders(root / "other", [0, 1])
    out = root / "mismatch"
    argv = ["train", "--model", "small_cnn", "--dataset", str(three), "--test-data", str(two)]
    err = _one_line_error([*argv, "--out", str(out), "--quiet"], capsys, out)
    assert "has the classes ['0', '1'] but the training set" in err and "['0', '1', '2']" in err
    one = class_folders(root / "single", [5])
    argv = ["train", "--model", "small_cnn", "--dataset", str(one), "--test-data", str(one)]
    err = _one_line_error([*argv, "--out", str(out), "--quiet"], capsys, out)
    assert "holds one class ('5')" in err


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_half_precision_input_is_a_value_error(dtype):
    X = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"X has dtype .*16, .* pass float32 or float64"):
        ssc(jnp.asarray(X, dtype))
    with pytest.raises(ValueError, match=r"G has dtype .*16, .* pass float32 or float64"):
        ssc_gram(jnp.asarray(X @ X.T, dtype))


@pytest.mark.parametrize(
    "capped, cap",
    [
        (SolverSettings(admm=ADMM(max_iterations=1), method="admm"), "max_iterations = 1"),
        # 1e-12: below what float32 coefficients certify, even after the float64 finish.
        (SolverSettings(working_set=WorkingSet(max_rounds=1, gap_tol=1e-12)), "max_rounds = 1"),
    ],
)
def test_an_iteration_cap_warns_and_marks_the_layers(two_epoch_run, capped, cap):
    options = {"analysis": AnalysisSet(n=40), "cache": False, "progress": False}
    options["resampling"] = Resampling(resamples=0)
    with pytest.warns(RuntimeWarning, match=rf"SSC did not converge on \d+ of \d+ .*{cap}"):
        result = analyze_checkpoint(two_epoch_run[0], solver=capped, **options)
    converged = result.graphs.diagnostics["converged"].astype(bool)
    assert not converged.all()
    expected = [name for name, ok in zip(result.graphs.layers, converged, strict=True) if not ok]
    assert result.metrics["unconverged_layers"] == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fine = analyze_checkpoint(two_epoch_run[0], **options)
    assert fine.metrics["unconverged_layers"] == []


def test_analysing_a_run_being_trained_says_so(two_epoch_run, tmp_path, capsys):
    run, _ = two_epoch_run
    assert lock_holder(run) is None
    with folder_lock(run):
        assert lock_holder(run) == f"pid {os.getpid()}"
        with pytest.warns(UserWarning, match=r"is being trained now \(pid \d+\); only .* 1-2"):
            assert resolve_epoch(run, None) == 2
        empty = tmp_path / "empty"
        empty.mkdir()
        with folder_lock(empty), pytest.raises(InputError, match=r"no checkpoints .*trained now"):
            resolve_epoch(empty, None)
    assert lock_holder(run) is None
    assert not lock_path(run).exists()


def test_taking_the_lock_recovers_from_a_killed_swap(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target, kind="analyze") as folder:
        (folder / "report.html").write_text("previous")
    aside = tmp_path / ".out.old-0123abcd"
    aside.mkdir()
    os.replace(target, aside / "previous")  # killed between the swap's two renames
    (tmp_path / ".out.tmp-89abcdef").mkdir()
    (tmp_path / ".out.tmp-89abcdef" / "metrics.json").write_text("{")
    (tmp_path / ".out.tmp-notours").mkdir()  # not a name ssc-jax makes: left alone
    with folder_lock(target):
        assert (target / "report.html").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-notours", "out"]


def _hidden_beside(out) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


@pytest.mark.slow  # three analyze processes
def test_analyze_killed_at_random_points_leaves_nothing_partial(two_epoch_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run[0], run)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ssc_jax.run", "analyze", str(run), "--out", str(out)]
    argv += ["--n", "40", "--quiet", "--resamples", "0"]
    src = str(Path(ssc_jax.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    delay = float(np.random.default_rng(17).uniform(1, 10))

    def publishing() -> bool:
        return any(".tmp-" in name for name in _hidden_beside(out))

    def started(seconds: float):
        begun = time.monotonic()
        return lambda: time.monotonic() - begun > seconds

    for kill_when in (started(delay), publishing):
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while process.poll() is None and not kill_when():
            time.sleep(0.01)
        process.kill()
        process.wait()
        if kill_when is publishing:  # killed mid-write: its temporary folder is left over
            assert process.returncode == -9 and publishing()
            assert not out.exists()
        if out.exists():  # it finished before the kill: then it is whole
            assert json.loads((out / "metrics.json").read_text())["epoch"] == 2
        assert not (run / "ssc_graphs").exists() or all(
            load_graphs(p).coef[0].shape == (40, 40)
            for p in (run / "ssc_graphs").glob("*.npz")
            if not p.name.startswith(".")
        )
    finished = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 2
    assert (out / "report.html").is_file()
    assert _hidden_beside(out) == []
    assert [p.name for p in (run / "ssc_graphs").iterdir() if p.name.startswith(".")] == []
    assert [checkpoint_problem(run, epoch) for epoch in (1, 2)] == [None, None]


def test_a_run_trained_on_a_relative_path_is_analysed_from_anywhere(tmp_path, monkeypatch, capsys):
    """The run records its data as absolute paths, so it opens from any folder."""
    home = tmp_path / "home"
    class_folders(home / "images", [0, 1], per_class=20)
    monkeypatch.chdir(home)
    argv = ["train", "--model", "small_cnn", "--dataset", "images", "--test-data", "images"]
    argv += ["--width", "0.25", "--epochs", "1", "--batch-size", "16", "--no-augment"]
    assert main([*argv, "--out", "run", "--quiet"]) == 0
    recorded = json.loads((home / "run" / "config.json").read_text())["config"]
    assert recorded["dataset"] == recorded["test_dataset"] == str(home / "images")
    # resuming with the same relative path is the same run
    assert main([*argv, "--out", "run", "--quiet"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = elsewhere / "out"
    argv = ["analyze", str(home / "run"), "--n", "20", "--resamples", "0"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").exists()


def digests(path: Path) -> dict[str, str]:
    """SHA-256 of ``path``, or of every file under it, by relative path."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _fails_cleanly(argv, capsys, out, inputs=()) -> str:
    """``_one_line_error``, and no temporary folder beside ``out``, and ``inputs`` unchanged."""
    before = [digests(p) for p in inputs]
    err = _one_line_error(argv, capsys, out)
    assert _hidden_beside(out) == []
    assert [digests(p) for p in inputs] == before
    return err


@pytest.fixture(scope="module")
def saved_activations(tmp_path_factory):
    """One network's activations on 60 inputs of 3 classes in each of the three layouts."""
    root = tmp_path_factory.mktemp("activations")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    conv1 = (rng.normal(size=(60, 6, 2)) + labels[:, None, None]).astype(np.float32)
    conv2 = (rng.normal(size=(60, 5)) + 2 * labels[:, None]).astype(np.float32)
    np.savez(root / "acts.npz", conv1=conv1, conv2=conv2, labels=labels, logits=np.eye(3)[labels])
    (root / "npy").mkdir()
    for name, array in (("conv1", conv1), ("conv2", conv2), ("labels", labels)):
        np.save(root / "npy" / f"{name}.npy", array)
    manifest = {"layers": ["conv1.npy", "conv2.npy"], "labels": "labels.npy"}
    (root / "npy" / "manifest.json").write_text(json.dumps(manifest))
    tensors = {"conv1": conv1, "conv2": conv2, "labels": labels}
    save_file(tensors, root / "acts.safetensors", {"layers": json.dumps(["conv1", "conv2"])})
    return root


@pytest.mark.parametrize(
    "saved, damaged, damage",
    [
        ("acts.npz", "", truncate),
        ("acts.npz", "", flip_bytes),  # a member fails its CRC when its layer is read
        ("npy", "conv1.npy", lambda p: p.write_bytes(p.read_bytes()[:40])),  # header cut
        ("npy", "conv2.npy", truncate),
        ("npy", "labels.npy", lambda p: p.write_text("not an array")),
        ("npy", "manifest.json", lambda p: p.write_bytes(b'{"layers": [\xff')),
        ("acts.safetensors", "", truncate),
        ("acts.safetensors", "", lambda p: p.write_bytes(b"\xff" * 8 + b"{}")),
    ],
)
def test_a_damaged_activation_file_is_named(
    saved_activations, tmp_path, capsys, saved, damaged, damage
):
    source = tmp_path / saved
    copy = shutil.copytree if (saved_activations / saved).is_dir() else shutil.copy
    copy(saved_activations / saved, source)
    damage(source / damaged if damaged else source)
    out = tmp_path / "out"
    argv = ["activations", str(source), "--out", str(out), "--quiet"]
    err = _fails_cleanly(argv, capsys, out, inputs=[source])
    assert f"error: {source / damaged if damaged else source}: " in err
    assert ("write it again" if damaged == "manifest.json" else "save the activations again") in err


def _flip_a_member(path) -> None:
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo(archive.namelist()[-1])
    data = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len(member.filename)  # its compressed bytes
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "zipped, damage, named, says",
    [
        (True, truncate, "", "not a readable zip archive"),
        (True, _flip_a_member, "", "not a readable zip archive"),
        (False, lambda f: (f / "0" / "0.png").write_text("no"), "0/0.png", "(not a JPEG or PNG"),
        (False, lambda f: truncate(f / "1" / "3.png"), "1/3.png", "(image file is truncated)"),
    ],
)
def test_a_damaged_dataset_is_named(tmp_path, capsys, zipped, damage, named, says):
    data = class_folders(tmp_path / "images", [0, 1])
    if zipped:
        data = Path(shutil.make_archive(str(tmp_path / "images"), "zip", data))
    damage(data)
    out = tmp_path / "run"
    argv = ["train", "--model", "small_cnn", "--dataset", str(data), "--test-data", str(data)]
    err = _fails_cleanly([*argv, "--out", str(out), "--quiet"], capsys, out, inputs=[data])
    assert f"{data / named if named else data}" in err and says in err
    assert ("download or copy it again" if zipped else "replace or remove it") in err


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/inside")


def test_a_full_disk_while_writing_an_output_keeps_the_previous_one(
    saved_activations, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    given = ["activations", str(saved_activations / "acts.npz"), "--quiet", "--resamples", "0"]
    argv = [*given, "--out", str(out)]
    assert main(argv) == 0
    previous = digests(out)
    capsys.readouterr()
    # write_json runs after the figures are written
    monkeypatch.setattr("ssc_jax.pipeline.publish.write.write_json", _disk_full)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ssc-jax: error: cannot write --out {out}: No space left on device; free space on "
        "its disk, or pass --out on another one\n"
    )
    assert digests(out) == previous and _hidden_beside(out) == []
    fresh = tmp_path / "fresh"
    _fails_cleanly([*given, "--out", str(fresh)], capsys, fresh)


TRAIN_TINY = ["train", "--model", "small_cnn", "--dataset", "digits", "--width", "0.25"]
TRAIN_TINY += ["--epochs", "2", "--batch-size", "32", "--data-fraction", "0.2", "--no-augment"]


def test_a_full_disk_while_saving_a_checkpoint_says_to_free_space_and_resume(
    tmp_path, capsys, monkeypatch
):
    save = ocp.CheckpointManager.save

    def fails_at_epoch_2(manager, step, *args, **kwargs):
        if step < 2:
            return save(manager, step, *args, **kwargs)
        (manager.directory / f"{step}.orbax-checkpoint-tmp" / "model").mkdir(parents=True)
        raise ValueError(  # as TensorStore reports it
            f'RESOURCE_EXHAUSTED: Error writing local file "{manager.directory}/...": '
            "No space left on device [os_error_code='28']"
        )

    monkeypatch.setattr(ocp.CheckpointManager, "save", fails_at_epoch_2)
    run = tmp_path / "run"
    assert main([*TRAIN_TINY, "--out", str(run), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"ssc-jax: error: cannot write the run folder {run}: No space left on device; free "
        "space on its disk, then run the same command again to resume\n"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]
    assert checkpoint_problem(run, 1) is None
    monkeypatch.undo()
    assert main([*TRAIN_TINY, "--out", str(run), "--quiet"]) == 0
    assert list_checkpoints(run) == [1, 2]


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_writing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    run = tmp_path / "run"
    err = _fails_cleanly([*TRAIN_TINY, "--out", str(run), "--quiet"], capsys, run)
    assert f"cannot write the run folder {run}: No space left on device" in err


def test_a_memory_budget_too_small_for_one_problem(saved_activations, tmp_path, capsys):
    out = tmp_path / "out"
    source = saved_activations / "acts.npz"
    argv = ["activations", str(source), "--memory-gb", "1e-6", "--out", str(out), "--quiet"]
    err = _fails_cleanly(argv, capsys, out, inputs=[source])
    assert "an SSC problem with n=60 needs at least 74,880 bytes; the memory budget is 1,073" in err
    assert err.endswith(": pass --memory-gb 7e-05 or more\n")


def test_a_memory_budget_too_small_for_one_layers_features(two_epoch_run, tmp_path, capsys):
    run, _ = two_epoch_run
    out = tmp_path / "out"
    argv = ["analyze", str(run), "--n", "60", "--memory-gb", "1e-9", "--out", str(out)]
    err = _fails_cleanly([*argv, "--quiet"], capsys, out, inputs=[])
    assert re.search(r"error: a layer of [\d,]+ features \(two inputs\) needs at least", err)
    assert err.endswith(", or a smaller --n\n") and "pass --memory-gb" in err


def test_no_disk_space_for_the_grams_held_on_disk(two_epoch_run, tmp_path, capsys, monkeypatch):
    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk, raising=False)
    run, _ = two_epoch_run
    out = tmp_path / "out"
    # Room for the features of two inputs of each layer, not for the 60 x 60 Grams.
    argv = ["analyze", str(run), "--n", "60", "--memory-gb", "2e-5", "--out", str(out)]
    err = _fails_cleanly([*argv, "--quiet"], capsys, out, inputs=[])
    assert re.search(r"error: no room in /\S+ for [\d.e-]+ GiB of Grams held on disk", err)
    assert err.endswith("set TMPDIR to a folder on a disk with room\n")


def _out_of_device_memory(*args, **kwargs):
    raise JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.0G.")


@pytest.mark.parametrize(
    "patched, command, smaller",
    [
        ("ssc_jax.pipeline.analysis.layer_graphs.ssc_gram", "activations", "--memory-gb"),
        ("ssc_jax.training.trainer._train_epoch", "train", "--batch-size"),
    ],
)
def test_a_device_out_of_memory_is_one_line(
    saved_activations, tmp_path, capsys, monkeypatch, patched, command, smaller
):
    monkeypatch.setattr(patched, _out_of_device_memory)
    out = tmp_path / "out"
    source = saved_activations / "acts.npz"
    argv = ["activations", str(source)] if command == "activations" else TRAIN_TINY
    err = _fails_cleanly([*argv, "--out", str(out), "--quiet"], capsys, out, inputs=[source])
    assert re.search(r"error: the memory of \w+ device 0 \(.+\) ran out \(RESOURCE_EXHAUSTED", err)
    assert err.endswith(f"; pass a smaller {smaller}\n")
