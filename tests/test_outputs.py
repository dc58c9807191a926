"""Output folders: nothing ssc-jax did not just make is ever replaced, and one command at a
time writes a folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.store.locks import folder_lock, lock_path
from ssc_jax.pipeline.store.outputs import (
    MARKER,
    OutputError,
    atomic_output_dir,
    check_output_dir,
    check_training_dir,
    removed_on_failure,
)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (``None``) below ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def fake_run(folder: Path, epochs: int = 2) -> Path:
    """A folder laid out like a training run, with bytes that must survive."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text('{"config": {"model": "small_cnn"}}\n')
    for epoch in range(1, epochs + 1):
        ckpt = folder / "checkpoints" / f"epoch_{epoch:04d}"
        (ckpt / "model").mkdir(parents=True)
        (ckpt / "model" / "weights").write_bytes(os.urandom(256))
        (ckpt / "metrics.json").write_text(json.dumps({"epoch": epoch}))
    return folder


def write_output(target: Path, kind: str | None, files: dict[str, str]) -> None:
    with atomic_output_dir(target, kind=kind) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def hidden_siblings(target: Path) -> list[str]:
    return [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")]


def test_analyze_into_the_folder_holding_its_run_keeps_every_checkpoint(
    tiny_run, tmp_path, capsys, fast_analysis
):
    out = tmp_path / "default"
    with atomic_output_dir(out, kind="default") as tmp:
        shutil.copytree(tiny_run, tmp / "run")
        (tmp / "report.html").write_text("<html>the default's report</html>")
    run = out / "run"
    before = snapshot(out)
    checkpoints = [name for name, data in before.items() if name.startswith("run/checkpoints/")]
    assert len([name for name in checkpoints if before[name]]) > 2

    assert main(["analyze", str(run), "--out", str(out), *fast_analysis]) == 2
    err = capsys.readouterr().err
    assert "error: --out " in err and err.count("\n") == 1
    assert snapshot(out) == before
    assert hidden_siblings(out) == []

    # Whichever way a command names the folder, the run below it is refused.
    with pytest.raises(OutputError, match="contains the input"):
        check_output_dir(out, kind="analyze", inputs=[run])
    with pytest.raises(OutputError, match=r"holds a training run at .*run"):
        check_output_dir(out, kind="default")
    with (
        pytest.raises(OutputError, match="contains the input"),
        atomic_output_dir(out, kind="analyze", inputs=["digits", None, run]),
    ):
        pass
    assert snapshot(out) == before


def test_a_plain_folder_holding_the_run_is_refused(tmp_path, monkeypatch):
    base = tmp_path / "default"
    run = fake_run(base / "run")
    before = snapshot(base)
    with pytest.raises(OutputError, match="contains the input"):
        check_output_dir(base, kind="analyze", inputs=[run])
    with (
        pytest.raises(OutputError, match="not written by ssc-jax"),
        atomic_output_dir(base, kind="analyze"),
    ):
        pass
    with pytest.raises(OutputError, match=r"holds a training run \(config.json"):
        check_output_dir(run, kind="analyze")
    # A run given by a relative path inside the target is recognised too.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="contains the input default/run"):
        check_output_dir(base, kind="analyze", inputs=["default/run"])
    assert snapshot(base) == before
    assert hidden_siblings(base) == []


def test_foreign_folder_is_refused_and_untouched(tmp_path):
    target = tmp_path / "mine"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me")
    (target / "sub" / "data.bin").write_bytes(os.urandom(64))
    before = snapshot(target)
    with (
        pytest.raises(OutputError, match="not written by ssc-jax") as refused,
        atomic_output_dir(target, kind="analyze") as tmp,
    ):
        (tmp / "metrics.json").write_text("{}")
    assert "\n" not in str(refused.value)
    assert snapshot(target) == before
    assert hidden_siblings(target) == []

    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "a_file", kind="analyze")


def test_marker_records_the_kind_and_what_was_written(tmp_path):
    target = tmp_path / "out"
    write_output(target, "dynamics", {"metrics.json": "{}", "report.html": "r"})
    record = json.loads((target / MARKER).read_text())
    assert record["kind"] == "dynamics"
    assert record["entries"] == ["metrics.json", "report.html"]


def test_same_kind_is_replaced_another_kind_refused(tmp_path):
    target = tmp_path / "out"
    write_output(target, "analyze", {"first.txt": "1"})
    write_output(target, "analyze", {"second.txt": "2"})
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "second.txt"]
    assert hidden_siblings(target) == []

    before = snapshot(target)
    for other in ("dynamics", "compare", "default", None):
        with pytest.raises(OutputError, match="holds the output of ssc-jax 'analyze', not of"):
            write_output(target, other, {"x.txt": "x"})
    assert snapshot(target) == before


def test_files_added_to_a_previous_output_are_not_replaced(tmp_path):
    target = tmp_path / "out"
    write_output(target, "compare", {"report.html": "r"})
    (target / "my_notes.txt").write_text("added later by hand")
    before = snapshot(target)
    with pytest.raises(OutputError, match=r"holds my_notes\.txt, which ssc-jax did not write"):
        write_output(target, "compare", {"report.html": "new"})
    assert snapshot(target) == before


def test_old_plain_text_marker_is_refused(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / MARKER).write_text("written by ssc-jax; safe to replace with a new run\n")
    (target / "report.html").write_text("old")
    with pytest.raises(OutputError, match="older ssc-jax"):
        check_output_dir(target, kind="analyze")


def test_a_failed_write_leaves_the_previous_output_intact(tmp_path):
    target = tmp_path / "out"
    write_output(target, "analyze", {"metrics.json": '{"old": 1}'})
    before = snapshot(target)
    with pytest.raises(RuntimeError), atomic_output_dir(target, kind="analyze") as tmp:
        (tmp / "metrics.json").write_text('{"half": 1}')
        raise RuntimeError("boom")
    assert snapshot(target) == before
    assert hidden_siblings(target) == []


def test_what_appears_during_the_write_is_checked_before_the_swap(tmp_path):
    target = tmp_path / "out"
    write_output(target, "analyze", {"metrics.json": "{}"})
    with (
        pytest.raises(OutputError, match=r"holds late\.txt"),
        atomic_output_dir(target, kind="analyze") as tmp,
    ):
        (tmp / "metrics.json").write_text('{"new": 1}')
        (target / "late.txt").write_text("written meanwhile by someone else")
    assert (target / "late.txt").read_text() == "written meanwhile by someone else"
    assert (target / "metrics.json").read_text() == "{}"
    assert hidden_siblings(target) == []


def test_training_folder_checks(tmp_path):
    check_training_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_training_dir(tmp_path / "empty")
    check_training_dir(fake_run(tmp_path / "run"))

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a run folder"):
        check_training_dir(tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="not a training run"):
        check_training_dir(tmp_path / "foreign")
    write_output(tmp_path / "report", "analyze", {"report.html": "r"})
    with pytest.raises(OutputError, match="analysis output, not a training run"):
        check_training_dir(tmp_path / "report")


def test_removed_on_failure_keeps_a_run_with_a_checkpoint(tmp_path):
    run = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), removed_on_failure(run, keep=lambda p: False):
        run.mkdir()
        raise RuntimeError("before the first checkpoint")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), removed_on_failure(run, keep=lambda p: True):
        fake_run(run)
        raise RuntimeError("after a checkpoint")
    assert (run / "config.json").exists()


def test_out_under_a_regular_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target in (blocker / "out", blocker / "deeper" / "out"):
        with (
            pytest.raises(OutputError, match=r"lies under .*a_file, which is a file"),
            atomic_output_dir(target, kind="analyze"),
        ):
            pass
        with pytest.raises(OutputError, match="which is a file"), folder_lock(target):
            pass
    argv = ["train", "--model", "small_cnn", "--dataset", "digits", "--epochs", "1"]
    assert main([*argv, "--out", str(blocker / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "which is a file" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_an_output_error(tmp_path):
    """A real permission error (as root, see the regular-file and long-name tests)."""
    parent = tmp_path / "read_only"
    parent.mkdir(mode=0o555)
    with (
        pytest.raises(OutputError, match="Permission denied"),
        atomic_output_dir(parent / "out", kind="analyze"),
    ):
        pass
    with pytest.raises(OutputError, match="Permission denied"), folder_lock(parent / "out"):
        pass
    assert list(parent.iterdir()) == []


HOLD_SCRIPT = """
import sys, time
from ssc_jax.pipeline.store.locks import folder_lock

with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_refuses_a_second_holder_and_is_freed_when_its_process_is_killed(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(OutputError, match=rf"{folder} is in use .*pid {holder.pid}\)") as busy,
            folder_lock(folder),
        ):
            pass
        assert "\n" not in str(busy.value)
    finally:
        holder.kill()  # SIGKILL: no exit handler runs, the OS drops the lock
        holder.wait(timeout=30)
    assert lock_path(folder).exists()  # left behind, but no longer locked
    with folder_lock(folder) as locked:
        assert locked == folder
        assert lock_path(folder).read_text().strip() == str(os.getpid())
    assert not lock_path(folder).exists()


def test_lock_is_exclusive_within_a_process_and_tidies_up(tmp_path):
    folder = tmp_path / "new" / "deeper" / "run"
    with folder_lock(folder):
        assert lock_path(folder).parent.is_dir()
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"), folder_lock(folder):
            pass
    assert list(tmp_path.iterdir()) == []
    with folder_lock(folder):  # free again once released
        pass


def test_lock_and_output_together_leave_only_the_output(tmp_path):
    target = tmp_path / "out"
    with folder_lock(target), atomic_output_dir(target, kind="analyze") as tmp:
        (tmp / "report.html").write_text("r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "report.html").read_text() == "r"


@pytest.mark.parametrize("kind", ["analyze", "dynamics", "compare", "default"])
def test_every_kind_replaces_itself(tmp_path, kind):
    target = tmp_path / "out"
    write_output(target, kind, {"a.txt": "1"})
    write_output(target, kind, {"a.txt": "2"})
    assert (target / "a.txt").read_text() == "2"
    assert json.loads((target / MARKER).read_text())["kind"] == kind


def test_a_file_system_refusal_midway_is_one_line(tmp_path):
    """A real failure past the early checks: the hidden sibling's name is too long."""
    target = tmp_path / ("o" * 250)
    with (
        pytest.raises(OutputError, match=r"cannot write --out .*File name too long") as refused,
        atomic_output_dir(target, kind="analyze"),
    ):
        pass
    assert "\n" not in str(refused.value)
    with pytest.raises(OutputError, match=r"cannot lock .*File name too long"), folder_lock(target):
        pass
    assert list(tmp_path.iterdir()) == []
