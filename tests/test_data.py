"""Datasets, subsets and preprocessing."""

import io
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from ssc_jax import analysis_indices, load_dataset, normalize_images, stratified_subset
from ssc_jax.training.augment import channel_stats, random_crop_flip

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CIFAR_TEST_ZIP = SHARED / "cifar10-test.zip"
needs_shared_data = pytest.mark.skipif(
    not CIFAR_TEST_ZIP.is_file(), reason=f"real CIFAR-10 images not found at {CIFAR_TEST_ZIP}"
)


def png_bytes(value: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# class folder -> file names; each image's pixels encode (class index, file number)
FILES = {"cat": ["1.png", "10.png", "2.png"], "ant": ["7.png"], "dog": ["3.png", "0.png"]}


def pixel(cls: str, file: str) -> int:
    return 10 * sorted(FILES).index(cls) + int(file.split(".")[0])


def expected_order():
    return [(c, f) for c in sorted(FILES) for f in sorted(FILES[c], key=lambda f: int(f[:-4]))]


def check_dataset(images, labels, classes):
    assert classes == ["ant", "cat", "dog"]
    assert images.dtype == np.uint8
    assert images.shape == (6, 4, 4, 3)
    assert labels.dtype == np.int32
    order = expected_order()
    np.testing.assert_array_equal(labels, [classes.index(c) for c, _ in order])
    np.testing.assert_array_equal(images[:, 0, 0, 0], [pixel(c, f) for c, f in order])


def test_zip_of_class_folders(tmp_path):
    path = tmp_path / "tiny.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for cls, files in FILES.items():
            for file in files:
                archive.writestr(f"test/{cls}/{file}", png_bytes(pixel(cls, file)))
        archive.writestr("test/README.txt", "not an image")
        archive.writestr("__MACOSX/test/cat/._1.png", b"junk")
    check_dataset(*load_dataset(path))


def test_image_folder(tmp_path):
    for cls, files in FILES.items():
        (tmp_path / cls).mkdir()
        for file in files:
            (tmp_path / cls / file).write_bytes(png_bytes(pixel(cls, file)))
    check_dataset(*load_dataset(str(tmp_path)))


def test_unreadable_paths(tmp_path):
    with pytest.raises(ValueError, match="cannot read dataset"):
        load_dataset(tmp_path / "missing.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode image cat/0\.jpg"):
        load_dataset(tmp_path / "bad")


@needs_shared_data
def test_members_of_the_real_cifar10_zip(tmp_path):
    """A few real JPEGs, copied from the shared zip into a small one, keep their labels."""
    wanted = [
        "test/airplane/0000.jpg",
        "test/truck/0005.jpg",
        "test/cat/0003.jpg",
        "test/cat/0012.jpg",
    ]
    small = tmp_path / "few.zip"
    with zipfile.ZipFile(CIFAR_TEST_ZIP) as real, zipfile.ZipFile(small, "w") as out:
        for member in wanted:
            out.writestr(member, real.read(member))
    images, labels, classes = load_dataset(small)
    assert classes == ["airplane", "cat", "truck"]
    np.testing.assert_array_equal(labels, [0, 1, 1, 2])
    assert images.shape == (4, 32, 32, 3)
    assert images.std() > 10


@needs_shared_data
def test_the_real_cifar10_test_zip():
    images, labels, classes = load_dataset(CIFAR_TEST_ZIP, "test")
    assert images.shape == (10_000, 32, 32, 3)
    assert classes[:3] == ["airplane", "automobile", "bird"]
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)


def test_digits_split_is_fixed_stratified_and_disjoint():
    x_train, y_train, classes = load_dataset("digits")
    x_test, y_test, _ = load_dataset("digits", "test")
    assert classes == [str(c) for c in range(10)]
    assert x_train.shape[1:] == (8, 8, 1)
    assert x_train.dtype == np.uint8
    assert x_train.max() == 255
    assert len(x_train) + len(x_test) == 1797
    assert abs(len(x_test) / 1797 - 0.3) < 0.01
    np.testing.assert_allclose(np.bincount(y_test) / np.bincount(y_train), 3 / 7, atol=0.03)
    again, _, _ = load_dataset("digits", "test")
    np.testing.assert_array_equal(x_test, again)
    with pytest.raises(ValueError, match="splits"):
        load_dataset("digits", "validation")


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_tfds_loaders_under_mock_data(name, classes):
    """tfds' mock_data also mocks ``tfds.data_source``; TensorFlow is not needed."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        images, labels, names = load_dataset(name, "test")
    assert images.shape == (12, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert len(names) == classes
    assert labels.min() >= 0
    assert labels.max() < classes


def test_tfds_finds_the_cifar10_builder_code_offline(tmp_path):
    """tfds imports importlib_resources (our dependency, not its own) to locate a builder's
    code when it prepares or reads a dataset; nothing is downloaded."""
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder("cifar10", data_dir=tmp_path)
    assert type(builder).code_path.name == "cifar.py"
    assert not any(tmp_path.iterdir())


def test_stratified_subset():
    labels = np.repeat(np.arange(4), [100, 40, 20, 2])
    subset = stratified_subset(labels, 0.05, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [5, 2, 1, 1])
    np.testing.assert_array_equal(subset, np.sort(subset))
    np.testing.assert_array_equal(subset, stratified_subset(labels, 0.05, seed=3))
    assert not np.array_equal(subset, stratified_subset(labels, 0.05, seed=4))
    assert len(stratified_subset(labels, 1.0)) == len(labels)
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0)


def test_analysis_indices():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    chosen = analysis_indices(labels, 11, seed=1)
    assert len(chosen) == 11
    assert len(set(chosen)) == 11
    np.testing.assert_array_equal(np.bincount(labels[chosen]), [6, 3, 2])
    assert np.all(np.diff(labels[chosen]) >= 0)  # grouped by class
    np.testing.assert_array_equal(chosen, analysis_indices(labels, 11, seed=1))
    with pytest.raises(ValueError, match=r"\[1, 100\] \(the dataset size\); got 101"):
        analysis_indices(labels, 101)


def test_normalize_and_channel_stats():
    images = np.random.default_rng(0).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    x = np.asarray(normalize_images(images, mean, std))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_random_crop_flip_shifts_and_mirrors():
    image = np.arange(8 * 8, dtype=np.float32).reshape(1, 8, 8, 1) + 1
    batch = np.repeat(image, 64, axis=0)
    out = np.asarray(random_crop_flip(jax.random.key(0), batch, padding=2))
    assert out.shape == batch.shape
    flips = 0
    for crop in out[..., 0]:
        inside = crop[crop > 0]  # zero padding shows at the borders
        assert inside.size >= 6 * 6
        rows = np.flatnonzero(crop.any(axis=1))
        row = crop[rows[0]][crop[rows[0]] > 0]
        diffs = np.diff(row)
        assert np.all(diffs == 1) or np.all(diffs == -1)  # a shifted row, maybe mirrored
        flips += diffs[0] == -1
    assert 10 < flips < 54
    np.testing.assert_array_equal(out, random_crop_flip(jax.random.key(0), batch, padding=2))
