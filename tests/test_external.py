"""Activations of any network, from files, mappings or a stream of batches, into Grams."""

import itertools
import json

import numpy as np
import pytest
from scipy.special import softmax

import ssc_jax.nets.external as external
from ssc_jax import class_probabilities
from ssc_jax.nets.activation_files import read_activations
from ssc_jax.nets.external import grams_from_activations, layer_gram

N = 40


@pytest.fixture
def save_file():
    """safetensors.numpy.save_file; the safetensors tests skip without the package."""
    return pytest.importorskip("safetensors.numpy").save_file


@pytest.fixture
def layers():
    """Three layers in forward order, deliberately not in alphabetical order."""
    rng = np.random.default_rng(0)
    return {
        "zeta": rng.normal(size=(N, 3, 4, 4)).astype(np.float32),
        "alpha": rng.normal(size=(N, 7)),
        "mid.conv": rng.normal(size=(N, 2, 3)).astype(np.float32),
    }


@pytest.fixture
def labels():
    return np.arange(N) % 3


def record_block_widths(monkeypatch) -> list[int]:
    """The width of every column block accumulated from now on, in order."""
    widths = []
    add_gram = external._add_gram

    def recording(gram, block):
        widths.append(block.shape[1])
        return add_gram(gram, block)

    monkeypatch.setattr(external, "_add_gram", recording)
    return widths


def reference(array) -> np.ndarray:
    flat = np.asarray(array, np.float64).reshape(len(array), -1)
    return flat @ flat.T


def assert_grams(grams, layers):
    assert grams.dtype == np.float32
    assert grams.shape == (len(layers), N, N)
    for gram, array in zip(grams, layers.values(), strict=True):
        ref = reference(array)
        assert np.abs(gram - ref).max() <= 1e-5 * np.abs(ref).max()


def test_npz_reads_layers_in_saved_order_with_reserved_arrays(tmp_path, layers, labels):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(N, 3))
    images = rng.normal(size=(N, 8, 8, 3))
    path = tmp_path / "acts.npz"
    np.savez(path, **layers, labels=labels, logits=logits, images=images)

    source = read_activations(path)
    assert source.names == ("zeta", "alpha", "mid.conv")
    assert source.shapes == ((3, 4, 4), (7,), (2, 3))
    np.testing.assert_array_equal(source.labels, labels)
    np.testing.assert_array_equal(source.predictions, logits.argmax(axis=1))
    np.testing.assert_array_equal(source.logits, logits)
    np.testing.assert_array_equal(source.images, images)
    np.testing.assert_array_equal(source.layers["alpha"], layers["alpha"])
    names, grams = grams_from_activations(source)
    assert names == list(layers)
    assert_grams(grams, layers)
    assert grams_from_activations(str(path))[0] == names


@pytest.mark.parametrize("form", ["list", "object"])
def test_npy_folder_with_manifest_is_memory_mapped(tmp_path, layers, labels, form):
    files = {name: f"{i}_{name}.npy" for i, name in enumerate(layers)}
    for name, file in files.items():
        np.save(tmp_path / file, layers[name])
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "predictions.npy", labels[::-1].copy())
    entries = list(files.values()) if form == "list" else files
    (tmp_path / "manifest.json").write_text(
        json.dumps({"layers": entries, "labels": "labels.npy", "predictions": "predictions.npy"})
    )

    source = read_activations(tmp_path)
    expected = [file.removesuffix(".npy") for file in files.values()] if form == "list" else layers
    assert list(source.names) == list(expected)
    assert isinstance(source.layers[source.names[0]], np.memmap)
    np.testing.assert_array_equal(source.predictions, labels[::-1])
    assert source.images is None and source.logits is None
    assert_grams(grams_from_activations(source)[1], layers)


def test_safetensors_file_takes_the_order_from_its_metadata(tmp_path, layers, labels, save_file):
    path = tmp_path / "acts.safetensors"
    metadata = {"layers": json.dumps(list(layers))}
    save_file({**layers, "labels": labels}, path, metadata=metadata)
    source = read_activations(path)
    assert source.names == tuple(layers)
    np.testing.assert_array_equal(source.labels, labels)
    assert_grams(grams_from_activations(source)[1], layers)


def test_safetensors_without_order_follow_their_header(tmp_path, layers, labels, save_file):
    path = tmp_path / "acts.safetensors"
    save_file({**layers, "labels": labels}, path)
    header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    stored = [name for name in header if name not in ("__metadata__", "labels")]
    source = read_activations(path)
    assert list(source.names) == stored
    names, grams = grams_from_activations(source)
    assert_grams(grams, {name: layers[name] for name in names})


def test_safetensors_folder_reads_files_in_name_order(tmp_path, layers, labels, save_file):
    save_file({"zeta": layers["zeta"]}, tmp_path / "0.safetensors")
    rest = {"alpha": layers["alpha"], "labels": labels}
    save_file(rest, tmp_path / "1.safetensors")
    source = read_activations(tmp_path)
    assert source.names == ("zeta", "alpha")
    assert source.layers.file("alpha") == str(tmp_path / "1.safetensors")
    assert_grams(grams_from_activations(source)[1], {k: layers[k] for k in source.names})


def test_mapping_and_stream_of_batches_give_the_same_grams(tmp_path, layers):
    names, grams = grams_from_activations(layers)
    assert names == list(layers)
    assert_grams(grams, layers)
    cuts = [0, 5, 6, 23, N]
    stream = ({k: v[a:b] for k, v in layers.items()} for a, b in itertools.pairwise(cuts))
    streamed_names, streamed = grams_from_activations(stream, spill_dir=tmp_path)
    assert streamed_names == names
    np.testing.assert_allclose(streamed, grams, rtol=1e-6, atol=1e-4)
    assert list(tmp_path.iterdir()) == []  # the spilled activations are removed


def test_blockwise_accumulation_matches_a_single_block(tmp_path, monkeypatch):
    """A memory-mapped layer accumulated in many small column blocks equals one big block."""
    rng = np.random.default_rng(2)
    n, d = 64, 20_000
    array = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (n, d))
    array[:] = rng.normal(size=(n, d))
    array.flush()
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    widths = record_block_widths(monkeypatch)
    budget = n * 12 * 300  # 300 columns of a float32 layer, with its copies
    small = layer_gram(mapped, memory_budget_bytes=budget)
    assert len(widths) == -(-d // 300) and set(widths) == {300}
    widths.clear()
    large = layer_gram(mapped, memory_budget_bytes=1 << 30)
    assert widths == [d]
    ref = reference(array)
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.abs(small - ref).max() <= 1e-5 * np.abs(ref).max()


def test_safetensors_layers_are_read_in_slices(tmp_path, monkeypatch, layers, labels, save_file):
    path = tmp_path / "acts.safetensors"
    save_file({"zeta": layers["zeta"], "labels": labels}, path)
    widths = record_block_widths(monkeypatch)
    _, grams = grams_from_activations(path, memory_budget_bytes=N * 12 * 16)
    assert widths == [16, 16, 16]  # one channel of 4 x 4 per slice
    assert_grams(grams, {"zeta": layers["zeta"]})


def npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


GOOD = np.ones((6, 3), np.float32)
LABELS = np.arange(6)
WORDS = np.array(list("abcdef"))

BAD_FILES = {
    "rows differ": (lambda t: npz(t, a=GOOD, b=GOOD[:5], labels=LABELS), "b"),
    "labels too short": (lambda t: npz(t, a=GOOD, labels=LABELS[:5]), "labels"),
    "labels not integers": (lambda t: npz(t, a=GOOD, labels=LABELS + 0.5), "labels"),
    "labels missing": (lambda t: npz(t, a=GOOD, b=GOOD), "labels"),
    "string array": (
        lambda t: npz(t, a=GOOD, words=np.array(list("abcdef")), labels=LABELS),
        "words",
    ),
    "object array": (
        lambda t: npz(t, a=np.array([None] * 6, dtype=object), labels=LABELS),
        "a",
    ),
    "no layers": (lambda t: npz(t, labels=LABELS), "labels"),
    "empty layer": (lambda t: npz(t, a=np.ones((6, 0)), labels=LABELS), "a"),
    "logits misshaped": (lambda t: npz(t, a=GOOD, logits=np.ones(6), labels=LABELS), "logits"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_name_the_file_and_the_array(tmp_path, case):
    make, array = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as error:
        read_activations(path)
    message = str(error.value)
    assert str(path) in message and f"'{array}'" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_found_while_accumulating(tmp_path, bad):
    values = GOOD.copy()
    values[4, 2] = bad
    path = npz(tmp_path, fine=GOOD, broken=values, labels=LABELS)
    source = read_activations(path)
    with pytest.raises(ValueError, match="NaN or Inf") as error:
        grams_from_activations(source)
    assert str(path) in str(error.value) and "'broken'" in str(error.value)


def test_bad_safetensors_and_manifest_name_the_file(tmp_path, save_file):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty or truncated") as error:
        read_activations(empty)
    assert str(empty) in str(error.value)

    path = tmp_path / "inf.safetensors"
    values = GOOD.copy()
    values[0, 0] = np.inf
    save_file({"layer": values, "labels": LABELS}, path)
    with pytest.raises(ValueError, match=r"'layer' contains NaN or Inf") as error:
        grams_from_activations(path)
    assert str(path) in str(error.value)

    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "labels.npy", LABELS)
    (folder / "manifest.json").write_text(
        json.dumps({"layers": ["conv1.npy"], "labels": "labels.npy"})
    )
    with pytest.raises(ValueError, match=r"not found") as error:
        read_activations(folder)
    assert str(folder / "conv1.npy") in str(error.value) and "'conv1'" in str(error.value)


def test_an_empty_npz_file_names_the_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a readable \.npz") as error:
        read_activations(path)
    assert str(path) in str(error.value)


def test_bad_mappings_and_streams_name_the_array():
    with pytest.raises(ValueError, match=r"layers: array 'b' has 5 rows"):
        grams_from_activations({"a": GOOD, "b": GOOD[:5]})
    with pytest.raises(ValueError, match=r"layers: array 'b' has dtype <U1"):
        grams_from_activations({"a": GOOD, "b": np.array(list("abcdef"))})
    batches = [{"a": GOOD[:3], "b": GOOD[:3]}, {"a": GOOD[3:], "c": GOOD[3:]}]
    with pytest.raises(ValueError, match=r"batch 1 of the activation stream: has layers"):
        grams_from_activations(iter(batches))
    batches = [{"a": GOOD[:3]}, {"a": np.ones((3, 4))}]
    with pytest.raises(ValueError, match=r"batch 1 .*'a' has per-input shape \(4,\)"):
        grams_from_activations(batches)
    with pytest.raises(ValueError, match="yielded no batches"):
        grams_from_activations(iter([]))


def test_safetensors_folder_takes_the_order_from_each_files_metadata(tmp_path, save_file, labels):
    rng = np.random.default_rng(3)
    first = {"b": rng.normal(size=(N, 2)), "a": rng.normal(size=(N, 3))}
    second = {"d": rng.normal(size=(N, 4)), "c": rng.normal(size=(N, 5)), "labels": labels}
    save_file(first, tmp_path / "0.safetensors", metadata={"layers": json.dumps(["b", "a"])})
    save_file(second, tmp_path / "1.safetensors", metadata={"layers": json.dumps(["d", "c"])})
    assert read_activations(tmp_path).names == ("b", "a", "d", "c")
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"x": first["a"], "labels": labels}, bad / "x.safetensors", metadata={"layers": "x"})
    with pytest.raises(ValueError, match="must be a JSON list") as error:
        read_activations(bad)
    assert str(bad / "x.safetensors") in str(error.value)


def test_bfloat16_safetensors_is_refused_by_name(tmp_path, labels):
    pytest.importorskip("torch.nn")  # not "torch": tests/torch would pass for it
    import torch

    save = pytest.importorskip("safetensors.torch").save_file
    path = tmp_path / "bf16.safetensors"
    save({"layer": torch.ones(N, 2, dtype=torch.bfloat16), "labels": torch.as_tensor(labels)}, path)
    with pytest.raises(ValueError, match="'layer' has dtype BF16") as error:
        read_activations(path)
    assert str(path) in str(error.value)


def test_class_probabilities_from_logits_or_predictions(tmp_path, layers, labels):
    logits = 30 * np.random.default_rng(2).normal(size=(N, 4))  # large: overflows a naive exp
    np.savez(tmp_path / "logits.npz", **layers, labels=labels, logits=logits)
    source = read_activations(tmp_path / "logits.npz")
    probs = class_probabilities(source)
    assert probs.dtype == np.float32 and probs.shape == (N, 4)
    np.testing.assert_allclose(probs, softmax(logits, axis=1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="num_classes is 10 but 'logits' has 4 columns"):
        class_probabilities(source, num_classes=10)

    predictions = (labels + 1) % 3
    np.savez(tmp_path / "predictions.npz", **layers, labels=labels, predictions=predictions)
    source = read_activations(tmp_path / "predictions.npz")
    np.testing.assert_array_equal(class_probabilities(source), np.eye(3)[predictions])
    assert class_probabilities(source, num_classes=10).shape == (N, 10)
    with pytest.raises(ValueError, match=r"classes must lie in 0\.\.1; .* span 0\.\.2"):
        class_probabilities(source, num_classes=2)

    np.savez(tmp_path / "none.npz", **layers, labels=labels)
    with pytest.raises(ValueError, match=r"none\.npz: no 'logits' or 'predictions'"):
        class_probabilities(read_activations(tmp_path / "none.npz"))
    bad = logits.copy()
    bad[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **layers, labels=labels, logits=bad)
    with pytest.raises(ValueError, match=r"nan\.npz: array 'logits' contains NaN or Inf"):
        read_activations(tmp_path / "nan.npz")
