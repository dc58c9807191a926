"""The torch door on the model libraries' own classes, built from configs (no downloads):
torchvision ``resnet18`` and ``vgg11`` (every Conv2d), a timm ViT at 32 px (its blocks by
default) and a GPT-2 style model (its blocks, dict batches with padding), each against hooks
written by hand that copy the outputs. Skipped where torchvision, timm or transformers are
absent."""

import numpy as np
import pytest

pytest.importorskip("torch.nn")

import torch
from hooks_by_hand import outputs_by_hand

from ssc_jax.nets.torch_capture import torch_activation_grams

N, CLASSES = 8, 10
UNIT = 2.0**-24  # float32 unit roundoff


def copied_outputs(model, names, call) -> tuple[dict[str, np.ndarray], object]:
    """``outputs_by_hand`` in float64 NumPy."""
    outputs, result = outputs_by_hand(model, names, call)
    return {name: out.double().numpy() for name, out in outputs.items()}, result


def assert_grams(grams: np.ndarray, pooled: list[np.ndarray], spread: list[np.ndarray], terms):
    """Each float32 Gram against the float64 one of ``pooled`` (n, D), within the float32
    rounding bound: gamma_D |P| |P|^T for the dot products, plus 2 gamma_T |P| |P|^T where the
    door averaged T token rows in float32 (``spread``: the mean of |x| over the tokens, or |x|
    itself; ``terms``: T, or 0 where nothing was averaged), plus one rounding of the result."""
    for gram, values, magnitude in zip(grams, pooled, spread, strict=True):
        ref = values @ values.T
        rounding = (values.shape[1] + 2 * terms) * UNIT
        bound = rounding / (1 - rounding) * (magnitude @ magnitude.T) + UNIT * np.abs(ref)
        assert np.all(np.abs(gram - ref) <= bound)


def masked_mean(tokens: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(n, T, D), (n, T) bool -> (n, D): each input's mean over its real tokens."""
    return np.stack([t[keep].mean(axis=0) for t, keep in zip(tokens, real, strict=True)])


def flat(outputs, names) -> list[np.ndarray]:
    return [outputs[name].reshape(N, -1) for name in names]


@pytest.fixture(scope="module")
def images():
    return torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name, count", [("resnet18", 20), ("vgg11", 8)])
def test_torchvision_cnns_give_every_conv2d(name, count, images):
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = getattr(models, name)(num_classes=CLASSES)
    result = torch_activation_grams(model, images, batch_size=N)
    convs = [path for path, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    assert sorted(result.names) == sorted(convs) and len(convs) == count
    assert result.selection == f"the {count} Conv2d layers" and result.tokens is None
    outputs, logits = copied_outputs(model, result.names, lambda: model(images))
    acts = flat(outputs, result.names)
    assert_grams(result.grams, acts, [np.abs(a) for a in acts], terms=0)
    np.testing.assert_array_equal(result.predictions, logits.argmax(1).numpy())


def test_a_timm_vit_at_32px_gets_its_blocks(images):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
        num_classes=CLASSES,
    )
    result = torch_activation_grams(model, images, batch_size=N)
    assert result.names == ["blocks.0", "blocks.1", "blocks.2"]
    assert result.selection.startswith("the model has 1 Conv2d layer: the 3 Block modules")
    assert result.tokens == "mean"
    outputs, logits = copied_outputs(model, result.names, lambda: model(images))
    tokens = outputs["blocks.0"].shape[1]  # 16 patches and the class token
    assert tokens == 17
    pooled = [outputs[name].mean(axis=1) for name in result.names]
    spread = [np.abs(outputs[name]).mean(axis=1) for name in result.names]
    assert_grams(result.grams, pooled, spread, terms=tokens)
    np.testing.assert_allclose(result.logits, logits.numpy(), rtol=1e-5, atol=1e-6)


def test_a_gpt2_model_from_dict_batches_with_padding():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=16,
        n_layer=3,
        n_head=2,
        num_labels=CLASSES,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    model = transformers.GPT2ForSequenceClassification(config)
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 10, size=N)
    mask = (np.arange(9)[None] < lengths[:, None]).astype(np.int64)
    inputs = {
        "input_ids": torch.as_tensor(rng.integers(2, 50, size=(N, 9)) * mask),
        "attention_mask": torch.as_tensor(mask),
    }
    batch = {**inputs, "labels": torch.as_tensor(np.arange(N) % CLASSES)}
    result = torch_activation_grams(model, batch, tokens="last", batch_size=N)
    assert result.names == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    assert result.selection.startswith("the model has 0 Conv2d layers: the 3 GPT2Block modules")
    np.testing.assert_array_equal(result.labels, np.arange(N) % CLASSES)
    outputs, out = copied_outputs(model, result.names, lambda: model(**inputs))
    ends = mask.sum(axis=1) - 1
    last = [outputs[name][np.arange(N), ends] for name in result.names]
    assert_grams(result.grams, last, [np.abs(a) for a in last], terms=0)
    np.testing.assert_allclose(result.logits, out.logits.numpy(), rtol=1e-5, atol=1e-6)
    mean = torch_activation_grams(model, batch, batch_size=N)
    real = mask.astype(bool)
    pooled = [masked_mean(outputs[name], real) for name in mean.names]
    spread = [masked_mean(np.abs(outputs[name]), real) for name in mean.names]
    assert_grams(mean.grams, pooled, spread, terms=9)
