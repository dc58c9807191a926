"""Passes of a torch model over its inputs, with the selected layers' outputs copied out.

Batches come as the libraries make them: a tensor (or array) of every input, batched here; a
mapping of such tensors (a tokenizer's output); or a ``DataLoader`` yielding tensors,
(inputs, labels, ...) tuples, or mappings of model inputs (``model(**inputs)``) whose
``labels`` are taken out and whose ``attention_mask`` pools the tokens. Each selected
module's output is copied by a forward hook the moment the module returns (so an in-place
operation later in the pass cannot change it), pooled to (b, D) by
:func:`ssc_jax.nets.tokens.pool_tokens`, on the host as float32. The same pass gives the
model's logits (a (b, K) output, or a Hugging Face output's ``.logits``).

torch is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import numpy as np

from ssc_jax.nets.tokens import check_tokens, pool_tokens
from ssc_jax.nets.torch_layers import Layers, Selection, select_layers

LABEL_KEYS = ("labels", "label")
MASK_KEY = "attention_mask"


class Batch(NamedTuple):
    """One batch: ``inputs`` a tensor (b, ...) or {name: tensor} on the device, ``labels``
    (b,) or None, ``mask`` the padding mask (b, T) as NumPy or None, ``size`` b."""

    inputs: object
    labels: object
    mask: np.ndarray | None
    size: int


def _batch(inputs, labels, device) -> Batch:
    import torch

    if isinstance(inputs, Mapping):
        inputs = dict(inputs)
        for key in LABEL_KEYS:
            found = inputs.pop(key, None)
            labels = found if labels is None else labels
        tensors = [value for value in inputs.values() if isinstance(value, torch.Tensor)]
        if not tensors:
            raise ValueError(f"the batch holds no tensor among {sorted(inputs)}")
        mask = inputs.get(MASK_KEY)
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        size = len(tensors[0])
        mask = None if mask is None else np.asarray(mask.cpu())
        return Batch(inputs=moved, labels=labels, mask=mask, size=size)
    if not isinstance(inputs, torch.Tensor):
        kind = type(inputs).__name__
        raise ValueError(f"a batch's inputs must be a tensor or a mapping of tensors; got {kind}")
    return Batch(inputs=inputs.to(device), labels=labels, mask=None, size=len(inputs))


def split(item, device) -> Batch:
    """The :class:`Batch` of one item a DataLoader yielded."""
    if isinstance(item, list | tuple) and item:
        return _batch(item[0], item[1] if len(item) > 1 else None, device)
    return _batch(item, None, device)


def as_inputs(inputs):
    """A DataLoader as is (checked not to shuffle), a mapping of tensors (n, ...), or a float
    tensor (n, ...)."""
    import torch

    if isinstance(inputs, torch.utils.data.DataLoader):
        if isinstance(inputs.sampler, torch.utils.data.RandomSampler):
            raise ValueError("the DataLoader shuffles; pass shuffle=False (it is read per group)")
        return inputs
    if isinstance(inputs, Mapping):
        return {
            k: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in inputs.items()
        }
    tensor = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    if tensor.ndim == 0 or len(tensor) == 0:
        raise ValueError(f"inputs must be a non-empty batch (n, ...); got shape {tensor.shape}")
    return tensor


def count(inputs) -> int:
    """The number of inputs of a tensor or a mapping of tensors."""
    if isinstance(inputs, Mapping):
        sizes = {len(value) for key, value in inputs.items() if hasattr(value, "__len__")}
        if len(sizes) != 1:
            raise ValueError(f"the inputs' tensors differ in length: {sorted(sizes)}")
        return sizes.pop()
    return len(inputs)


def _slice(inputs, start: int, stop: int):
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] if hasattr(v, "__len__") else v for k, v in inputs.items()}
    return inputs[start:stop]


def fingerprint(batch: Batch) -> tuple:
    """What must be equal when a DataLoader yields the same batch again."""
    tensors = batch.inputs.values() if isinstance(batch.inputs, dict) else [batch.inputs]
    total = sum(float(t.double().sum()) for t in tensors if hasattr(t, "double"))
    labels = None if batch.labels is None else np.asarray(batch.labels).tolist()
    return batch.size, total, labels


class Passes(NamedTuple):
    """How to run the model over every input: the model, its inputs (see :func:`as_inputs`),
    their batching, the selected layers and the token pooling; ``token_layers`` collects the
    names of the layers whose outputs had a token axis (b, T, D)."""

    model: object
    inputs: object
    batch_size: int
    device: object
    selection: Selection
    tokens: str
    token_layers: set

    @classmethod
    def of(cls, model, inputs, *, layers: Layers, tokens: str, batch_size: int, device) -> Passes:
        """The passes of ``model`` over ``inputs`` (see :func:`as_inputs`) that capture the
        ``layers`` :func:`select_layers` chooses, pooling token layers by ``tokens``."""
        return cls(
            model=model,
            inputs=as_inputs(inputs),
            batch_size=int(batch_size),
            device=device,
            selection=select_layers(model, layers),
            tokens=check_tokens(tokens),
            token_layers=set(),
        )

    def batches(self) -> Iterator[Batch]:
        import torch

        if isinstance(self.inputs, torch.utils.data.DataLoader):
            for item in self.inputs:
                yield split(item, self.device)
            return
        for start in range(0, count(self.inputs), self.batch_size):
            part = _slice(self.inputs, start, start + self.batch_size)
            yield _batch(part, None, self.device)

    def forward(self, batch: Batch, captured: dict) -> object:
        """Run the model on ``batch``; ``captured`` gets {layer name: (b, D) float32} of the
        selected layers, in the order they ran. Returns the model's output."""
        captured.clear()
        captured[MASK_KEY] = batch.mask
        extra = {"output_hidden_states": True} if self.selection.hidden_states else {}
        if isinstance(batch.inputs, dict):
            output = self.model(**batch.inputs, **extra)
        else:
            output = self.model(batch.inputs, **extra)
        del captured[MASK_KEY]
        if self.selection.hidden_states:
            for index, state in enumerate(_hidden_states(output)):
                name = f"hidden_states.{index}"
                captured[name] = self.pooled(name, state, batch.mask)
        return output

    def pooled(self, name: str, tensor, mask) -> np.ndarray:
        """Layer ``name``'s output ``tensor`` as float32 (b, D) on the host, a copy."""
        import torch

        if tensor.ndim == 3:
            self.token_layers.add(name)
        values = tensor.detach().to("cpu", torch.float32, copy=True).numpy()
        return pool_tokens(values, self.tokens, mask).astype(np.float32, copy=False)


def _hidden_states(output) -> list:
    states = getattr(output, "hidden_states", None)
    if states is None:
        raise ValueError(
            "layers='hidden_states' needs a model that returns them (a Hugging Face model "
            "called with output_hidden_states=True); this one returned none"
        )
    return list(states)


def output_tensor(output):
    """The tensor a module returned: itself, the first of a tuple, or a Hugging Face
    output's ``last_hidden_state``; None when there is none."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    state = getattr(output, "last_hidden_state", None)
    return state if isinstance(state, torch.Tensor) else None


def logits_of(output, size: int) -> np.ndarray | None:
    """The model's class logits (b, K) float32: a (b, K) output, a Hugging Face output's
    ``.logits`` or the first of a tuple, when it is (b, K); else None."""
    import torch

    found = getattr(output, "logits", None)
    if found is None and isinstance(output, list | tuple) and output:
        found = output[0]
    found = output if isinstance(output, torch.Tensor) else found
    if isinstance(found, torch.Tensor) and found.ndim == 2 and len(found) == size:
        return found.detach().to("cpu", torch.float32).numpy()
    return None


@contextlib.contextmanager
def hooked(passes: Passes, modules: dict) -> Iterator[dict]:
    """Forward hooks on ``modules`` {module: name}; yields the dict that
    :meth:`Passes.forward` fills. The hooks are removed on exit."""
    captured: dict = {}

    def record(module, args, output):
        name = modules[module]
        if name in captured:
            raise ValueError(f"module {name!r} ran twice in one forward pass; select another")
        tensor = output_tensor(output)
        if tensor is None:
            kind = type(output).__name__
            raise ValueError(f"module {name!r} returns a {kind}, not a tensor; select another")
        captured[name] = passes.pooled(name, tensor, captured.get(MASK_KEY))

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class Survey(NamedTuple):
    """What the first pass finds: the per-input output sizes D of the selected layers, in
    forward order, the number of inputs, labels, each batch's fingerprint (a DataLoader's,
    else None), and the number of classes K of the model's logits (None without logits)."""

    dims: dict[str, int]
    n: int
    labels: np.ndarray | None
    fingerprints: list[tuple] | None
    classes: int | None


def survey(passes: Passes) -> Survey:
    """Run the model on the first batch; read a DataLoader through (without running the
    model) to count its inputs and keep its labels."""
    import torch

    batches = passes.batches()
    first = next(batches, None)
    if first is None:
        raise ValueError("the DataLoader yielded no batches")
    with hooked(passes, passes.selection.modules) as captured:
        logits = logits_of(passes.forward(first, captured), first.size)
        dims = {name: value.shape[1] for name, value in captured.items()}
    classes = None if logits is None else logits.shape[1]
    if not dims:
        raise ValueError(
            f"no selected module ran in the forward pass ({passes.selection.description})"
        )
    if not isinstance(passes.inputs, torch.utils.data.DataLoader):
        given = passes.inputs if isinstance(passes.inputs, Mapping) else {}
        labels = next((given[key] for key in LABEL_KEYS if key in given), None)
        labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        n = count(passes.inputs)
        return Survey(dims=dims, n=n, labels=labels, fingerprints=None, classes=classes)
    fingerprints = [fingerprint(first), *(fingerprint(batch) for batch in batches)]
    labels = None
    if all(ys is not None for _, _, ys in fingerprints):
        labels = np.asarray([y for _, _, ys in fingerprints for y in ys], dtype=np.int64)
    n = sum(size for size, _, _ in fingerprints)
    return Survey(dims=dims, n=n, labels=labels, fingerprints=fingerprints, classes=classes)


def full_pass(
    passes: Passes,
    modules: dict,
    found: Survey,
    write: Callable[[int, dict], None],
    *,
    number: int,
) -> np.ndarray | None:
    """Run every input through the model once, calling ``write(start, {name: (b, D)})`` for
    each batch with the outputs of ``modules`` {module: name} (and the hidden states when
    selected). Returns the model's logits (n, K) float32, or None when it has none."""
    logits = []
    start = 0
    with hooked(passes, modules) as captured:
        for index, batch in enumerate(passes.batches()):
            expected = found.fingerprints
            if expected is not None and (
                index >= len(expected) or fingerprint(batch) != expected[index]
            ):
                raise ValueError(
                    f"the DataLoader gave a different batch {index} on pass {number}; it "
                    "must be deterministic (shuffle=False, no random augmentation)"
                )
            output = passes.forward(batch, captured)
            write(start, {name: captured[name] for name in captured if name in found.dims})
            logits.append(logits_of(output, batch.size))
            start += batch.size
    if start != found.n:
        raise ValueError(f"the DataLoader gave {start} inputs on pass {number}, not {found.n}")
    if not logits or any(part is None for part in logits):
        return None
    return np.concatenate(logits)
