"""Similarity measures between layers, by name: the paper's SSC-CKA and linear CKA, the
unbiased linear CKA, the measures peers report (``mutual_knn``, ``rsa``, ``procrustes``), and
any that a user registers.

A measure compares two layers through their inputs on the same n samples: their SSC affinity
graphs (``on="graphs"``, ``scipy.sparse`` (n, n)), their Grams (``on="grams"``, dense
(n, n); a Gram is what a layer's activations give a linear-kernel measure), or the Grams of
their activations with each input's mean feature subtracted (``on="centred_grams"``, dense
float64 (n, n), built a layer at a time from the Grams, each input's feature sum and the
layer's feature count). Every command computes every selected measure for the layers, epochs
or networks it compares, and writes, draws and tabulates each under its name.

>>> import numpy as np
>>> from ssc_jax.pipeline.analysis.measures import register_measure
>>> def gram_correlation(x, y):
...     return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])
>>> register_measure("gram_correlation", gram_correlation, on="grams")
Measure(name='gram_correlation', title='gram_correlation', on='grams')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ssc_jax.similarity import peers
from ssc_jax.similarity.cka import cka
from ssc_jax.similarity.streamed import streamed_cka_matrix

INPUTS = ("graphs", "grams", "centred_grams")
PAPER_MEASURES = ("ssc_cka", "linear_cka")
# The neighbourhood size of the registered mutual_knn (platonic-rep's default).
MUTUAL_KNN_K = 10
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
    that correspond (a layer at two epochs or two taus). ``distance``: smaller values mean
    more alike (Procrustes), where the others are similarities."""

    name: str
    title: str
    on: str
    matrix: Callable[[Sequence, Sequence | None], np.ndarray]
    paired: Callable[[Sequence, Sequence], np.ndarray]
    distance: bool = False

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


def _prepared_matrix(
    prepare: Callable[[object], object], compare: Callable[[object, object], float]
) -> Callable[[Sequence, Sequence | None], np.ndarray]:
    """``matrix`` of a measure that splits into a per-layer ``prepare`` and a ``compare`` of
    two prepared layers: every layer of ``ys`` is prepared once and kept, those of ``xs``
    one at a time."""

    def matrix(xs: Sequence, ys: Sequence | None = None) -> np.ndarray:
        right = [prepare(y) for y in (xs if ys is None else ys)]
        left = right if ys is None else (prepare(x) for x in xs)
        return np.asarray([[compare(a, b) for b in right] for a in left], np.float64)

    return matrix


def _prepared_paired(
    prepare: Callable[[object], object], compare: Callable[[object, object], float]
) -> Callable[[Sequence, Sequence], np.ndarray]:
    def paired(xs: Sequence, ys: Sequence) -> np.ndarray:
        pairs = zip(xs, ys, strict=True)
        return np.asarray([compare(prepare(x), prepare(y)) for x, y in pairs], np.float64)

    return paired


def _prepared(name: str, title: str, on: str, prepare, compare, distance=False) -> Measure:
    return Measure(
        name,
        title,
        on,
        _prepared_matrix(prepare, compare),
        _prepared_paired(prepare, compare),
        distance,
    )


def _streamed_diagonal(xs: Sequence, ys: Sequence) -> np.ndarray:
    return np.diagonal(streamed_cka_matrix(xs, ys))


def _unbiased_cka(x, y) -> float:
    return float(cka(x, y, unbiased=True))


def _neighbours(gram) -> np.ndarray:
    return peers.cosine_neighbours(gram, MUTUAL_KNN_K)


_REGISTRY: dict[str, Measure] = {
    "ssc_cka": Measure("ssc_cka", "SSC-CKA", "graphs", streamed_cka_matrix, _streamed_diagonal),
    "linear_cka": Measure(
        "linear_cka", "linear CKA", "grams", streamed_cka_matrix, _pairwise_paired(cka)
    ),
    "linear_cka_unbiased": Measure(
        "linear_cka_unbiased",
        "unbiased linear CKA",
        "grams",
        _pairwise_matrix(_unbiased_cka),
        _pairwise_paired(_unbiased_cka),
    ),
    "mutual_knn": _prepared(
        "mutual_knn", "mutual kNN", "grams", _neighbours, peers.neighbour_overlap
    ),
    "rsa": _prepared("rsa", "RSA", "centred_grams", peers.rdm_ranks, peers.rank_correlation),
    "procrustes": _prepared(
        "procrustes",
        "Procrustes distance",
        "grams",
        peers.shape_factor,
        peers.shape_distance,
        distance=True,
    ),
}
BUILT_IN = frozenset(_REGISTRY)


def register_measure(
    name: str,
    fn: PairFunction,
    *,
    on: str = "graphs",
    title: str | None = None,
    distance: bool = False,
) -> Measure:
    """Register ``fn(x, y) -> float``, a similarity of two layers' inputs on the same n
    samples, under ``name``.

    Args:
      name: its key in ``metrics.json`` and in the results' ``similarity`` mappings; an
        identifier, neither one of the paper's two measures nor another ``metrics.json`` key.
      fn: the similarity of one pair of layers. With ``on="graphs"`` it receives their SSC
        affinity graphs ``|C| + |C|^T`` (``scipy.sparse`` (n, n)), with ``on="grams"`` their
        Grams (dense (n, n)), with ``on="centred_grams"`` the Grams of their activations
        with each input's mean feature subtracted (dense float64 (n, n)).
      on: which inputs ``fn`` takes.
      title: its name in the figures and the report (default ``name``).
      distance: smaller values of ``fn`` mean more alike.

    Select it with ``measures=`` in the Python API or ``--measures`` on the command line.
    Registering a name again replaces the earlier measure.

    Raises:
      ValueError: for a name that is not an identifier or is taken (by a built-in measure
        or a ``metrics.json`` key), an unknown ``on``, or an ``fn`` that is not callable.
    """
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"a measure's name must be an identifier; got {name!r}")
    if name in BUILT_IN or name in RESERVED:
        raise ValueError(f"the measure name {name!r} is taken; choose another")
    if on not in INPUTS:
        raise ValueError(f"on must be one of {INPUTS}; got {on!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a function of two layers' {on}; got {type(fn).__name__}")
    measure = Measure(
        name, title or name, on, _pairwise_matrix(fn), _pairwise_paired(fn), bool(distance)
    )
    _REGISTRY[name] = measure
    return measure


def registered_measures() -> list[str]:
    """The name of every measure, the built-in ones (the paper's two first), then the
    user's."""
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


def most_alike(name: str, values: np.ndarray) -> np.ndarray:
    """For each row of a measure's (L_a, L_b) ``values``, the column most alike: the
    largest similarity, or the smallest distance."""
    measure = _REGISTRY.get(name)
    values = np.asarray(values)
    return (
        values.argmin(axis=1) if measure is not None and measure.distance else values.argmax(axis=1)
    )


class RowMoments:
    """What the centred Grams need besides the Grams: each input's feature sum (L, n) and
    each layer's feature count (L,), computed by ``compute()`` on first use only (for
    a checkpoint, one more forward pass), so that commands without such a measure pay
    nothing."""

    def __init__(self, compute: Callable[[], tuple[np.ndarray, Sequence[int]]]):
        self._compute = compute

    @classmethod
    def given(cls, feature_sums, widths: Sequence[int]) -> RowMoments:
        """The moments of known feature sums (L, n) and feature counts (L,)."""
        return cls(lambda: (feature_sums, widths))

    @functools.cached_property
    def values(self) -> tuple[np.ndarray, list[int]]:
        """(feature sums float64 (L, n), feature counts [L])."""
        sums, widths = self._compute()
        return np.asarray(sums, np.float64), [int(w) for w in widths]

    def subset(self, indices: np.ndarray) -> RowMoments:
        """The moments of the inputs ``indices`` alone (a subsample's)."""
        return RowMoments(lambda: (self.values[0][:, indices], self.values[1]))


class RowCentredGrams(Sequence):
    """The L Grams of layers' activations with each input's mean feature subtracted, one
    float64 (n, n) built per access from the layer's Gram, its inputs' feature sums and its
    feature count (``ssc_jax.similarity.peers.row_centred_gram``)."""

    def __init__(self, grams: Sequence, feature_sums: Sequence, widths: Sequence[int]):
        if not len(grams) == len(feature_sums) == len(widths):
            raise ValueError(
                f"got {len(grams)} Grams, {len(feature_sums)} feature sums and "
                f"{len(widths)} widths; give one of each per layer"
            )
        self.grams, self.feature_sums, self.widths = grams, feature_sums, widths

    def __len__(self) -> int:
        return len(self.grams)

    def __getitem__(self, layer: int) -> np.ndarray:
        return peers.row_centred_gram(
            self.grams[layer], self.feature_sums[layer], int(self.widths[layer])
        )


def _layer_inputs(measure: Measure, inputs: Mapping) -> Sequence:
    """What ``measure`` compares, from ``inputs``: "graphs" and "grams", and for the
    centred Grams also "moments" (``RowMoments``)."""
    if measure.on != "centred_grams":
        return inputs[measure.on]
    if inputs.get("moments") is None:
        raise ValueError(
            f"the measure {measure.name} needs each input's feature sum and each layer's "
            "feature count, which Grams given without their activations do not hold"
        )
    return RowCentredGrams(inputs["grams"], *inputs["moments"].values)


def layer_similarity(
    measures: Sequence[Measure],
    graphs: Sequence,
    grams: Sequence,
    moments: RowMoments | None = None,
) -> dict[str, np.ndarray]:
    """{name: (L, L)} of each measure between every pair of one network's L layers, given
    their affinity graphs and Grams, and for measures of the centred Grams the layers'
    ``moments``."""
    inputs = {"graphs": graphs, "grams": grams, "moments": moments}
    return {m.name: m.matrix(_layer_inputs(m, inputs), None) for m in measures}


def cross_similarity_matrices(
    measures: Sequence[Measure], a: Mapping[str, Sequence], b: Mapping[str, Sequence]
) -> dict[str, np.ndarray]:
    """{name: (L_a, L_b)} of each measure between the layers of two networks; ``a`` and
    ``b`` map "graphs" and "grams" (and, for measures of the centred Grams, "moments", a
    ``RowMoments``) to each network's layer inputs."""
    return {m.name: m.matrix(_layer_inputs(m, a), _layer_inputs(m, b)) for m in measures}


def paired_similarity(
    measures: Sequence[Measure], a: Mapping[str, Sequence], b: Mapping[str, Sequence]
) -> dict[str, np.ndarray]:
    """{name: (L,)} of each measure between corresponding layers of two states of one network
    (two epochs, two taus); ``a`` and ``b`` as in `cross_similarity_matrices`."""
    return {m.name: m.paired(_layer_inputs(m, a), _layer_inputs(m, b)) for m in measures}
