"""Similarity measures between layers, by name: the paper's SSC-CKA and linear CKA, and any
that a user registers.

A measure compares two layers through their inputs on the same n samples: their SSC affinity
graphs (``on="graphs"``, ``scipy.sparse`` (n, n)) or their Grams (``on="grams"``, dense
(n, n); a Gram is what a layer's activations give a linear-kernel measure). Every command
computes every selected measure for the layers, epochs or networks it compares, and writes,
draws and tabulates each under its name.

>>> import numpy as np
>>> from ssc_jax.pipeline.analysis.measures import register_measure
>>> def gram_correlation(x, y):
...     return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])
>>> register_measure("gram_correlation", gram_correlation, on="grams")
Measure(name='gram_correlation', title='gram_correlation', on='grams')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ssc_jax.similarity.cka import cka
from ssc_jax.similarity.streamed import streamed_cka_matrix

INPUTS = ("graphs", "grams")
PAPER_MEASURES = ("ssc_cka", "linear_cka")
# Keys of metrics.json that a measure's own keys would collide with.
RESERVED = frozenset(
    {
        "command",
        "run",
        "runs",
        "cross",
        "epoch",
        "epochs",
        "n",
        "data",
        "split",
        "class_names",
        "layers",
        "modularity",
        "findings",
        "settings",
        "version",
        "heatmaps",
        "taus",
    }
)

PairFunction = Callable[[object, object], float]


class Measure(NamedTuple):
    """A named similarity of two layers.

    ``matrix(xs, ys)`` gives the (L1, L2) values between the layers' inputs ``xs`` and ``ys``
    (``ys`` None: ``xs`` against itself); ``paired(xs, ys)`` the (L,) values of the layers
    that correspond (a layer at two epochs or two taus)."""

    name: str
    title: str
    on: str
    matrix: Callable[[Sequence, Sequence | None], np.ndarray]
    paired: Callable[[Sequence, Sequence], np.ndarray]

    def __repr__(self) -> str:
        return f"Measure(name={self.name!r}, title={self.title!r}, on={self.on!r})"


def _pairwise_matrix(fn: PairFunction) -> Callable[[Sequence, Sequence | None], np.ndarray]:
    def matrix(xs: Sequence, ys: Sequence | None = None) -> np.ndarray:
        ys = xs if ys is None else ys
        return np.asarray([[float(fn(x, y)) for y in ys] for x in xs], np.float64)

    return matrix


def _pairwise_paired(fn: PairFunction) -> Callable[[Sequence, Sequence], np.ndarray]:
    def paired(xs: Sequence, ys: Sequence) -> np.ndarray:
        return np.asarray([float(fn(x, y)) for x, y in zip(xs, ys, strict=True)], np.float64)

    return paired


def _streamed_diagonal(xs: Sequence, ys: Sequence) -> np.ndarray:
    return np.diagonal(streamed_cka_matrix(xs, ys))


_REGISTRY: dict[str, Measure] = {
    "ssc_cka": Measure("ssc_cka", "SSC-CKA", "graphs", streamed_cka_matrix, _streamed_diagonal),
    "linear_cka": Measure(
        "linear_cka", "linear CKA", "grams", streamed_cka_matrix, _pairwise_paired(cka)
    ),
}


def register_measure(
    name: str, fn: PairFunction, *, on: str = "graphs", title: str | None = None
) -> Measure:
    """Register ``fn(x, y) -> float``, a similarity of two layers' inputs on the same n
    samples, under ``name``.

    Args:
      name: its key in ``metrics.json`` and in the results' ``similarity`` mappings; an
        identifier, neither one of the paper's two measures nor another ``metrics.json`` key.
      fn: the similarity of one pair of layers. With ``on="graphs"`` it receives their SSC
        affinity graphs ``|C| + |C|^T`` (``scipy.sparse`` (n, n)), with ``on="grams"`` their
        Grams (dense (n, n)).
      on: which inputs ``fn`` takes.
      title: its name in the figures and the report (default ``name``).

    Select it with ``measures=`` in the Python API or ``--measures`` on the command line.
    Registering a name again replaces the earlier measure.

    Raises:
      ValueError: for a name that is not an identifier or is taken, an unknown ``on``, or an
        ``fn`` that is not callable.
    """
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"a measure's name must be an identifier; got {name!r}")
    if name in PAPER_MEASURES or name in RESERVED:
        raise ValueError(f"the measure name {name!r} is taken; choose another")
    if on not in INPUTS:
        raise ValueError(f"on must be one of {INPUTS}; got {on!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a function of two layers' {on}; got {type(fn).__name__}")
    measure = Measure(name, title or name, on, _pairwise_matrix(fn), _pairwise_paired(fn))
    _REGISTRY[name] = measure
    return measure


def registered_measures() -> list[str]:
    """The name of every measure, the paper's two first."""
    return list(_REGISTRY)


def select_measures(names: Sequence[str] | None = None) -> tuple[Measure, ...]:
    """The measures ``names`` selects, in that order; default the paper's two.

    Raises:
      ValueError: for a name no measure is registered under, or an empty selection.
    """
    names = PAPER_MEASURES if names is None else tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in _REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown measure(s) {', '.join(unknown)}; registered: {', '.join(_REGISTRY)} "
            "(ssc_jax.register_measure adds one)"
        )
    if not names:
        raise ValueError("select at least one measure")
    return tuple(_REGISTRY[name] for name in names)


def title_of(name: str) -> str:
    """The title a measure is drawn and tabulated under."""
    return _REGISTRY[name].title if name in _REGISTRY else name


def layer_similarity(
    measures: Sequence[Measure], graphs: Sequence, grams: Sequence
) -> dict[str, np.ndarray]:
    """{name: (L, L)} of each measure between every pair of one network's L layers, given
    their affinity graphs and Grams."""
    inputs = {"graphs": graphs, "grams": grams}
    return {m.name: m.matrix(inputs[m.on], None) for m in measures}


def cross_similarity_matrices(
    measures: Sequence[Measure], a: Mapping[str, Sequence], b: Mapping[str, Sequence]
) -> dict[str, np.ndarray]:
    """{name: (L_a, L_b)} of each measure between the layers of two networks; ``a`` and
    ``b`` map "graphs" and "grams" to each network's layer inputs."""
    return {m.name: m.matrix(a[m.on], b[m.on]) for m in measures}


def paired_similarity(
    measures: Sequence[Measure], a: Mapping[str, Sequence], b: Mapping[str, Sequence]
) -> dict[str, np.ndarray]:
    """{name: (L,)} of each measure between corresponding layers of two states of one network
    (two epochs, two taus)."""
    return {m.name: m.paired(a[m.on], b[m.on]) for m in measures}
