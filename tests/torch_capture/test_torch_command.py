"""``python -m ssc_jax.run torch PACKAGE.MODULE:CALLABLE``: a model from an import path, its
weights loaded without unpickling, an image folder preprocessed as stated, the usual folder."""

import json
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch.nn")

import torch
from PIL import Image

from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.cli.torch_model import IMAGENET_MEAN, IMAGENET_STD, preprocessed
from ssc_jax.training.datasets import load_dataset

CLASSES, PER_CLASS = 3, 12

MODELS = '''
from torch import nn


class Blocks(nn.Module):
    """Patch tokens through three residual MLP blocks: no Conv2d but the patch embedding."""

    def __init__(self, num_classes=3, width=8):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(3)
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = tokens + block(tokens)
        return self.head(tokens.mean(dim=1))
'''


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """An importable module of models and a folder of CLASSES x PER_CLASS 8x8 PNG images."""
    (tmp_path / "tiny_torch_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, (8, 8, 3)) // (label + 1)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    yield tmp_path
    sys.modules.pop("tiny_torch_models", None)


def test_the_torch_command_writes_the_usual_folder(setup, capsys):
    from tiny_torch_models import Blocks

    torch.manual_seed(0)
    weights = setup / "blocks.pt"
    torch.save(Blocks(num_classes=CLASSES).state_dict(), weights)
    out = setup / "out"
    argv = ["torch", "tiny_torch_models:Blocks", "--model-args", '{"num_classes": 3}']
    argv += ["--weights", str(weights), "--data", str(setup / "images"), "--n", "36"]
    argv += ["--image-size", "16", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert metrics["layer_selection"].startswith("the model has 1 Conv2d layer: the 3 Sequential")
    assert (out / "report.html").exists()
    # The network accuracy is that of the saved weights on the images preprocessed as stated.
    model = Blocks(num_classes=CLASSES).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    images, labels, _ = load_dataset(setup / "images")
    x = preprocessed(images, size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with torch.no_grad():
        accuracy = float(np.mean(model(x).argmax(1).numpy() == labels))
    assert metrics["network_accuracy"] == pytest.approx(accuracy)


def test_a_pickled_model_is_refused_in_one_line(setup, capsys):
    from tiny_torch_models import Blocks

    pickled = setup / "model.pt"
    torch.save(Blocks(), pickled)  # the whole object: loading it would run pickled code
    argv = ["torch", "tiny_torch_models:Blocks", "--weights", str(pickled)]
    argv += ["--data", str(setup / "images"), "--n", "36", "--out", str(setup / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ssc-jax: error: --weights {pickled}: not a state dict")
    assert "\n" not in error and not (setup / "out").exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tiny_torch_models", "write it as PACKAGE.MODULE:CALLABLE"),
        ("tiny_torch_models:Missing", "tiny_torch_models has no Missing"),
        ("no_such_package.models:net", "cannot import no_such_package.models"),
    ],
)
def test_bad_import_paths_are_one_line(setup, capsys, model, message):
    argv = ["torch", model, "--data", str(setup / "images"), "--out", str(setup / "out")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_safetensors_weights_and_a_layer_that_matches_nothing(setup, capsys):
    from safetensors.torch import save_file
    from tiny_torch_models import Blocks

    weights = setup / "blocks.safetensors"
    save_file(Blocks().state_dict(), weights)
    argv = ["torch", "tiny_torch_models:Blocks", "--weights", str(weights), "--layers", "block.1"]
    argv += ["--data", str(setup / "images"), "--n", "36", "--out", str(setup / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "layers='block.1' matches no module; the closest module paths: blocks.1" in error


def test_preprocessing_scales_resizes_and_normalises():
    images = np.full((2, 4, 4, 3), 255, np.uint8)
    images[1] = 0
    x = preprocessed(images, size=8, mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.5])
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, 1].numpy(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0].numpy(), -1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--resamples", "1"], "--resamples/--level:"),
        (["--level", "1.5"], "--resamples/--level:"),
        (["--measures", "no_such_measure"], "--measures:"),
    ],
)
def test_bad_settings_are_refused_before_the_model_is_imported(setup, capsys, option, message):
    argv = ["torch", "no_such_package.models:net", "--data", str(setup / "images")]
    argv += ["--out", str(setup / "out"), *option]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ssc-jax: error: {message}") and "\n" not in error
    assert not (setup / "out").exists()
