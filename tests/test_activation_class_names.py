"""Class names saved beside the activations (.npz, .npy folder + manifest.json, .safetensors):
read, checked in one line, and the names the report gives the classes."""

import json

import numpy as np
import pytest

import ssc_jax
from ssc_jax.nets.activation_files import read_activations
from ssc_jax.pipeline.cli.main import main

NAMES = ["cat", "dog", "eel", "fox"]  # no input is a fox: names may outnumber the labels
LABELS = np.repeat(np.arange(3), 10)
PREDICTIONS = np.where(np.isin(np.arange(30), [0, 10]), (LABELS + 1) % 3, LABELS)


@pytest.fixture(scope="module")
def layers() -> dict[str, np.ndarray]:
    """Two small layers whose inputs cluster by class."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(3, 6))
    first = centres[LABELS] + 0.3 * rng.normal(size=(LABELS.size, 6))
    return {"conv": first.astype(np.float32), "fc": np.tanh(first[:, :4]).astype(np.float32)}


def save_npz(folder, layers, names, **arrays):
    path = folder / "acts.npz"
    named = {} if names is None else {"class_names": np.array(names)}
    np.savez(path, **layers, labels=LABELS, predictions=PREDICTIONS, **arrays, **named)
    return path


def save_manifest(folder, layers, names):
    for name, values in {**layers, "labels": LABELS, "predictions": PREDICTIONS}.items():
        np.save(folder / f"{name}.npy", values)
    manifest = {"layers": [f"{name}.npy" for name in layers], "labels": "labels.npy"}
    manifest["predictions"] = "predictions.npy"
    (folder / "manifest.json").write_text(json.dumps({**manifest, "class_names": names}))
    return folder


def save_safetensors(folder, layers, names):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    path = folder / "acts.safetensors"
    logits = 3.0 * np.eye(len(NAMES))[PREDICTIONS]  # a column per name, the fox's too
    metadata = {"layers": json.dumps(list(layers)), "class_names": json.dumps(names)}
    save_file({**layers, "labels": LABELS, "logits": logits}, path, metadata=metadata)
    return path


FORMATS = {"npz": save_npz, "manifest": save_manifest, "safetensors": save_safetensors}


@pytest.mark.parametrize("form", FORMATS)
def test_saved_names_name_the_classes_in_the_metrics(tmp_path, layers, form):
    path = FORMATS[form](tmp_path, layers, NAMES)
    assert read_activations(path).class_names == tuple(NAMES)
    result = ssc_jax.analyze_activations(path, progress=False, resamples=0)
    assert result.metrics["class_names"] == NAMES
    wrong = result.metrics["confidently_wrong"]
    assert {(w["index"], w["true"], w["predicted"]) for w in wrong} == {
        (0, "cat", "dog"),
        (10, "dog", "eel"),
    }
    given = ssc_jax.analyze_activations(path, class_names=list("abcd"), progress=False, resamples=0)
    assert given.metrics["class_names"] == list("abcd")  # the caller's names come first


def test_the_command_writes_the_saved_names(tmp_path, layers):
    path = save_npz(tmp_path, layers, NAMES)
    out = tmp_path / "out"
    assert main(["activations", str(path), "--out", str(out), "--quiet", "--resamples", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == NAMES
    assert {w["true"] for w in metrics["confidently_wrong"]} == {"cat", "dog"}


def test_without_names_the_classes_are_numbered(tmp_path, layers):
    (tmp_path / "plain").mkdir()
    source = read_activations(save_npz(tmp_path / "plain", layers, None))
    assert source.class_names is None
    assert ssc_jax.class_probabilities(source).shape == (30, 3)
    named = read_activations(save_npz(tmp_path, layers, NAMES))
    assert ssc_jax.class_probabilities(named).shape == (30, 4)  # one column per name


def error_of(path) -> str:
    """The one-line error of reading ``path``."""
    with pytest.raises(ValueError) as error:
        read_activations(path)
    message = str(error.value)
    assert "\n" not in message, message
    return message


BAD_NAMES = {
    "repeated": (["cat", "dog", "cat"], "'class_names' repeats ['cat']; name each class once"),
    "too few": (["cat", "dog"], "2 class names, but the labels or predictions reach class 2"),
    "empty": (["cat", "", "eel"], "'class_names' holds an empty name"),
    "numbers": ([1, 2, 3], "'class_names' must be a list of strings, one per class"),
}


@pytest.mark.parametrize("form", ["npz", "manifest"])
@pytest.mark.parametrize("case", BAD_NAMES)
def test_names_that_do_not_fit_are_one_line_naming_the_file(tmp_path, layers, form, case):
    names, message = BAD_NAMES[case]
    path = FORMATS[form](tmp_path, layers, names)
    where = path / "manifest.json" if form == "manifest" else path
    assert error_of(path).startswith(f"{where}: {message}")


def test_names_of_the_wrong_kind_are_one_line(tmp_path, layers):
    objects = save_npz(tmp_path, layers, None, class_names=np.array(NAMES, dtype=object))
    assert "'class_names' holds Python objects; save the names as np.array(names)" in error_of(
        objects
    )
    (tmp_path / "grid").mkdir()
    grid = save_npz(tmp_path / "grid", layers, [NAMES])  # (1, 4), not (K,)
    assert "'class_names' must be a list of strings" in error_of(grid)
    (tmp_path / "one").mkdir()
    one = save_manifest(tmp_path / "one", layers, "cat dog eel")
    assert "'class_names' must be a list of strings" in error_of(one)


def test_safetensors_names_must_be_a_json_list_one_per_logit(tmp_path, layers):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    logits = np.eye(4)[PREDICTIONS]
    arrays = {**layers, "labels": LABELS, "logits": logits}
    path = tmp_path / "text.safetensors"
    save_file(arrays, path, metadata={"class_names": "cat, dog"})
    assert error_of(path) == f"{path}: metadata 'class_names' must be a JSON list of names"
    path = tmp_path / "three.safetensors"
    save_file(arrays, path, metadata={"class_names": json.dumps(NAMES[:3])})
    assert "3 class names for logits of 4 classes; give one name per logit column" in error_of(path)
    folder = tmp_path / "parts"
    folder.mkdir()
    save_file({"conv": layers["conv"]}, folder / "0.safetensors", metadata={"class_names": "[]"})
    save_file(arrays, folder / "1.safetensors", metadata={"class_names": json.dumps(NAMES)})
    assert f"differs from that of {folder / '0.safetensors'}" in error_of(folder)


def test_a_comparison_refuses_networks_whose_names_differ(tmp_path, layers, capsys):
    (tmp_path / "a").mkdir()
    first = save_npz(tmp_path / "a", layers, NAMES)
    second = save_npz(tmp_path, layers, ["cat", "cow", "eel", "fox"])
    out = tmp_path / "out"
    assert main(["compare", str(first), str(second), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(
        "its class names differ from those of the inputs compared on "
        "(class 1 is 'cow' against 'dog')"
    ), error
    assert "\n" not in error and not out.exists()
