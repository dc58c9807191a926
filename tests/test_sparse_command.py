"""``python -m ssc_jax.run sparse``: one layer solved by ``ssc_sparse``, written atomically,
and the user's mistakes as one line that leaves no output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse

from lasso_reference import Solved, assert_same_optimum, float64_gram
from ssc_jax import capture_activations, load_checkpoint, load_dataset, normalize_images, ssc
from ssc_jax.pipeline.cli.main import main

LAYER = "block3.0.conv"  # small_cnn's last conv layer: (2, 2, 64) on digits, d = 256
N = 80


@pytest.mark.slow  # trains the shared tiny run
def test_one_layer_is_solved_and_written(tiny_run, tmp_path, capsys):
    out = tmp_path / "sparse"
    argv = ["sparse", str(tiny_run), "--layer", LAYER, "--n", str(N), "--split", "test"]
    assert main([*argv, "--gap-tol", "1e-4", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"output: {out}")
    assert sorted(p.name for p in out.iterdir()) == [
        ".ssc-jax-output",
        "coef.npz",
        "inputs.npz",
        "metrics.json",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    coef = scipy.sparse.load_npz(out / "coef.npz")
    inputs = np.load(out / "inputs.npz")
    assert (metrics["n"], metrics["d"], metrics["layer"]) == (N, 256, LAYER)
    assert metrics["converged"] and metrics["certified_relative_gap"] <= 1e-4
    assert metrics["rounds"] == len(metrics["history"]) - 1 and metrics["nonzeros"] == coef.nnz
    assert set(metrics["seconds"]) == {"read", "activations", "solve", "float64_finish"}
    # The same layer captured here from the checkpoint and the recorded inputs: the command
    # certified the optimum that the Gram route certifies on it.
    model, info = load_checkpoint(tiny_run)
    images, labels, _ = load_dataset("digits", "test")
    np.testing.assert_array_equal(labels[inputs["indices"]], inputs["labels"])
    chosen = normalize_images(images[inputs["indices"]], info["mean"], info["std"])
    x = capture_activations(model, np.asarray(chosen), [LAYER])[LAYER].reshape(N, -1)
    written = Solved(coef.toarray(), metrics["objective"], metrics["certified_relative_gap"])
    assert_same_optimum(float64_gram(x), written, ssc(x, gap_tol=1e-4))


@pytest.mark.slow  # trains the shared tiny run
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--layer", "block9.conv"], "--layer block9.conv: layers='block9.conv' matches no"),
        (["--layer", LAYER, "--n", "100000"], "holds only"),
        (["--layer", LAYER, "--processes", "2"], "`sparse` solves in one process"),
    ],
)
def test_mistakes_are_one_line_and_leave_nothing(tiny_run, tmp_path, capsys, options, message):
    out = tmp_path / "sparse"
    assert main(["sparse", str(tiny_run), *options, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssc-jax: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", [["--tau", "-1"], ["--gap-tol", "0"], ["--n", "0"]])
def test_bad_settings_are_usage_errors(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sparse", "run", "--layer", LAYER, *option])
    assert exit_info.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err
