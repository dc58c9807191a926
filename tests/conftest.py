"""Shared fixtures. The pipeline tests share one tiny training run (digits, small_cnn,
2 epochs) and one analysis of it, made once per session."""

from __future__ import annotations

import json
import os

# The suite solves tiny problems, so XLA's optimising passes cost it more compile time than
# they save in run time (about a third of the wall time of the compile-heavy files). Set
# before JAX is imported, and inherited by the processes the tests start;
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite on the optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax
import pytest

from ssc_jax.pipeline.cli.main import main

jax.config.update(
    "jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] != "0"
)

TINY_N = 80


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 2-epoch small_cnn run on digits with a checkpoint per epoch."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    argv = ["train", "--model", "small_cnn", "--dataset", "digits", "--epochs", "2", "--no-augment"]
    assert main([*argv, "--width", "0.5", "--seed", "0", "--out", str(run), "--quiet"]) == 0
    return run


@pytest.fixture(scope="session")
def fast_analysis() -> list[str]:
    """Small, fast analysis options shared by the tests: N = 80 inputs, no progress bars and
    no intervals (each of their subsamples is solved again; the tests of intervals, and
    `analyzed`, keep the default)."""
    return ["--n", str(TINY_N), "--quiet", "--resamples", "0"]


@pytest.fixture(scope="session")
def analyzed(tiny_run, tmp_path_factory):
    """(output folder, metrics) of `analyze` on the tiny run's last checkpoint, with the
    default intervals."""
    out = tmp_path_factory.mktemp("outputs") / "analyze"
    assert main(["analyze", str(tiny_run), "--out", str(out), "--n", str(TINY_N), "--quiet"]) == 0
    return out, json.loads((out / "metrics.json").read_text())
