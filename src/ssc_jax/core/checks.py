"""Input validation shared by the public functions.

Every check raises ``ValueError`` with a message that names the argument, so that a
researcher sees *which* input is wrong. Checks run on concrete (non-traced) values only;
under ``jax.jit`` they are skipped, because a traced array has no values to inspect.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
    """True when ``x`` is an abstract JAX tracer (inside jit/vmap), so values are unknown."""
    return isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    return jnp.isfinite(x).all()


def check_finite(name: str, x) -> None:
    """Raise if ``x`` holds NaN or Inf. A no-op on traced values."""
    if is_traced(x):
        return
    finite = _all_finite(x) if isinstance(x, jax.Array) else np.isfinite(x).all()
    if not bool(finite):
        raise ValueError(f"{name} contains NaN or Inf; clean or impute the input first")


def check_ndim(name: str, x, ndim: int | tuple[int, ...], what: str) -> None:
    """Raise unless ``x.ndim`` is ``ndim`` (or one of them). ``what`` describes the shape."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(x) not in allowed:
        raise ValueError(f"{name} must be {what}; got an array of shape {np.shape(x)}")


def check_square(name: str, x) -> None:
    """Raise unless the last two axes of ``x`` are square (an n x n matrix or a stack)."""
    shape = np.shape(x)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes (..., n, n); got {shape}")


def check_same_n(names: tuple[str, str], a_n: int, b_n: int) -> None:
    """Raise unless two inputs describe the same number of samples."""
    if a_n != b_n:
        raise ValueError(
            f"{names[0]} and {names[1]} must describe the same samples; got n={a_n} and n={b_n}"
        )


def check_min_samples(name: str, n: int, minimum: int, why: str = "") -> None:
    """Raise if fewer than ``minimum`` samples are given."""
    if n < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} needs at least {minimum} samples{reason}; got {n}")


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def check_solver_dtype(name: str, x) -> None:
    """Raise if ``x`` is a floating array narrower than float32 (float16, bfloat16), which
    the solver's factorisations do not support; integer and bool inputs are cast to float32."""
    dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        raise ValueError(
            f"{name} has dtype {dtype.name}, which the solver does not support; pass float32 or "
            f"float64, e.g. {name}.astype(numpy.float32)"
        )
