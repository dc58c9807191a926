"""Per-layer Gram matrices of a PyTorch model, captured with forward hooks.

torch is imported only when :func:`torch_activation_grams` runs, so ``import ssc_jax`` never
needs it. The selected layers (:func:`ssc_jax.nets.torch_layers.select_layers`) are copied
out of each forward pass as float32 (b, D) on the host, token outputs pooled
(:mod:`ssc_jax.nets.tokens`), by :mod:`ssc_jax.nets.torch_passes`. They are kept, for one
group of layers at a time, as float32 NumPy arrays (n, D); each group's Grams are then formed
by :func:`ssc_jax.nets.external.layer_gram` (JAX, full float32 precision). The first pass
also keeps the model's logits.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.core.checks import check_positive
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.nets.external import layer_gram
from ssc_jax.nets.layer_choice import warn_if_one_layer
from ssc_jax.nets.tokens import DEFAULT_TOKENS
from ssc_jax.nets.torch_layers import Layers
from ssc_jax.nets.torch_passes import Passes, Survey, full_pass, survey

SOURCE = "torch model"


class TorchGrams(NamedTuple):
    """Grams of a torch model's layers on n inputs.

    ``names`` are module names (as in ``model.named_modules()``, or ``hidden_states.i``) in
    forward order; ``grams`` is float32 (L, n, n); ``labels`` (n,) int64 are those the
    batches carried (else None); ``logits`` (n, K) float32 are the model's class outputs of
    the same forward pass and ``predictions`` (n,) int64 their argmax (None when the model's
    output is not (b, K)); ``tokens`` is the pooling of token outputs (None when no selected
    output had a token axis) and ``selection`` one line saying which layers were selected and
    why.
    """

    names: list[str]
    grams: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray | None
    logits: np.ndarray | None = None
    tokens: str | None = None
    selection: str = ""


def _groups(dims: dict[str, int], n: int, budget: int) -> list[list[str]]:
    """Layers split into groups whose float32 activations (n, D) fit ``budget`` together;
    a layer too large alone is a group of its own (kept on disk)."""
    groups: list[list[str]] = [[]]
    used = 0
    for name, d in dims.items():
        size = 4 * n * d
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def torch_activation_grams(
    model,
    inputs,
    *,
    layers: Layers = None,
    tokens: str = DEFAULT_TOKENS,
    batch_size: int = 256,
    device="cpu",
    memory_budget_bytes: int | None = None,
    spill_dir: str | Path | None = None,
) -> TorchGrams:
    """Per-layer Gram matrices G_l = A_l A_l^T of a ``torch.nn.Module`` on n inputs.

    Args:
      model: the network; run in eval mode under ``torch.no_grad()`` on ``device``, then
        returned to its training modes and device. Hooks are always removed.
      inputs: an array or tensor (n, C, H, W) (or any (n, ...) the model takes), or a mapping
        of such tensors (a tokenizer's output, passed as ``model(**inputs)``), batched by
        ``batch_size``; or a ``torch.utils.data.DataLoader`` yielding tensors, (inputs,
        labels, ...) tuples or mappings of model inputs, whose ``labels`` are taken out and
        whose ``attention_mask`` is the padding mask. A DataLoader is read once to count the
        inputs, then once per group of layers, so it must give the same batches each time:
        ``shuffle=False``, no random augmentation (checked through the labels and the sum
        of each batch).
      layers: module names (as in ``model.named_modules()``) and/or module types, e.g.
        ``[nn.Conv2d, nn.Linear]``; ``"blocks"``, the model's repeated blocks (transformer
        layers, ResNet blocks); ``"hidden_states"``, those a Hugging Face model returns with
        ``output_hidden_states=True``. Default: every ``nn.Conv2d``, or the repeated blocks
        when the model has fewer than two. Taken in forward order. A one-layer selection
        warns.
      tokens: how a token output (b, T, D) becomes one vector per input: "mean" (default),
        "cls", "last" or "flatten" (:mod:`ssc_jax.nets.tokens`); "mean" and "last" honour
        the batches' ``attention_mask``. Other outputs are flattened.
      memory_budget_bytes: bytes of activations held at once, besides the model and the
        (L, n, n) result (default: :func:`ssc_jax.core.memory.default_memory_budget`). Half
        of it holds a group of layers' float32 activations (n, D), the other half the blocks
        their Grams are formed from. A layer too large for the first half on its own is
        kept in a temporary file under ``spill_dir`` instead.

    Raises:
      ValueError: in one line, when the selection matches nothing (naming the closest module
        paths), a DataLoader shuffles or changes between passes, or a module's output is not
        a tensor or runs twice per forward pass.
    """
    check_positive("batch_size", batch_size)
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    with evaluating(model, device) as torch:
        passes = Passes.of(
            model, inputs, layers=layers, tokens=tokens, batch_size=batch_size, device=device
        )
        with torch.no_grad():
            return _capture(passes, budget=budget, spill_dir=spill_dir)


@contextlib.contextmanager
def evaluating(model, device) -> Iterator:
    """``model`` in eval mode on ``device``; yields the torch module. On exit the model goes
    back to its device and each module to its training mode."""
    try:
        import torch.nn
    except ImportError:
        raise ImportError("the torch door needs PyTorch: pip install torch") from None
    modes = {module: module.training for module in model.modules()}
    before = next(itertools.chain(model.parameters(), model.buffers()), None)
    try:
        model.eval()
        model.to(device)
        yield torch
    finally:
        if before is not None:
            model.to(before.device)
        for module, mode in modes.items():
            module.training = mode


def surveyed(passes: Passes) -> Survey:
    """The first pass's :class:`Survey`, with a warning when it finds one layer."""
    found = survey(passes)
    warn_if_one_layer(list(found.dims))
    return found


def _capture(passes: Passes, *, budget: int, spill_dir) -> TorchGrams:
    """Grams of the selected layers, one group of layers (one pass over the inputs) at a time."""
    found = surveyed(passes)
    n, dims = found.n, found.dims
    names = list(dims)
    modules = {module: name for module, name in passes.selection.modules.items() if name in dims}
    grams = np.empty((len(names), n, n), np.float32)
    logits = None
    half = max(1, int(budget) // 2)
    with tempfile.TemporaryDirectory(dir=spill_dir, prefix="ssc-jax-torch-") as folder:
        spill = Path(folder) / "layer.f32"
        for index, group in enumerate(_groups(dims, n, half)):
            features = {
                name: np.memmap(spill, np.float32, "w+", shape=(n, dims[name]))
                if 4 * n * dims[name] > half
                else np.empty((n, dims[name]), np.float32)
                for name in group
            }

            def write(start: int, batch: dict, features=features) -> None:
                for name, values in batch.items():
                    if name in features:
                        features[name][start : start + len(values)] = values

            wanted = {module: name for module, name in modules.items() if name in features}
            kept = full_pass(passes, wanted, found, write, number=index + 2)
            logits = kept if index == 0 else logits
            for name in group:
                grams[names.index(name)] = layer_gram(
                    features[name], memory_budget_bytes=half, name=name, source=SOURCE
                )
            del features  # close a memory map before its file is reused
    return TorchGrams(
        names=names,
        grams=grams,
        labels=found.labels,
        predictions=None if logits is None else logits.argmax(axis=1).astype(np.int64),
        logits=logits,
        tokens=passes.tokens if passes.token_layers else None,
        selection=passes.selection.description,
    )
