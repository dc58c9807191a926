"""Token activations (b, T, D) pooled to one vector per input (b, D'), for any framework.

A transformer layer returns one vector per token; a similarity over inputs needs one vector
per input. :data:`DEFAULT_TOKENS` is ``"mean"``, the mean over the input's real tokens: it is
defined for every token model (encoders, decoders, ViTs with or without a class token), keeps
the layer's width D, does not tie the features to token positions, and with a padding mask
averages only the real tokens, so inputs of different lengths compare. The other choices:
``"cls"``, the first token (the class token of BERT and ViTs; meaningful only for models
trained with one); ``"last"``, the last real token (what a causal language model has read the
whole input into); ``"flatten"``, every token's vector side by side (b, T * D), position by
position, padding included.

Outputs that are already (b, D) have no token axis and are returned as they are; outputs of
four or more axes (convolution maps (b, C, H, W)) are flattened to (b, C * H * W). Three-axis
outputs are read as (b, T, D), the layout of transformers; a channels-first (b, C, L) output
(``Conv1d``) is not tokens, so pool it with ``"flatten"``.
"""

from __future__ import annotations

import numpy as np

TOKEN_POOLINGS = ("mean", "cls", "last", "flatten")
DEFAULT_TOKENS = "mean"


def check_tokens(tokens: str) -> str:
    """``tokens`` if it names a pooling, else a one-line ValueError."""
    if tokens not in TOKEN_POOLINGS:
        raise ValueError(f"tokens must be one of {', '.join(TOKEN_POOLINGS)}; got {tokens!r}")
    return tokens


def _real_tokens(mask, batch: int, length: int) -> np.ndarray:
    """The padding mask as bool (b, T), checked to fit and to keep a token in every row."""
    real = np.asarray(mask) != 0
    if real.shape != (batch, length):
        raise ValueError(
            f"the padding mask has shape {real.shape}, the tokens (b, T) = {(batch, length)}"
        )
    empty = np.flatnonzero(~real.any(axis=1))
    if empty.size:
        raise ValueError(f"the padding mask keeps no token of input {int(empty[0])} in the batch")
    return real


def pool_tokens(acts, tokens: str = DEFAULT_TOKENS, mask=None) -> np.ndarray:
    """One vector per input (b, D') of a layer's activations ``acts`` (b, T, D) or (b, D).

    Args:
      acts: (b, T, D) token activations, (b, D) vectors, or (b, C, H, W, ...) maps; any
        array NumPy can read (a JAX array, a torch tensor on the CPU).
      tokens: ``"mean"``, ``"cls"``, ``"last"`` or ``"flatten"`` (see the module's note).
      mask: the padding mask (b, T), nonzero for real tokens (Hugging Face's
        ``attention_mask``), or None when every token is real. "mean" averages the real tokens
        and "last" takes each input's last real token (right or left padding alike); "cls" and
        "flatten" do not read it.

    Returns:
      (b, D) for "mean", "cls" and "last", (b, T * D) for "flatten"; float32, or float64 for
      float64 activations; the mean accumulated in float64.
    """
    check_tokens(tokens)
    values = np.asarray(acts)
    if values.ndim < 2:
        raise ValueError(f"activations must be (b, T, D) or (b, D); got shape {values.shape}")
    wide_float = np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize >= 4
    dtype = values.dtype if wide_float else np.dtype(np.float32)
    if values.ndim != 3:
        return values.reshape(len(values), -1).astype(dtype, copy=False)
    batch, length, _ = values.shape
    if tokens == "flatten":
        return values.reshape(batch, -1).astype(dtype, copy=False)
    if tokens == "cls":
        return values[:, 0].astype(dtype)
    real = np.ones((batch, length), bool) if mask is None else _real_tokens(mask, batch, length)
    if tokens == "last":
        last = length - 1 - np.argmax(real[:, ::-1], axis=1)
        return values[np.arange(batch), last].astype(dtype)
    weights = real / real.sum(axis=1, keepdims=True)
    return np.einsum("btd,bt->bd", values.astype(np.float64), weights).astype(dtype)
