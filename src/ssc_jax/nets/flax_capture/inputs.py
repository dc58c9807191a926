"""The inputs of a Flax model as the capture feeds it: one array (n, ...) passed as
``model(x)``, or a mapping of arrays (n, ...) passed as keyword arguments,
``model(**inputs)`` (``{"input_ids": ..., "attention_mask": ...}`` for a text model), in
batches; and the padding mask (n, T) that pools token activations.

Floating inputs are held as float32; integer and boolean ones (token ids, masks) keep their
dtype, as an embedding looks them up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.core.checks import check_finite, check_ndim, check_positive

Inputs = np.ndarray | dict[str, np.ndarray]
MASK_KEY = "attention_mask"


def _array(name: str, value) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim < 2 and name == "images":
        raise ValueError(f"images must be a batch of inputs (n, ...); got shape {value.shape}")
    if value.ndim < 1:
        raise ValueError(f"{name} must be a batch (n, ...); got a scalar")
    if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        value = value.astype(np.float32)
        check_finite(name, value)
    if len(value) == 0:
        raise ValueError(f"{name} is empty; pass at least one input")
    return value


def checked_inputs(inputs, *, images_only: bool = False) -> Inputs:
    """``inputs`` as arrays, checked: a batch (n, ...) or a mapping of them, all of n inputs;
    with ``images_only``, images (n, H, W, C)."""
    if isinstance(inputs, Mapping):
        if images_only:
            raise ValueError("the zoo's models take images (n, H, W, C), not a mapping")
        if not inputs:
            raise ValueError("inputs is an empty mapping; pass the model's keyword inputs")
        arrays = {str(key): _array(f"inputs[{key!r}]", value) for key, value in inputs.items()}
        sizes = {key: len(value) for key, value in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the inputs' arrays hold different numbers of inputs: {sizes}")
        return arrays
    if images_only:
        check_ndim("images", inputs, 4, "a batch of images (n, H, W, C)")
    return _array("images", inputs)


def count(inputs: Inputs) -> int:
    """The number of inputs n."""
    return len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)


def spec(inputs: Inputs) -> Any:
    """Shapes and dtypes of one input (batch of 1), a pytree like ``inputs``, for tracing."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), inputs)


def spec_key(shapes: Any) -> tuple:
    """A hashable key of a :func:`spec`."""
    leaves, tree = jax.tree.flatten(shapes)
    return (str(tree), *((leaf.shape, str(leaf.dtype)) for leaf in leaves))


def call(function: Callable, x: jax.Array | Mapping[str, jax.Array], **kwargs):
    """``function(**x, **kwargs)`` for a mapping of inputs, else ``function(x, **kwargs)``."""
    return function(**x, **kwargs) if isinstance(x, Mapping) else function(x, **kwargs)


def padding_mask(inputs: Inputs, mask) -> np.ndarray | None:
    """The padding mask (n, T): ``mask`` when given, else the inputs' ``attention_mask``;
    None when neither is (every token is real)."""
    if mask is None and isinstance(inputs, dict):
        mask = inputs.get(MASK_KEY)
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim != 2 or len(mask) != count(inputs):
        raise ValueError(
            f"the padding mask must be (n, T) with n = {count(inputs)}; got {mask.shape}"
        )
    return mask


def batches(forward: Callable, inputs: Inputs, batch_size: int) -> Iterator[tuple[int, Any]]:
    """Yield (start, output) of ``forward(batch)`` over ``inputs`` in batches; the output is
    a pytree of (b, ...) arrays. The last batch is padded (zeros) to ``batch_size`` so that
    one compiled function serves all."""
    check_positive("batch_size", batch_size)
    n = count(inputs)
    size = min(int(batch_size), n)
    for start in range(0, n, size):
        batch = jax.tree.map(lambda a, start=start: a[start : start + size], inputs)
        real = count(batch)
        if real < size:
            batch = jax.tree.map(
                lambda a, real=real: np.concatenate(
                    [a, np.zeros((size - real, *a.shape[1:]), a.dtype)]
                ),
                batch,
            )
        output = forward(jax.tree.map(jnp.asarray, batch))
        yield start, jax.tree.map(lambda value, real=real: value[:real], output)
