"""Per-layer Gram matrices of a PyTorch model, captured with forward hooks.

torch is imported only when :func:`torch_activation_grams` runs, so ``import ssc_jax`` never
needs it. The chosen modules' outputs are copied by forward hooks at the moment each module
returns, flattened to (b, D) float32 on the host, so an in-place operation later in the
forward pass (``ReLU(inplace=True)``, ``out += identity``) cannot change what was captured.
They are kept, for one group of layers at a time, as float32 NumPy arrays (n, D); each
group's Grams are then formed by :func:`ssc_jax.nets.external.layer_gram` (JAX, full float32
precision).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.core.checks import check_positive
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.nets.external import layer_gram

SOURCE = "torch model"


class TorchGrams(NamedTuple):
    """Grams of a torch model's layers on n inputs.

    ``names`` are module names (as in ``model.named_modules()``) in forward order; ``grams``
    is float32 (L, n, n); ``labels`` (n,) int64 are those a DataLoader yielded (else None);
    ``predictions`` (n,) int64 are the argmax of the model's output when it is (b, classes).
    """

    names: list[str]
    grams: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray | None


class _Batch(NamedTuple):
    inputs: object  # torch.Tensor (b, ...), on the device
    labels: object  # torch.Tensor (b,) or None


def _module_list(model) -> str:
    return ", ".join(f"{name} ({type(m).__name__})" for name, m in model.named_modules() if name)


def _candidates(model, layers) -> dict:
    """{module: name} of the modules ``layers`` selects (names and/or nn.Module types)."""
    from torch import nn

    if layers is None:
        layers = [nn.Conv2d]
    elif isinstance(layers, str | type):
        layers = [layers]
    names = {entry for entry in layers if isinstance(entry, str)}
    kinds = tuple(entry for entry in layers if isinstance(entry, type))
    if len(names) + len(kinds) != len(layers):
        raise ValueError(f"layers must list module names or nn.Module types; got {layers!r}")
    modules = {}
    for name, module in model.named_modules():
        if name and module not in modules and (name in names or isinstance(module, kinds)):
            modules[module] = name
    unknown = sorted(names - set(modules.values()))
    if unknown or not modules:
        what = (
            f"unknown module names {unknown}" if unknown else f"layers={layers!r} selects nothing"
        )
        raise ValueError(f"{what}; the model's modules are: {_module_list(model)}")
    return modules


@contextlib.contextmanager
def _hooked(modules: dict) -> Iterator[dict]:
    """Forward hooks on ``modules`` {module: name}; yields {name: (b, D) float32 array} of the
    last forward pass, in the order the modules ran, each a copy taken as the module returned
    (the tensor itself may be overwritten in place later in the pass). The hooks are removed
    on exit."""
    import torch

    captured: dict = {}

    def record(module, args, output):
        name = modules[module]
        if name in captured:
            raise ValueError(f"module {name!r} ran twice in one forward pass; select another")
        if not isinstance(output, torch.Tensor):
            kind = type(output).__name__
            raise ValueError(f"module {name!r} returns a {kind}, not a tensor; select another")
        flat = output.detach().reshape(len(output), -1)
        captured[name] = flat.to("cpu", torch.float32, copy=True).numpy()

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _split(item) -> tuple:
    """(inputs, labels or None) of one DataLoader batch."""
    import torch

    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, list | tuple) and item and isinstance(item[0], torch.Tensor):
        return item[0], item[1] if len(item) > 1 else None
    raise ValueError(
        f"the DataLoader must yield tensors or (inputs, labels) tuples; got {type(item).__name__}"
    )


def _batches(inputs, batch_size: int, device) -> Iterator[_Batch]:
    import torch

    if isinstance(inputs, torch.utils.data.DataLoader):
        for item in inputs:
            x, y = _split(item)
            yield _Batch(inputs=x.to(device), labels=y)
        return
    for start in range(0, len(inputs), batch_size):
        yield _Batch(inputs=inputs[start : start + batch_size].to(device), labels=None)


def _fingerprint(batch: _Batch) -> tuple:
    """What must be equal when a DataLoader yields the same batch again."""
    labels = None if batch.labels is None else batch.labels.cpu().tolist()
    return len(batch.inputs), float(batch.inputs.double().sum()), labels


def _as_inputs(inputs):
    """A DataLoader as is (checked not to shuffle), else a float tensor (n, ...)."""
    import torch

    if isinstance(inputs, torch.utils.data.DataLoader):
        if isinstance(inputs.sampler, torch.utils.data.RandomSampler):
            raise ValueError("the DataLoader shuffles; pass shuffle=False (it is read per group)")
        return inputs
    tensor = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    if tensor.ndim == 0 or len(tensor) == 0:
        raise ValueError(f"inputs must be a non-empty batch (n, ...); got shape {tensor.shape}")
    return tensor


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
    layers: Sequence[str | type] | None = None,
    batch_size: int = 256,
    device="cpu",
    memory_budget_bytes: int | None = None,
    spill_dir: str | Path | None = None,
) -> TorchGrams:
    """Per-layer Gram matrices G_l = A_l A_l^T of a ``torch.nn.Module`` on n inputs.

    Args:
      model: the network; run in eval mode under ``torch.no_grad()`` on ``device``, then
        returned to its training modes and device. Hooks are always removed.
      inputs: an array or tensor (n, C, H, W) (or any (n, ...) the model takes), batched by
        ``batch_size``; or a ``torch.utils.data.DataLoader`` yielding inputs or (inputs,
        labels, ...) tuples. A DataLoader is read once to count the inputs, then once per
        group of layers, so it must give the same batches each time: ``shuffle=False``, no
        random augmentation (checked through the labels and the sum of each batch).
      layers: module names (as in ``model.named_modules()``) and/or module types, e.g.
        ``[nn.Conv2d, nn.Linear]``; default every ``nn.Conv2d``. Named in forward order, the
        order their hooks fire on the first batch.
      memory_budget_bytes: bytes of activations held at once, besides the model and the
        (L, n, n) result (default: :func:`ssc_jax.core.memory.default_memory_budget`). Half
        of it holds a group of layers' float32 activations (n, D), the other half the blocks
        their Grams are formed from. A layer too large for the first half on its own is
        kept in a temporary file under ``spill_dir`` instead.

    Raises:
      ValueError: when the selection captures nothing (listing the model's modules and their
        types), a DataLoader shuffles or changes between passes, or a module's output is not
        a tensor or runs twice per forward pass.
    """
    try:
        import torch.nn
    except ImportError:
        raise ImportError("torch_activation_grams needs PyTorch: pip install torch") from None

    check_positive("batch_size", batch_size)
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    check_positive("memory_budget_bytes", budget)
    inputs = _as_inputs(inputs)
    candidates = _candidates(model, layers)
    modes = {module: module.training for module in model.modules()}
    before = next(itertools.chain(model.parameters(), model.buffers()), None)
    try:
        model.eval()
        model.to(device)
        with torch.no_grad():
            passes = _Passes(model=model, inputs=inputs, batch_size=int(batch_size), device=device)
            return _capture(passes, candidates=candidates, budget=budget, spill_dir=spill_dir)
    finally:
        if before is not None:
            model.to(before.device)
        for module, mode in modes.items():
            module.training = mode


class _Passes(NamedTuple):
    """How to run the model over every input: the model, its inputs and their batching."""

    model: object
    inputs: object
    batch_size: int
    device: object

    def batches(self) -> Iterator[_Batch]:
        return _batches(self.inputs, self.batch_size, self.device)


class _Survey(NamedTuple):
    """What the first pass finds: the per-input output sizes D of the selected modules that
    ran, in forward order, the number of inputs, labels, and each batch's fingerprint."""

    dims: dict[str, int]
    n: int
    labels: np.ndarray | None
    fingerprints: list[tuple] | None


def _survey(passes: _Passes, candidates: dict) -> _Survey:
    """Run the model on the first batch with hooks on every candidate; read a DataLoader
    through (without running the model) to count its inputs and keep its labels."""
    import torch

    batches = passes.batches()
    first = next(batches, None)
    if first is None:
        raise ValueError("the DataLoader yielded no batches")
    with _hooked(candidates) as captured:
        passes.model(first.inputs)
        dims = {name: value.shape[1] for name, value in captured.items()}
    if not dims:
        modules = _module_list(passes.model)
        raise ValueError(f"no selected module ran in the forward pass; the modules are: {modules}")
    if not isinstance(passes.inputs, torch.utils.data.DataLoader):
        return _Survey(dims=dims, n=len(passes.inputs), labels=None, fingerprints=None)
    fingerprints = [_fingerprint(first), *(_fingerprint(batch) for batch in batches)]
    labels = None
    if all(ys is not None for _, _, ys in fingerprints):
        labels = np.asarray([y for _, _, ys in fingerprints for y in ys], dtype=np.int64)
    n = sum(size for size, _, _ in fingerprints)
    return _Survey(dims=dims, n=n, labels=labels, fingerprints=fingerprints)


def _group_pass(passes: _Passes, modules: dict, features: dict, survey: _Survey, *, number: int):
    """Run every input through the model once, writing the outputs of ``modules`` {module:
    name} into ``features`` {name: (n, D)}; returns the model's predictions (n,) or None."""
    import torch

    predictions = []
    start = 0
    with _hooked(modules) as captured:
        for count, batch in enumerate(passes.batches()):
            expected = survey.fingerprints
            if expected is not None and (
                count >= len(expected) or _fingerprint(batch) != expected[count]
            ):
                raise ValueError(
                    f"the DataLoader gave a different batch {count} on pass {number}; it "
                    "must be deterministic (shuffle=False, no random augmentation)"
                )
            captured.clear()
            output = passes.model(batch.inputs)
            size = len(batch.inputs)
            for name, value in captured.items():
                features[name][start : start + size] = value
            if isinstance(output, torch.Tensor) and output.ndim == 2 and len(output) == size:
                predictions.append(output.argmax(dim=1).cpu().numpy())
            start += size
    if start != survey.n:
        raise ValueError(f"the DataLoader gave {start} inputs on pass {number}, not {survey.n}")
    return np.concatenate(predictions).astype(np.int64) if len(predictions) == count + 1 else None


def _capture(passes: _Passes, *, candidates: dict, budget: int, spill_dir) -> TorchGrams:
    """Grams of the selected layers, one group of layers (one pass over the inputs) at a time."""
    survey = _survey(passes, candidates)
    n = survey.n
    dims = survey.dims
    names = list(dims)
    modules = {module: name for module, name in candidates.items() if name in dims}
    grams = np.empty((len(names), n, n), np.float32)
    predictions = None
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
            wanted = {module: name for module, name in modules.items() if name in features}
            predicted = _group_pass(passes, wanted, features, survey, number=index + 2)
            predictions = predicted if index == 0 else predictions
            for name in group:
                grams[names.index(name)] = layer_gram(
                    features[name], memory_budget_bytes=half, name=name, source=SOURCE
                )
            del features  # close a memory map before its file is reused
    return TorchGrams(names=names, grams=grams, labels=survey.labels, predictions=predictions)
