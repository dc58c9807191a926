"""analyze_torch and compare_models: one call from a torch model to the report, and two
torch models compared layer by layer, against linear CKA computed here from hooked outputs."""

import json

import numpy as np
import pytest

pytest.importorskip("torch.nn")

import torch
from torch import nn

from ssc_jax.pipeline.publish.torch_api import analyze_torch, compare_models

N, CLASSES = 36, 3


def cnn(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 9, CLASSES),
    )


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % CLASSES
    images = torch.randn(N, 3, 8, 8, generator=generator) + labels[:, None, None, None]
    return images, labels


def loader(data):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=10)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s linear CKA of (n, p) and (n, q) in float64, from the features."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def conv_outputs(model, images) -> list[np.ndarray]:
    with torch.no_grad():
        first = model[0](images)
        second = model[2](model[1](first))
    return [out.reshape(N, -1).double().numpy() for out in (first, second)]


def test_compare_models_gives_cross_network_similarity_and_a_report(data, tmp_path):
    a, b = cnn(4), cnn(6)
    out = tmp_path / "compare"
    result = compare_models({"narrow": a, "wide": b}, loader(data), progress=False, out=out)
    (cross,) = result.cross
    assert (cross.a, cross.b) == ("narrow", "wide")
    assert cross.layers_a == cross.layers_b == ["0", "2"]
    assert cross.similarity["ssc_cka"].shape == (2, 2)
    expected = [
        [linear_cka(x, y) for y in conv_outputs(b, data[0])] for x in conv_outputs(a, data[0])
    ]
    # Grams in float32 against features in float64: float32 rounding of sums of n * D terms.
    np.testing.assert_allclose(cross.similarity["linear_cka"], expected, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [run["name"] for run in metrics["runs"]] == ["narrow", "wide"]
    assert (out / "report.html").exists()


def test_compare_models_needs_two(data):
    with pytest.raises(ValueError, match="at least two models; got 1"):
        compare_models({"a": cnn(4)}, loader(data))


def test_analyze_torch_uses_the_logits_of_the_same_pass(data, tmp_path):
    model = cnn(4)
    images = data[0].permute(0, 2, 3, 1).numpy()
    result = analyze_torch(
        model,
        loader(data),
        images=images,
        class_names=["a", "b", "c"],
        progress=False,
        out=tmp_path / "report",
    )
    with torch.no_grad():
        accuracy = float((model.eval()(data[0]).argmax(1) == data[1]).double().mean())
    assert result.table1["network_accuracy"] == pytest.approx(accuracy)
    assert result.graphs.layers == ["0", "2"]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["tokens"] is None  # no layer had a token axis
    assert metrics["layer_selection"] == "the 2 Conv2d layers"
