"""The command line: --help everywhere, and clear errors that leave no partial output."""

from __future__ import annotations

import pytest

from ssc_jax.pipeline.cli import main

COMMANDS = ["default", "train", "analyze", "dynamics", "compare"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: python -m ssc_jax.run" in text
    if command is None:
        assert all(c in text for c in COMMANDS)
    else:
        assert "--out" in text


def _fails_cleanly(argv, capsys, target, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")]


def test_wrong_model_name(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "vgg7", "--dataset", "digits", "--epochs", "1", "--out", str(run)]
    _fails_cleanly(argv, capsys, run, "unknown model 'vgg7'")


def test_unreadable_training_data(tmp_path, capsys):
    run = tmp_path / "run"
    missing = tmp_path / "no_such_images.zip"
    argv = ["train", "--model", "small_cnn", "--dataset", str(missing), "--out", str(run)]
    _fails_cleanly(argv, capsys, run, "--test-data must name the test images")
    _fails_cleanly([*argv, "--test-data", "digits"], capsys, run, "no_such_images.zip")


def test_missing_run_folder(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["analyze", str(tmp_path / "nowhere"), "--out", str(out)]
    _fails_cleanly(argv, capsys, out, "no training run")


def test_missing_checkpoint(tiny_run, tmp_path, capsys, fast_analysis):
    out = tmp_path / "out"
    argv = ["analyze", str(tiny_run), "--epoch", "7", "--out", str(out), *fast_analysis]
    _fails_cleanly(argv, capsys, out, "no checkpoint for epoch 7")


def test_unreadable_analysis_data(tiny_run, tmp_path, capsys, fast_analysis):
    out = tmp_path / "deeper" / "out"
    bad = tmp_path / "broken.zip"
    bad.write_text("not a zip")
    argv = ["dynamics", str(tiny_run), "--data", str(bad), "--out", str(out), *fast_analysis]
    assert main(argv) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "deeper").exists()


def test_n_larger_than_dataset(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["analyze", str(tiny_run), "--out", str(out), "--n", "100000", "--quiet"]
    _fails_cleanly(argv, capsys, out, "holds only")


def test_refuses_to_replace_a_foreign_folder(tiny_run, tmp_path, capsys, fast_analysis):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["analyze", str(tiny_run), "--out", str(tmp_path), *fast_analysis]
    assert main(argv) == 2
    assert "not written by ssc-jax" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
