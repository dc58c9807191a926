"""save_torch_activations writes what the file door reads: the pooled layers, the labels and
the logits, rows in the inputs' order, never half-written."""

import json

import numpy as np
import pytest

pytest.importorskip("torch.nn")

import torch
from safetensors import safe_open
from torch import nn

from ssc_jax.nets.activation_files import read_activations
from ssc_jax.nets.external import grams_from_activations
from ssc_jax.nets.torch_capture import torch_activation_grams
from ssc_jax.nets.torch_save import save_torch_activations

N, CLASSES = 20, 3


class Tokens(nn.Module):
    """Token blocks (b, T, D) from images: patches, two residual blocks, a mean-pooled head."""

    def __init__(self):
        super().__init__()
        self.patches = nn.Linear(12, 8)
        self.blocks = nn.Sequential(*(Block() for _ in range(2)))
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        tokens = self.patches(x.reshape(len(x), 4, 12))
        return self.head(self.blocks(tokens).mean(dim=1))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())

    def forward(self, x):
        return x + self.mlp(x)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Tokens()


@pytest.fixture
def loader():
    images = torch.randn(N, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(N) % CLASSES
    dataset = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(dataset, batch_size=6)


def by_hand(model, loader) -> tuple[dict, np.ndarray]:
    """The blocks' mean-pooled outputs and the logits, with hooks written here."""
    outputs: dict = {"blocks.0": [], "blocks.1": []}
    hooks = [
        model.blocks[i].register_forward_hook(
            lambda m, a, out, i=i: outputs[f"blocks.{i}"].append(out.mean(dim=1).double())
        )
        for i in range(2)
    ]
    with torch.no_grad():
        logits = torch.cat([model.eval()(x) for x, _ in loader]).numpy()
    for hook in hooks:
        hook.remove()
    return {k: torch.cat(v).numpy() for k, v in outputs.items()}, logits


@pytest.mark.parametrize("name", ["acts.safetensors", "acts"])
def test_saved_activations_are_what_the_file_door_reads(model, loader, tmp_path, name):
    path = save_torch_activations(model, loader, tmp_path / name, batch_size=4)
    assert path == tmp_path / name and [p.name for p in tmp_path.iterdir()] == [name]
    source = read_activations(path)
    expected, logits = by_hand(model, loader)
    assert source.names == ("blocks.0", "blocks.1")
    for layer in source.names:
        np.testing.assert_allclose(source.layers[layer], expected[layer], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(source.labels, np.arange(N) % CLASSES)
    np.testing.assert_array_equal(source.predictions, logits.argmax(axis=1))
    names, grams = grams_from_activations(source)
    direct = torch_activation_grams(model, loader)
    assert list(names) == direct.names
    np.testing.assert_allclose(grams, direct.grams, rtol=1e-5, atol=1e-5)


def test_safetensors_metadata_records_order_and_pooling(model, loader, tmp_path):
    path = save_torch_activations(model, loader, tmp_path / "a.safetensors", tokens="last")
    with safe_open(path, "np") as file:
        metadata = file.metadata()
        np.testing.assert_allclose(file.get_tensor("logits"), by_hand(model, loader)[1], atol=1e-6)
    assert json.loads(metadata["layers"]) == ["blocks.0", "blocks.1"]
    assert metadata["tokens"] == "last"
    assert metadata["selection"].startswith("the model has 0 Conv2d layers: the 2 Block")


class Failing(Tokens):
    def forward(self, x):
        if len(x) < 6:
            raise RuntimeError("out of memory")
        return super().forward(x)


def test_nothing_is_left_when_a_pass_fails_and_an_existing_path_is_kept(loader, tmp_path):
    with pytest.raises(RuntimeError, match="out of memory"):
        save_torch_activations(Failing(), loader, tmp_path / "acts")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "acts").mkdir()
    with pytest.raises(ValueError, match="exists; save the activations to a new path"):
        save_torch_activations(Tokens(), loader, tmp_path / "acts")


def test_tensors_without_labels_need_labels(model, tmp_path):
    images = torch.randn(N, 3, 4, 4)
    with pytest.raises(ValueError, match="the batches carry no labels; pass labels="):
        save_torch_activations(model, images, tmp_path / "a.safetensors")
    path = save_torch_activations(model, images, tmp_path / "b", labels=np.arange(N) % 2)
    np.testing.assert_array_equal(read_activations(path).labels, np.arange(N) % 2)


@pytest.mark.parametrize("name", ["acts.safetensors", "acts"])
def test_class_names_are_saved_for_the_file_door(model, loader, tmp_path, name):
    names = ("ant", "bee", "cow")
    path = save_torch_activations(model, loader, tmp_path / name, class_names=names)
    assert read_activations(path).class_names == names


def test_class_names_that_do_not_fit_are_refused_before_writing(model, loader, tmp_path):
    path = tmp_path / "acts.safetensors"
    with pytest.raises(ValueError, match=r"2 class names for logits of 3 classes") as error:
        save_torch_activations(model, loader, path, class_names=["ant", "bee"])
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"'class_names' repeats \['ant'\]"):
        save_torch_activations(model, loader, path, class_names=["ant", "bee", "ant"])
    assert list(tmp_path.iterdir()) == []
