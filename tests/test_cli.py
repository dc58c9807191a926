"""The command line: --help everywhere, and clear errors that leave no partial output."""

from __future__ import annotations

import dataclasses

import pytest

from ssc_jax.pipeline.analysis import analyze
from ssc_jax.pipeline.analysis.config import COMMAND_SETTINGS, AnalysisSet
from ssc_jax.pipeline.analysis.uncertainty import Resampling
from ssc_jax.pipeline.cli.arguments import (
    TRAIN_OPTIONS,
    analysis_settings,
    option_values,
    resampling_settings,
    solver_settings,
)
from ssc_jax.pipeline.cli.main import build_parser, main
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import DEFAULT_SOLVER, SolverOptions
from ssc_jax.solver.working_set import WorkingSet
from ssc_jax.training.trainer import TrainConfig

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


def _help_of(command: str, flag: str) -> str:
    subparsers = build_parser()._subparsers._group_actions[0]
    (action,) = [a for a in subparsers.choices[command]._actions if flag in a.option_strings]
    return action.help


def test_options_take_defaults_and_help_from_the_dataclasses():
    parser = build_parser()
    analysis, solver = analysis_settings(parser.parse_args(["analyze", "run"]))
    assert analysis == AnalysisSet() and analysis.n == 1000
    assert solver == COMMAND_SETTINGS and solver.solver.gap_tol == ADMM().gap_tol
    assert dataclasses.replace(solver.working_set, gap_tol=DEFAULT_SOLVER.gap_tol) == DEFAULT_SOLVER
    analysis, solver = analysis_settings(parser.parse_args(["default"]))
    assert analysis == AnalysisSet(n=500)  # the digits' test split holds 540
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ADMM)}
    assert _help_of("analyze", "--max-iter").startswith(helps["max_iterations"])
    assert _help_of("compare", "--tau") == helps["tau"] + " (default: %(default)s)"
    n_help = dataclasses.fields(AnalysisSet)[2].metadata["help"]
    assert _help_of("dynamics", "--n") == n_help + " (default: %(default)s)"
    assert parser.parse_args(["train", "--model", "m"]).epochs == 100


@pytest.mark.parametrize("command", ["default", "analyze", "dynamics", "compare"])
def test_every_analysis_takes_the_interval_options(command):
    argv = [command] if command == "default" else [command, "run"]
    parser = build_parser()
    assert resampling_settings(parser.parse_args(argv)) == Resampling()
    chosen = parser.parse_args([*argv, "--resamples", "0", "--level", "0.8"])
    assert resampling_settings(chosen) == Resampling(resamples=0, level=0.8)


def test_the_default_checks_its_interval_options_before_training(tmp_path, capsys):
    out = tmp_path / "default"
    assert main(["default", "--out", str(out), "--resamples", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssc-jax: error: --resamples/--level: resamples must be")
    assert not out.exists()


def test_options_set_the_settings():
    argv = ["analyze", "run", "--tau", "20", "--max-iter", "70", "--gap-tol", "1e-3"]
    argv += ["--no-normalize", "--memory-gb", "0.5", "--n", "80", "--layers", "blocks"]
    argv += ["--working-set-size", "32", "--max-rounds", "9"]
    analysis, solver = analysis_settings(build_parser().parse_args(argv))
    assert analysis == AnalysisSet(n=80, layers="blocks")
    assert solver.admm == ADMM(tau=20.0, max_iterations=70, gap_tol=1e-3)
    assert solver.working_set == WorkingSet(tau=20.0, gap_tol=1e-3, size=32, max_rounds=9)
    assert solver.method == "working-set" and solver.solver == solver.working_set
    admm = analysis_settings(build_parser().parse_args([*argv, "--solver", "admm"]))[1]
    assert admm.solver == solver.admm
    assert solver.options == SolverOptions(normalize=False, memory_budget_bytes=2**29)
    config = TrainConfig(
        model="vgg11", dataset="cifar10", epochs=3, learning_rate=0.05, augment=False
    )
    args = build_parser().parse_args(
        ["train", "--model", "vgg11", "--epochs", "3", "--lr", "0.05", "--no-augment"]
    )
    assert TrainConfig(**option_values(args, TRAIN_OPTIONS)) == config


def test_a_solver_flag_reaches_the_solver_as_given():
    parser = build_parser()
    argv = ["analyze", "run", "--gap-tol", "1e-4", "--max-rounds", "7", "--max-iter", "99"]
    settings = solver_settings(parser.parse_args([*argv, "--solver", "admm"]))
    assert settings.solver is settings.admm
    assert settings.admm == ADMM(gap_tol=1e-4, max_iterations=99)
    assert settings.working_set == WorkingSet(gap_tol=1e-4, max_rounds=7)
    assert settings.options == SolverOptions()
    # Each parsed value sits under a plain name: no "ADMM.gap_tol" keys to unflatten.
    subparsers = parser._subparsers._group_actions[0]
    dests = {a.dest for p in subparsers.choices.values() for a in p._actions}
    assert "gap_tol" in dests and not any("." in dest for dest in dests)


@pytest.mark.parametrize("option", [["--tau", "0"], ["--n", "-5"], ["--max-iter", "2.5"]])
def test_bad_option_values_are_usage_errors(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "run", *option])
    assert exit_info.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("a bug, not the user's doing")

    monkeypatch.setattr(analyze, "plan", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["analyze", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "ssc-jax: error" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _fails_cleanly(argv, capsys, target, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssc-jax: error: ") and match in err
    assert err.count("\n") == 1  # one line
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


@pytest.mark.slow  # trains the shared tiny run
def test_missing_checkpoint(tiny_run, tmp_path, capsys, fast_analysis):
    out = tmp_path / "out"
    argv = ["analyze", str(tiny_run), "--epoch", "7", "--out", str(out), *fast_analysis]
    _fails_cleanly(argv, capsys, out, "no checkpoint for epoch 7")


@pytest.mark.slow  # trains the shared tiny run
def test_unreadable_analysis_data(tiny_run, tmp_path, capsys, fast_analysis):
    out = tmp_path / "deeper" / "out"
    bad = tmp_path / "broken.zip"
    bad.write_text("not a zip")
    argv = ["dynamics", str(tiny_run), "--data", str(bad), "--out", str(out), *fast_analysis]
    assert main(argv) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "deeper").exists()


@pytest.mark.slow  # trains the shared tiny run
def test_n_larger_than_dataset(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["analyze", str(tiny_run), "--out", str(out), "--n", "100000", "--quiet"]
    _fails_cleanly(argv, capsys, out, "holds only")


@pytest.mark.slow  # trains the shared tiny run
def test_refuses_to_replace_a_foreign_folder(tiny_run, tmp_path, capsys, fast_analysis):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["analyze", str(tiny_run), "--out", str(tmp_path), *fast_analysis]
    assert main(argv) == 2
    assert "not written by ssc-jax" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
