"""The framework-neutral door: a network analysed from its activations or Grams, in memory
(``analyze_activations``, ``analyze_grams``) and by ``python -m ssc_jax.run activations``."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import scipy.sparse as sp

import ssc_jax
from lasso_reference import assert_same_optimum, certified, problem, stored_layers
from ssc_jax.nets.activation_source import narrowed_mapping
from ssc_jax.nets.external import grams_from_activations
from ssc_jax.pipeline.analysis.activations import display_images, network_probabilities
from ssc_jax.pipeline.analysis.config import COMMAND_SETTINGS, AnalysisSet
from ssc_jax.pipeline.analysis.inputs import (
    InputError,
    held_out_data,
    load_inputs,
    preprocess,
    run_info,
)
from ssc_jax.pipeline.analysis.layer_graphs import checkpoint_grams
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.store.graph_store import load_graphs
from ssc_jax.similarity.streamed import streamed_cka_matrix
from ssc_jax.training.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def network():
    """Activations of a two-layer 'network' on 4 classes of 30 inputs, with logits."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 16))
    first = centres[labels] + 0.5 * rng.normal(size=(labels.size, 16))
    second = np.tanh(first @ rng.normal(size=(16, 24)))
    logits = 1.5 * np.eye(4)[labels] + rng.normal(size=(labels.size, 4))
    images = rng.integers(0, 256, size=(labels.size, 3, 6, 6), dtype=np.uint8)
    return {
        "conv1": first.reshape(-1, 4, 2, 2).astype(np.float32),
        "conv2": second.astype(np.float32),
        "labels": labels,
        "logits": logits,
        "images": images,
    }


def test_in_memory_analysis_matches_the_same_numbers_computed_by_hand(network):
    layers = {k: network[k] for k in ("conv1", "conv2")}
    result = ssc_jax.analyze_activations(
        layers, network["labels"], logits=network["logits"], progress=False, resamples=0
    )
    flat = [layers[k].reshape(len(network["labels"]), -1).astype(np.float64) for k in layers]
    for x, gram in zip(flat, result.graphs.grams, strict=True):
        # A float32 dot product of d terms is within d eps |x_i| |x_j| of the exact one.
        norms = np.linalg.norm(x, axis=1)
        bound = x.shape[1] * np.finfo(np.float32).eps * np.outer(norms, norms)
        assert np.all(np.abs(gram - x @ x.T) <= bound)
    # The pipeline's graphs and a solve by hand of the same Grams: the same optimum within
    # their certified gaps.
    grams = np.asarray(result.graphs.grams)
    by_hand = ssc_jax.ssc_gram(grams, solver=ssc_jax.WorkingSet())
    for i, solved in enumerate(stored_layers(result.graphs)):
        assert_same_optimum(grams[i].astype(np.float64), solved, problem(by_hand, i))
    # The reported numbers are those of the pipeline's own graphs: SSC-CKA against the dense
    # float64 reference to float64 rounding, modularity as the pipeline computes it.
    labels = network["labels"]
    with jax.enable_x64(True):
        A = np.stack([a.toarray() for a in result.graphs.affinity]).astype(np.float64)
        reference = np.asarray(ssc_jax.cka_matrix(A))
    np.testing.assert_allclose(result.similarity["ssc_cka"], reference, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(
        result.modularity, layer_modularity(result.graphs.affinity, labels, 4)
    )
    predicted = network["logits"].argmax(axis=1)
    assert result.table1["network_accuracy"] == pytest.approx(
        np.mean(predicted == network["labels"]), abs=1e-6
    )
    assert result.probs.shape == (120, 4)
    assert result.metrics["epoch"] is None and result.metrics["layers"] == ["conv1", "conv2"]


def test_without_predictions_table1_has_the_ssc_labels_alone(network):
    layers = {k: network[k] for k in ("conv1", "conv2")}
    result = ssc_jax.analyze_activations(layers, network["labels"], progress=False, resamples=0)
    assert set(result.table1) == {"ssc_label_accuracy"}
    assert result.probs is None and result.wrong == []
    assert result.embedded.size == network["labels"].size
    assert 0.5 < result.table1["ssc_label_accuracy"] <= 1.0


def test_cli_writes_the_usual_folder_and_agrees_with_the_api(network, tmp_path):
    path = tmp_path / "acts.npz"
    np.savez(path, **network)
    out = tmp_path / "report"
    quick = ["--quiet", "--resamples", "0"]
    assert main(["activations", str(path), "--out", str(out), *quick]) == 0
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "figures", "graphs", "report.html"}
    assert (out / "figures" / "wrong_input_1.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "activations" and metrics["n"] == 120
    api = ssc_jax.analyze_activations(path, solver=COMMAND_SETTINGS, progress=False, resamples=0)
    np.testing.assert_allclose(metrics["ssc_cka"], api.similarity["ssc_cka"], atol=1e-6)
    np.testing.assert_allclose(metrics["linear_cka"], api.similarity["linear_cka"], atol=1e-6)
    html = (out / "report.html").read_text()
    assert "given activations" in html and "conv2" in html
    # a rerun replaces its own output; a folder holding the input is refused
    assert main(["activations", str(path), "--out", str(out), *quick]) == 0
    assert main(["activations", str(path), "--out", str(tmp_path), *quick]) == 2


def test_write_analysis_from_grams_as_a_torch_user_would(network, tmp_path):
    names, grams = ssc_jax.grams_from_activations({k: network[k] for k in ("conv1", "conv2")})
    result = ssc_jax.analyze_grams(
        names,
        grams,
        network["labels"],
        predictions=network["logits"].argmax(axis=1),
        images=network["images"],
        class_names=["a", "b", "c", "d"],
        progress=False,
        resamples=0,
        out=tmp_path / "out",
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["class_names"] == ["a", "b", "c", "d"]
    assert metrics["modularity"] == pytest.approx(result.modularity.tolist(), abs=1e-6)


@pytest.fixture(scope="module")
def zoo_npz(tiny_run, analyzed, tmp_path_factory):
    """The tiny run's conv activations and logits on the inputs `analyze` used, saved."""
    _, metrics = analyzed
    info = run_info(tiny_run)
    inputs = load_inputs(AnalysisSet(n=metrics["n"]), held_out_data(info))
    model, _ = load_checkpoint(tiny_run, metrics["epoch"])
    images = preprocess(inputs.images, info)
    layers = ssc_jax.capture_activations(model, images, layers="conv")
    logits = np.log(np.maximum(ssc_jax.predict(model, images), 1e-30))
    path = tmp_path_factory.mktemp("zoo") / "zoo.npz"
    np.savez(path, **layers, labels=inputs.labels, logits=logits)
    return path


def _analysis_grams(run, metrics) -> np.ndarray:
    """The Grams `analyze` formed of the run's checkpoint on its analysis inputs."""
    analysis = AnalysisSet(n=metrics["n"])
    inputs = load_inputs(analysis, held_out_data(run_info(run)))
    return checkpoint_grams(run, metrics["epoch"], inputs, analysis=analysis).grams


def _affinity(stored) -> list:
    return [sp.csr_array(abs(c) + abs(c).T) for c in stored.coef]


def _assert_numbers_of_own_graphs(found, stored, grams, labels) -> None:
    """``found``'s modularity, SSC-CKA and linear CKA are those of ``stored`` and ``grams``."""
    A = _affinity(stored)
    modularity = layer_modularity(A, labels, len(found["class_names"]))
    np.testing.assert_array_equal(found["modularity"], modularity)
    np.testing.assert_array_equal(found["ssc_cka"], streamed_cka_matrix(A))
    np.testing.assert_array_equal(found["linear_cka"], streamed_cka_matrix(list(grams)))


@pytest.mark.slow
def test_saved_activations_of_a_zoo_checkpoint_give_the_analyze_numbers(
    tiny_run, zoo_npz, analyzed, tmp_path
):
    """The zoo door (`analyze`) and the file door (`activations`) on the same activations."""
    _, metrics = analyzed
    out = tmp_path / "out"
    assert (
        main(["activations", str(zoo_npz), "--out", str(out), "--quiet", "--resamples", "0"]) == 0
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["layers"] == metrics["layers"]
    # The two doors form the Grams of the same float32 activations in other orders, so they
    # solve problems that differ by float32 rounding; no certificate bounds how far that
    # moves a metric of |C|. What is certified: each door's graphs are its problem's optimum
    # within its gap, the Grams agree within a float32 dot product's rounding, and each
    # door reports the numbers of its own graphs.
    folder, _ = analyzed
    zoo_grams = _analysis_grams(tiny_run, metrics)
    _, file_grams = grams_from_activations(zoo_npz)
    activations = np.load(zoo_npz)
    for name, a, b in zip(metrics["layers"], zoo_grams, file_grams, strict=True):
        x = activations[name].reshape(len(a), -1).astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        bound = x.shape[1] * np.finfo(np.float32).eps * np.outer(norms, norms)
        assert np.all(np.abs(a - x @ x.T) <= bound) and np.all(np.abs(b - x @ x.T) <= bound)
    for grams, found, where in (
        (zoo_grams, metrics, folder),
        (file_grams, saved, out),
    ):
        stored = load_graphs(where / found["graph_file"])
        for gram, solved in zip(grams, stored_layers(stored), strict=True):
            certified(gram.astype(np.float64), solved)
        assert all(stored.diagnostics["converged"])
        _assert_numbers_of_own_graphs(found, stored, grams, activations["labels"])
    assert saved["network_accuracy"] == metrics["network_accuracy"]


@pytest.mark.slow
def test_a_run_compared_with_its_own_saved_activations(tiny_run, zoo_npz, analyzed, tmp_path):
    """Network against network: a checkpoint against its own activations, saved as a file,
    gives a cross-network SSC-CKA equal to the checkpoint's own layer-by-layer matrix."""
    _, metrics = analyzed
    out = tmp_path / "compare"
    argv = ["compare", str(tiny_run), str(zoo_npz), "--names", "run", "file"]
    argv += ["--n", str(metrics["n"]), "--resamples", "0"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    compared = json.loads((out / "metrics.json").read_text())
    (cross,) = compared["cross"]
    assert cross["layers_a"] == cross["layers_b"] == metrics["layers"]
    # The cross matrices are those of the two networks' stored graphs and of their Grams,
    # which agree within float32 rounding (see the test above): the same numbers as the
    # run's own matrices only as far as their problems are the same.
    run, file = (load_graphs(out / r["graph_file"]) for r in compared["runs"])
    _, file_grams = grams_from_activations(zoo_npz)
    np.testing.assert_array_equal(
        cross["ssc_cka"], streamed_cka_matrix(_affinity(run), _affinity(file))
    )
    zoo_grams = _analysis_grams(tiny_run, metrics)
    np.testing.assert_array_equal(
        cross["linear_cka"], streamed_cka_matrix(list(zoo_grams), list(file_grams))
    )
    np.testing.assert_array_equal(compared["runs"][0]["ssc_cka"], metrics["ssc_cka"])
    assert compared["runs"][1]["epoch"] is None
    assert (out / "figures" / "cross_1.png").exists()


def test_two_saved_networks_compared_layer_by_layer(network, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(first, **network)
    np.savez(second, conv=network["conv2"], labels=network["labels"])
    out = tmp_path / "out"
    argv = ["compare", str(first), str(first), str(second), "--out", str(out), "--quiet"]
    assert main([*argv, "--resamples", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # the settings that applied: the files' own inputs and layers, not the runs' defaults
    n = len(network["labels"])
    assert metrics["n"] == n
    assert metrics["settings"]["analysis"] == {"n": n, "layers": "every layer given"}
    page = (out / "report.html").read_text()
    assert "comparison of 3 networks" in page and "<td>analysis.data</td>" not in page
    itself, other = metrics["cross"]
    np.testing.assert_allclose(itself["ssc_cka"], metrics["runs"][0]["ssc_cka"], atol=1e-6)
    assert np.shape(other["ssc_cka"]) == (2, 1) and other["layers_b"] == ["conv"]
    # network b is network a's second layer: their cross SSC-CKA there is that of a layer
    # with itself
    assert other["ssc_cka"][1][0] == pytest.approx(1.0, abs=1e-5)
    assert metrics["runs"][2]["network_accuracy"] is None


def test_activations_of_other_inputs_are_refused_in_a_comparison(network, tmp_path, capsys):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(first, **network)
    np.savez(second, **{**network, "labels": network["labels"][::-1].copy()})
    out = tmp_path / "out"
    assert main(["compare", str(first), str(second), "--out", str(out), "--quiet"]) == 2
    assert "labels differ" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": np.arange(5)}, "'labels' has shape (5,)"),
        ({"labels": np.zeros(120, np.int64)}, "one class"),
        ({"conv2": np.full((120, 3), np.nan, np.float32)}, "NaN"),
        ({"conv2": np.ones((119, 3), np.float32)}, "conv2"),
        ({"conv2": np.array(["x"] * 120)}, "conv2"),
    ],
)
def test_bad_saved_activations_are_one_line(network, tmp_path, capsys, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{**network, **change})
    assert main(["activations", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_labels_and_missing_file_are_one_line(network, tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    np.savez(path, conv1=network["conv1"])
    assert main(["activations", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "labels" in capsys.readouterr().err
    assert main(["activations", str(tmp_path / "nothing.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_too_few_inputs_per_class_is_refused_before_solving(network):
    with pytest.raises(InputError, match="cannot show class structure"):
        ssc_jax.analyze_activations({"a": network["conv2"][:4]}, np.arange(4), progress=False)


def test_network_probabilities_from_each_kind_of_output():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    probs = network_probabilities(3, 2, logits=logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 0], np.exp(2) / (np.exp(2) + 1), rtol=1e-6)
    np.testing.assert_array_equal(
        network_probabilities(3, 2, predictions=np.array([1, 0, 1])), [[0, 1], [1, 0], [0, 1]]
    )
    assert network_probabilities(3, 2) is None
    with pytest.raises(InputError, match="one of"):
        network_probabilities(3, 2, logits=logits, predictions=np.array([1, 0, 1]))
    with pytest.raises(InputError, match=r"0\.\.1"):
        network_probabilities(3, 2, predictions=np.array([1, 0, 2]))


def test_display_images_moves_channels_last_and_scales_floats():
    chw = np.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    shown = display_images(chw, 2)
    assert shown.shape == (2, 4, 5, 3) and shown.dtype == np.uint8
    assert shown.min() == 0 and shown.max() == 255
    with pytest.raises(InputError, match="images"):
        display_images(np.zeros((3, 4, 4, 3)), 2)


# Token layers (n, T, D) and layer selection in the file door.


@pytest.fixture(scope="module")
def token_network():
    """Three transformer-like layers ``blocks.i`` (n, T, D) of 3 classes with right padding
    (every other input has 3 real tokens of 5) and a head (n, 3)."""
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(3), 16)
    mask = np.ones((labels.size, 5), np.int64)
    mask[::2, 3:] = 0
    layers = {
        f"blocks.{i}": (
            rng.normal(size=(labels.size, 5, 6)) + (i + 1) * labels[:, None, None]
        ).astype(np.float32)
        for i in range(3)
    }
    layers["head"] = rng.normal(size=(labels.size, 3)).astype(np.float32)
    return layers, labels, mask


def _pooled_by_hand(tokens: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """The pooling written out in float64 loops over inputs, from the real tokens."""
    rows = []
    for values, real in zip(tokens.astype(np.float64), mask.astype(bool), strict=True):
        kept = values[real]
        rows.append({"mean": kept.mean(axis=0), "last": kept[-1], "cls": values[0]}[how])
    return np.stack(rows)


@pytest.mark.parametrize("how", ["mean", "last", "cls"])
def test_token_layers_are_pooled_over_their_real_tokens(token_network, tmp_path, how):
    layers, labels, mask = token_network
    path = tmp_path / "tokens.npz"
    np.savez(path, **layers, labels=labels, attention_mask=mask)
    quick = {"progress": False, "resamples": 0}
    from_file = ssc_jax.analyze_activations(path, select="blocks", tokens=how, **quick)
    in_memory = ssc_jax.analyze_activations(
        layers, labels, select=["blocks.*"], tokens=how, mask=mask, **quick
    )
    assert (
        from_file.graphs.layers == in_memory.graphs.layers == ["blocks.0", "blocks.1", "blocks.2"]
    )
    assert from_file.tokens == in_memory.tokens == how
    assert from_file.layer_selection.startswith("repeated blocks: the 3 layers blocks.0")
    for name, file_gram, memory_gram in zip(
        from_file.graphs.layers, from_file.graphs.grams, in_memory.graphs.grams, strict=True
    ):
        x = _pooled_by_hand(layers[name], mask, how)
        # A float32 dot product of d terms is within d eps |x_i| |x_j| of the exact one, plus
        # the float32 rounding of each pooled value (relative eps) on either side.
        norms = np.linalg.norm(x, axis=1)
        bound = (x.shape[1] + 2) * np.finfo(np.float32).eps * np.outer(norms, norms)
        assert np.all(np.abs(file_gram - x @ x.T) <= bound)
        assert np.all(np.abs(memory_gram - x @ x.T) <= bound)


def test_flattened_tokens_and_no_token_layers_record_what_applied(token_network):
    layers, labels, _ = token_network
    flat = ssc_jax.analyze_activations(
        layers, labels, select="blocks", tokens="flatten", progress=False, resamples=0
    )
    x = layers["blocks.1"].reshape(labels.size, -1).astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    bound = x.shape[1] * np.finfo(np.float32).eps * np.outer(norms, norms)
    assert np.all(np.abs(flat.graphs.grams[1] - x @ x.T) <= bound)
    assert flat.tokens == "flatten"
    with pytest.warns(UserWarning, match=r"only one layer is selected \(head\)"):
        kept, selection, has_tokens = narrowed_mapping(layers, ["head"], "mean")
    assert list(kept) == ["head"] and selection == "named: head" and not has_tokens
    np.testing.assert_array_equal(kept["head"], layers["head"])  # no token axis: as given


def test_cli_layers_and_tokens_reach_metrics_and_the_report(token_network, tmp_path, capsys):
    layers, labels, mask = token_network
    path = tmp_path / "tokens.npz"
    np.savez(path, **layers, labels=labels, attention_mask=mask)
    out = tmp_path / "out"
    args = ["activations", str(path), "--layers", "blocks.*", "--tokens", "last"]
    assert main([*args, "--out", str(out), "--quiet", "--resamples", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert metrics["tokens"] == "last" and metrics["layer_selection"] == "named: blocks.*"
    assert metrics["settings"]["analysis"] == {
        "n": 48,
        "layers": "named: blocks.*",
        "tokens": "last",
    }
    html = (out / "report.html").read_text()
    assert "each input&#x27;s last real token" in html and "<td>analysis.n</td>" in html
    assert main(["activations", str(path), "--layers", "blok*", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ssc-jax: error: layers='blok*' matches no module; the closest")
    assert "\n" not in error
