"""The GPU suite (benchmarks/gpu_suite.py) at its CPU sizes: every row present and finite."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ssc_jax

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Columns of the table that hold numbers, and the rows' items (by their start) with the
# numbers each must have.
NUMBERS = ("first call (s)", "warm (s)", "/ N^3 matmul", "iterations", "certified gap", "true gap")
REQUIRED = {
    "matmul (the unit)": ("warm (s)", "/ N^3 matmul"),
    "`ssc_gram`, ADMM, one problem": (
        "first call (s)",
        "warm (s)",
        "/ N^3 matmul",
        "certified gap",
    ),
    "`ssc_gram`, working set, one problem": (
        "first call (s)",
        "warm (s)",
        "/ N^3 matmul",
        "certified gap",
    ),
    "`ssc_sparse`, union of subspaces": (
        "first call (s)",
        "warm (s)",
        "/ N^3 matmul",
        "iterations",
        "certified gap",
    ),
    "`ssc_gram`, working set, ReLU features": ("first call (s)", "warm (s)", "certified gap"),
    "`ssc_sparse`, ReLU features": ("first call (s)", "warm (s)", "iterations", "certified gap"),
    "`ssc_gram`, a batch of 4": ("first call (s)", "warm (s)", "/ N^3 matmul", "certified gap"),
    "`cka_matrix` over 20 graphs": ("first call (s)", "warm (s)", "/ N^3 matmul"),
    "ResNet-18 training, 2 steps": ("first call (s)", "warm (s)", "iterations"),
    "certificate, float32 vs float64": ("warm (s)", "iterations", "certified gap", "true gap"),
}


def image_zip(path: Path, per_class: int = 6) -> Path:
    """A zip of class folders of 32x32 JPEGs (train/<class>/<i>.jpg), as the CIFAR-10 zip."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("cat", "dog"):
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                file = path.parent / f"{name}{i}.jpg"
                Image.fromarray(pixels).save(file)
                archive.write(file, f"train/{name}/{i}.jpg")
    return path


def table_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    assert all(len(row) == len(header) for row in rows), rows
    return [dict(zip(header, row, strict=True)) for row in rows]


def numbers(column: str, cell: str) -> list[float]:
    """The numbers of a cell; iterations may be a range such as "20-30"."""
    return [float(v) for v in cell.split("-")] if column == "iterations" else [float(cell)]


def suite_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("gpu_suite")


def test_a_failed_row_says_why_and_the_suite_goes_on(tmp_path, monkeypatch):
    gpu_suite = suite_module(monkeypatch)

    def fail(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED | out of\nmemory")

    monkeypatch.setattr(gpu_suite, "solver_row", fail)
    for name in (
        "sparse_row",
        "features_row",
        "batch_row",
        "cka_row",
        "training_row",
        "check_rows",
    ):
        row = gpu_suite.Row(name, "small", "highest", warm=1.0)
        monkeypatch.setattr(gpu_suite, name, lambda *args, row=row: row)
    out = tmp_path / "table.md"
    assert gpu_suite.main(["--sizes", "tiny", "--out", str(out)]) == 1
    rows = table_rows(out.read_text())
    items = ["matmul (the unit)"] * 2 + ["`ssc_gram`", "`ssc_gram`, working set"]
    items += ["sparse_row", "features_row", "sparse_row", "batch_row", "cka_row", "training_row"]
    assert [row["item"] for row in rows] == [*items, "check_rows"]
    assert rows[2]["notes"] == "FAILED: RuntimeError: RESOURCE_EXHAUSTED / out of memory"
    assert rows[3]["notes"] == rows[2]["notes"] and rows[4]["warm (s)"] == "1"


def test_training_images_fall_back_to_synthetic_and_say_so(tmp_path, monkeypatch):
    gpu_suite = suite_module(monkeypatch)
    images, labels, source = gpu_suite.training_images(str(tmp_path / "absent.zip"), 16)
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (16,) and source.startswith("SYNTHETIC")
    zipped = str(image_zip(tmp_path / "train.zip"))
    images, labels, source = gpu_suite.training_images(zipped, 5)
    assert images.shape == (5, 32, 32, 3) and set(labels.tolist()) <= {0, 1}
    assert source.startswith("real images")


@pytest.mark.slow
def test_tiny_suite_writes_every_row_with_finite_numbers(tmp_path):
    out = tmp_path / "gpu_suite.md"
    data = image_zip(tmp_path / "train.zip")
    # The ssc_jax under test first, whether installed or from a checkout's src/.
    source = str(Path(ssc_jax.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--sizes", "tiny"]
    done = subprocess.run(
        [*command, "--data", str(data), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(out.read_text())
    assert table_rows(done.stdout) == rows
    for item in REQUIRED:
        assert any(row["item"].startswith(item) for row in rows), f"no row {item!r}"
    for row in rows:
        assert "FAILED" not in row["notes"], row
        needed = next(req for item, req in REQUIRED.items() if row["item"].startswith(item))
        for column in NUMBERS:
            if column in needed or row[column] != "-":
                assert all(math.isfinite(v) for v in numbers(column, row[column])), (column, row)
    training = next(row for row in rows if row["item"].startswith("ResNet-18"))
    assert "real images" in training["notes"] and training["size"].startswith("12 images")
    checks = [row for row in rows if row["item"].startswith("certificate")]
    assert {row["precision"] for row in checks} == {"highest", "default"}
    # The certificate bounds the true distance to the optimum.
    assert all(float(row["true gap"]) <= float(row["certified gap"]) for row in checks)
