"""Datasets as uint8 image arrays, and seeded stratified subsets.

:func:`load_dataset` returns ``(images uint8 (n, H, W, C), labels int32 (n,), class_names)``
for scikit-learn's digits (offline), CIFAR-10/100 through ``tfds.data_source`` (no TensorFlow
needed), or a folder / zip of class folders of images.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssc_jax.core.checks import check_ndim

TFDS_NAMES = ("cifar10", "cifar100")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# What reading a member of a truncated or altered zip raises.
_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)
DIGITS_TEST_FRACTION = 0.3
Dataset = tuple[np.ndarray, np.ndarray, list[str]]


def load_dataset(
    name: str | os.PathLike, split: str = "train", *, data_dir: str | None = None
) -> Dataset:
    """Load a dataset: (images uint8 (n, H, W, C), labels int32 (n,), class names).

    - ``"digits"``: scikit-learn's 8x8 digits scaled to 0..255, (n, 8, 8, 1); a fixed
      stratified split puts 30% of each class in ``"test"``, the rest in ``"train"``.
    - ``"cifar10"``, ``"cifar100"`` (fine labels): ``tfds.data_source`` reads the prepared
      dataset in ``data_dir`` (tfds' default when None; downloading needs internet).
    - A path to a folder or zip of class folders (``<class>/<image>``, at any depth, e.g.
      ``test/cat/7.jpg``): class = the image's parent folder; sorted class names give the
      label ids; images come in class then natural file-name order, converted to RGB. The
      path is one split; ``split`` is ignored.
    """
    if str(name) == "digits":
        return _load_digits(split)
    if str(name) in TFDS_NAMES:
        return _load_tfds(str(name), split, data_dir)
    path = Path(name)
    if path.is_dir() or path.is_file():
        return _load_image_folder(path)
    raise ValueError(
        f"cannot read dataset {str(name)!r}: it is not 'digits', 'cifar10' or 'cifar100', "
        "nor an existing folder or zip file of class folders of images"
    )


def _load_digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits has the splits 'train' and 'test'; got {split!r}")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=0
    )
    index = np.sort(train if split == "train" else test)
    return images[index], labels[index], [str(c) for c in range(10)]


def _load_tfds(name: str, split: str, data_dir: str | None) -> Dataset:
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir)
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels, list(source.dataset_info.features["label"].names)


def _natural_key(text: str) -> list:
    """Sort key that orders "2.jpg" before "10.jpg"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _unreadable_zip(path: Path, error: BaseException) -> ValueError:
    cause = " ".join(str(error).split())[:120]
    return ValueError(
        f"{path}: not a readable zip archive (truncated or damaged: {type(error).__name__}: "
        f"{cause}); download or copy it again"
    )


def _image_files(path: Path) -> list[tuple[str, str, str, Callable[[], bytes]]]:
    """(class, file name, where, reader) of every image under a folder or in a zip; where
    names the file for messages."""
    found = []
    if path.is_dir():
        for file in path.rglob("*"):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.parent != path:
                found.append((file.parent.name, file.name, str(file), file.read_bytes))
        return found
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as error:
        raise _unreadable_zip(path, error) from None
    for member in archive.namelist():
        parts = member.split("/")
        hidden = any(p.startswith((".", "__MACOSX")) for p in parts)
        if len(parts) >= 2 and Path(member).suffix.lower() in IMAGE_SUFFIXES and not hidden:
            found.append(
                (parts[-2], parts[-1], f"{path}:{member}", lambda m=member: archive.read(m))
            )
    return found


def _read_image(name: str, where: str, read: Callable[[], bytes], zipped: Path | None):
    """The image ``name`` (class/file) at ``where`` as RGB (H, W, 3); a one-line
    ``ValueError`` naming it when the file, or the zip that holds it (``zipped``), cannot be
    read."""
    try:
        data = read()
    except _ZIP_ERRORS as error:
        if zipped is not None:
            raise _unreadable_zip(zipped, error) from None
        raise ValueError(f"{where}: cannot be read ({error})") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        cause = "not a JPEG or PNG image"
    except OSError as error:
        cause = str(error)
    raise ValueError(f"cannot decode image {name} at {where} ({cause}); replace or remove it")


def _load_image_folder(path: Path) -> Dataset:
    files = _image_files(path)
    if not files:
        raise ValueError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {str(path)!r}; "
            "expected <class>/<image> entries"
        )
    files.sort(key=lambda f: (f[0], _natural_key(f[1])))
    classes = sorted({cls for cls, *_ in files})
    label_of = {cls: i for i, cls in enumerate(classes)}
    images = []
    zipped = None if path.is_dir() else path
    for cls, file_name, where, read in files:
        images.append(_read_image(f"{cls}/{file_name}", where, read, zipped))
        if images[-1].shape != images[0].shape:
            raise ValueError(
                f"images in {str(path)!r} differ in size: {cls}/{file_name} is "
                f"{images[-1].shape}, the first is {images[0].shape}"
            )
    labels = np.asarray([label_of[cls] for cls, *_ in files], np.int32)
    return np.stack(images), labels, classes


def _check_labels(labels) -> np.ndarray:
    check_ndim("labels", labels, 1, "a vector of class ids (n,)")
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("labels is empty")
    return labels


def stratified_subset(labels, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random ``fraction`` (0 < fraction <= 1) of every class
    (at least one input per class), e.g. the paper's 5% and 50% training subsets."""
    labels = _check_labels(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def analysis_indices(labels, n: int, *, seed: int = 0) -> np.ndarray:
    """A fixed, seeded, stratified set of ``n`` inputs (e.g. test images for the analysis):
    classes get shares proportional to their sizes (largest remainders round up). Indices
    are ordered by class, then position, so that class blocks are contiguous."""
    labels = _check_labels(labels)
    if int(n) != n or not 1 <= n <= len(labels):
        raise ValueError(
            f"n must be an integer in [1, {len(labels)}] (the dataset size); got {n!r}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    shares = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - shares), kind="stable")
    shares[remainder_order[: n - shares.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        np.sort(rng.choice(np.flatnonzero(labels == cls), size=share, replace=False))
        for cls, share in zip(classes, shares, strict=True)
    ]
    return np.concatenate(chosen)
