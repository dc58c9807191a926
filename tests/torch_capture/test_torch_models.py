"""The torch door on library models built from configs: a Hugging Face ViT (repeated blocks
by default, logits of the same pass) and BERT (dict batches with padding, token pooling,
hidden states), each against hooks written by hand."""

import numpy as np
import pytest

pytest.importorskip("torch.nn")
pytest.importorskip("transformers")

import torch
import transformers
from hooks_by_hand import outputs_by_hand

from ssc_jax.nets.torch_capture import torch_activation_grams

N, CLASSES = 12, 3


def masked_mean(tokens: torch.Tensor, mask: np.ndarray | None) -> np.ndarray:
    """(b, T, D) -> (b, D) float64: the mean of each input's real tokens, input by input."""
    values = tokens.double().numpy()
    if mask is None:
        return values.mean(axis=1)
    return np.stack([v[m.astype(bool)].mean(axis=0) for v, m in zip(values, mask, strict=True)])


def assert_grams(grams, pooled: list[np.ndarray]):
    for gram, acts in zip(grams, pooled, strict=True):
        ref = acts @ acts.T
        # float32 products of D terms against float64: a few units of float32 rounding.
        assert np.abs(gram - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=CLASSES,
    )
    return transformers.ViTForImageClassification(config)


def test_a_vit_gets_its_transformer_layers_and_its_logits(vit):
    images = torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = torch_activation_grams(vit, images, batch_size=5)
    prefix = result.names[0].rpartition(".")[0]
    assert result.names == [f"{prefix}.{i}" for i in range(3)]
    assert result.selection.startswith("the model has 1 Conv2d layer: the 3 ViTLayer modules")
    outputs, out = outputs_by_hand(vit, result.names, lambda: vit(images))
    assert_grams(result.grams, [masked_mean(outputs[name], None) for name in result.names])
    np.testing.assert_allclose(result.logits, out.logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.predictions, out.logits.argmax(1).numpy())
    assert result.tokens == "mean"
    cls = torch_activation_grams(vit, images, layers="blocks", tokens="cls")
    assert_grams(cls.grams, [outputs[name][:, 0].double().numpy() for name in cls.names])


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=CLASSES,
    )
    return transformers.BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def text():
    """Token ids right-padded to 9 with their attention mask and labels."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 10, size=N)
    mask = (np.arange(9)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 50, size=(N, 9)) * mask
    return {
        "input_ids": torch.as_tensor(ids),
        "attention_mask": torch.as_tensor(mask),
        "labels": torch.as_tensor(np.arange(N) % CLASSES),
    }


class Rows(torch.utils.data.Dataset):
    """One dict of tensors per input, as a tokenized Hugging Face dataset gives."""

    def __init__(self, columns):
        self.columns = columns

    def __len__(self):
        return len(self.columns["labels"])

    def __getitem__(self, index):
        return {key: value[index] for key, value in self.columns.items()}


def test_bert_from_dict_batches_honours_padding(bert, text):
    loader = torch.utils.data.DataLoader(Rows(text), batch_size=5)
    result = torch_activation_grams(bert, loader, layers="blocks")
    assert result.names == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    np.testing.assert_array_equal(result.labels, text["labels"].numpy())
    inputs = {k: v for k, v in text.items() if k != "labels"}
    outputs, out = outputs_by_hand(bert, result.names, lambda: bert(**inputs))
    mask = text["attention_mask"].numpy()
    assert_grams(result.grams, [masked_mean(outputs[name], mask) for name in result.names])
    np.testing.assert_allclose(result.logits, out.logits.numpy(), rtol=1e-5, atol=1e-6)
    last = torch_activation_grams(bert, loader, layers="blocks", tokens="last")
    ends = mask.sum(axis=1) - 1
    assert_grams(last.grams, [outputs[n][np.arange(N), ends].double().numpy() for n in last.names])


def test_hidden_states_of_a_tokenizers_output(bert, text):
    result = torch_activation_grams(bert, text, layers="hidden_states", batch_size=7)
    assert result.names == ["hidden_states.0", "hidden_states.1", "hidden_states.2"]
    assert result.selection == "the hidden states the model returns"
    inputs = {k: v for k, v in text.items() if k != "labels"}
    with torch.no_grad():
        states = bert.eval()(**inputs, output_hidden_states=True).hidden_states
    mask = text["attention_mask"].numpy()
    assert_grams(result.grams, [masked_mean(state, mask) for state in states])
    np.testing.assert_array_equal(result.labels, text["labels"].numpy())
