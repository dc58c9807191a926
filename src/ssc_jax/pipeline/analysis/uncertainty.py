"""Intervals for every number an analysis reports, by solving again on halves of its
inputs (``ssc_jax.graphs.resampling`` says what the interval is of, and why halves).

The resamples are the two halves of random splits of the N inputs. Each half, shared by
every network, epoch or tau the command reads (so cross-network and epoch-to-epoch measures
pair the same inputs), takes each layer's sub-Gram ``G[idx][:, idx]``, solves its SSC
again warm-started from the full solution restricted to the half, and recomputes every
statistic from the new graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ssc_jax.graphs.communities import affinity_labels, label_agreement
from ssc_jax.graphs.permutation import (
    DEFAULT_PERMUTATIONS,
    modularity_p,
    permutation_p,
    permutations,
    relabel,
)
from ssc_jax.graphs.resampling import DEFAULT_LEVEL, half_pairs, half_sample_interval
from ssc_jax.pipeline.analysis.config import SolverSettings
from ssc_jax.pipeline.analysis.layer_graphs import solve_layers
from ssc_jax.pipeline.analysis.measures import (
    Measure,
    RowMoments,
    cross_similarity_matrices,
    layer_similarity,
    paired_similarity,
)
from ssc_jax.pipeline.analysis.summary import layer_modularity

DEFAULT_RESAMPLES = 8
CI_SUFFIX = "_ci"
NO_INTERVALS: Mapping[str, np.ndarray] = MappingProxyType({})
"""A result's intervals when it has none."""
RISE = "modularity_rise"


def modularity_rise(modularity: np.ndarray) -> float:
    """Last layer's modularity minus the first's: "modularity grows with depth" as a number."""
    return float(modularity[-1]) - float(modularity[0])


@dataclass(frozen=True)
class Resampling:
    """How the intervals and p-values are computed.

    ``resamples`` subsamples, the two halves of ``resamples / 2`` random splits of the N
    inputs (0: no intervals), intervals at ``level``; ``permutations`` label permutations
    for ``modularity_p`` (0: none)."""

    resamples: int = field(
        default=DEFAULT_RESAMPLES,
        metadata={
            "help": "subsamples the intervals are estimated from, the two halves of each of "
            "resamples / 2 splits of the inputs (0: no intervals)"
        },
    )
    level: float = field(default=DEFAULT_LEVEL, metadata={"help": "level of the intervals"})
    seed: int = 0
    permutations: int = DEFAULT_PERMUTATIONS

    def __post_init__(self):
        if self.resamples < 0 or self.resamples % 2:
            raise ValueError(
                "resamples must be 0 (off) or an even number, the halves of resamples / 2 "
                f"splits; got {self.resamples}"
            )
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"the interval level must be in (0, 1); got {self.level}")
        if self.permutations < 0:
            raise ValueError(f"permutations must be >= 0; got {self.permutations}")


DEFAULT_RESAMPLING = Resampling()
NO_RESAMPLING = Resampling(resamples=0, permutations=0)


def resampling_keys(resampling: Resampling | None, _result=None) -> dict:
    """The ``metrics.json`` entries saying how a result's intervals were computed: their
    level and number of subsamples (none for a result without intervals)."""
    if resampling is None:
        return {}
    return {"interval_level": resampling.level, "resamples": resampling.resamples}


class SolvedState(NamedTuple):
    """One network, epoch or tau solved on the N inputs: its (L, N, N) Grams (array or
    memmap), its L CSR (N, N) coefficients and the settings they were solved with."""

    grams: np.ndarray
    coef: Sequence[sp.csr_array]
    solver: SolverSettings


class Subsample(NamedTuple):
    """A state re-solved on m of the inputs: L CSR (m, m) affinity graphs ``|C| + |C|^T``
    and the (L, m, m) Grams."""

    affinity: list[sp.csr_array]
    grams: np.ndarray


Statistic = Callable[[np.ndarray, list[Subsample]], Mapping[str, object]]
"""``statistic(idx, subsamples)``: every number of the analysis, by name, recomputed on the
inputs ``idx`` (m,) from one ``Subsample`` per state."""


def resolve(state: SolvedState, idx: np.ndarray) -> Subsample:
    """``state`` solved again on the inputs ``idx``, warm-started from its coefficients
    restricted to them."""
    grams = np.stack([np.asarray(g)[np.ix_(idx, idx)] for g in state.grams])
    init = [sp.csr_array(c)[idx][:, idx] for c in state.coef]
    coef, _ = solve_layers(grams, state.solver, progress=False, init=init)
    return Subsample([sp.csr_array(abs(c) + abs(c).T) for c in coef], grams)


def resolved(
    states: Sequence[SolvedState], resampling: Resampling, *, progress: bool = False
) -> Iterator[tuple[np.ndarray, list[Subsample]]]:
    """(idx, one ``Subsample`` per state) for each of the ``resampling.resamples``
    subsamples, the halves of `half_pairs` in their order, solved as they are asked for
    (every process of a ``jax.distributed`` job takes part in the solves; none without
    resamples)."""
    if resampling.resamples == 0:
        return
    n = states[0].grams.shape[-1]
    draws = half_pairs(n, resampling.resamples // 2, resampling.seed)
    for idx in tqdm(draws, desc="intervals", unit="subsample", disable=not progress):
        yield idx, [resolve(state, idx) for state in states]


def replicate_intervals(
    estimates: Mapping[str, object],
    subsamples: Iterable[tuple[np.ndarray, list[Subsample]]],
    statistic: Statistic,
    n: int,
    level: float = DEFAULT_LEVEL,
) -> dict[str, np.ndarray]:
    """``{name + "_ci": (..., 2)}``, the (low, high) interval at ``level`` of each of
    ``estimates`` {name: (...)}, the numbers ``statistic`` gives on all n inputs, from its
    values on ``subsamples`` (those of `resolved`: pairs of complementary halves of the n
    inputs); empty without subsamples.

    Raises:
      ValueError: for a subsample that is not a half of the n inputs.
    """
    found: dict[str, list] = {}
    for idx, subsample in subsamples:
        if len(idx) != n // 2:
            raise ValueError(f"intervals need halves of the {n} inputs; got {len(idx)} of them")
        for name, value in statistic(idx, subsample).items():
            found.setdefault(name, []).append(np.asarray(value, np.float64))
    if not found:
        return {}
    return {
        name + CI_SUFFIX: half_sample_interval(estimates[name], np.stack(found[name]), level)
        for name in estimates
    }


def intervals(
    estimates: Mapping[str, object],
    states: Sequence[SolvedState],
    statistic: Statistic,
    resampling: Resampling = DEFAULT_RESAMPLING,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """`replicate_intervals` on the subsamples of ``states`` that ``resampling`` draws;
    empty with ``resampling.resamples == 0``."""
    if resampling.resamples == 0:
        return {}
    subsamples = resolved(states, resampling, progress=progress)
    n = states[0].grams.shape[-1]
    return replicate_intervals(estimates, subsamples, statistic, n, resampling.level)


def summary_statistic(
    labels: np.ndarray,
    n_classes: int,
    measures: Sequence[Measure],
    moments: RowMoments | None = None,
) -> Statistic:
    """The statistic of one network's ``graph_summary``: ``modularity`` (L,), its rise from
    the first layer to the last (``RISE``, for the finding) and each measure's (L, L), by
    name; ``moments``, the N inputs' ``RowMoments``, for measures of the centred Grams."""

    def statistic(idx: np.ndarray, subsamples: list[Subsample]) -> dict[str, np.ndarray]:
        (sub,) = subsamples
        sub_moments = None if moments is None else moments.subset(idx)
        q = layer_modularity(sub.affinity, labels[idx], n_classes)
        return {
            "modularity": q,
            RISE: modularity_rise(q),
            **layer_similarity(measures, sub.affinity, sub.grams, sub_moments),
        }

    return statistic


def measure_inputs(sub: Subsample, idx: np.ndarray, moments: RowMoments | None) -> dict:
    """What the measures compare of a subsample (as ``LayerGraphs.measure_inputs``): its
    graphs, its Grams and the N inputs' ``moments`` restricted to ``idx``."""
    return {
        "graphs": sub.affinity,
        "grams": sub.grams,
        "moments": None if moments is None else moments.subset(idx),
    }


def cross_statistic(
    measures: Sequence[Measure],
    moments_a: RowMoments | None = None,
    moments_b: RowMoments | None = None,
) -> Statistic:
    """Each measure's (L_a, L_b) between the layers of two networks, by name, from a
    subsample of each (on the same inputs)."""

    def statistic(idx: np.ndarray, subsamples: list[Subsample]) -> dict[str, np.ndarray]:
        a, b = subsamples
        return cross_similarity_matrices(
            measures, measure_inputs(a, idx, moments_a), measure_inputs(b, idx, moments_b)
        )

    return statistic


def paired_statistic(
    measures: Sequence[Measure],
    moments_a: RowMoments | None = None,
    moments_b: RowMoments | None = None,
    suffix: str = "",
) -> Statistic:
    """Each measure's (L,) between corresponding layers of two states of one network (two
    epochs, two taus), by ``name + suffix``, from a subsample of each (on the same inputs)."""

    def statistic(idx: np.ndarray, subsamples: list[Subsample]) -> dict[str, np.ndarray]:
        a, b = subsamples
        found = paired_similarity(
            measures, measure_inputs(a, idx, moments_a), measure_inputs(b, idx, moments_b)
        )
        return {name + suffix: value for name, value in found.items()}

    return statistic


def table1_values(
    A, labels: np.ndarray, probs: np.ndarray | None, n_classes: int
) -> dict[str, float]:
    """Table 1 on one affinity graph A (n, n): the three fractions of ``label_agreement``,
    or only the SSC label accuracy without the network's class probabilities ``probs``."""
    A = A.toarray() if sp.issparse(A) else np.asarray(A)
    if probs is None:
        ssc = np.asarray(affinity_labels(A, labels, n_classes=n_classes))
        return {"ssc_label_accuracy": float(np.mean(ssc == labels))}
    agreement = label_agreement(A, labels, probs.argmax(axis=1), n_classes=n_classes)
    return {name: float(getattr(agreement, name)) for name in agreement._fields}


def checkpoint_statistic(
    labels: np.ndarray,
    probs: np.ndarray | None,
    n_classes: int,
    measures: Sequence[Measure],
    moments: RowMoments | None = None,
) -> Statistic:
    """``summary_statistic`` and Table 1 on the last layer, by name."""
    summary = summary_statistic(labels, n_classes, measures, moments)

    def statistic(idx: np.ndarray, subsamples: list[Subsample]) -> dict[str, object]:
        sub_probs = None if probs is None else probs[idx]
        table = table1_values(subsamples[0].affinity[-1], labels[idx], sub_probs, n_classes)
        return {**summary(idx, subsamples), **table}

    return statistic


def layer_modularity_p(
    A: Sequence, labels: np.ndarray, n_classes: int, resampling: Resampling = DEFAULT_RESAMPLING
) -> np.ndarray:
    """``modularity_p`` (L,) of each of the L graphs A, ``resampling.permutations`` label
    permutations each; empty with none."""
    if resampling.permutations == 0:
        return np.zeros(0)
    return np.asarray(
        [modularity_p(a, labels, n_classes, resampling.permutations, resampling.seed) for a in A]
    )


def _permuted(layers, order: np.ndarray):
    """A network's layer inputs (graphs, Grams or ``RowMoments``) with its inputs in
    ``order``."""
    if layers is None or isinstance(layers, RowMoments):
        return None if layers is None else layers.subset(order)
    return [relabel(x, order) for x in layers]


def similarity_p(
    measures: Sequence[Measure],
    a: Mapping[str, Sequence],
    b: Mapping[str, Sequence],
    *,
    count: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """{name: (L_a, L_b)} the p-value of each measure between the layers of two networks (or
    of one network against itself) against ``count`` random permutations of ``b``'s inputs:
    how often representations that share no input-level structure would be as similar.
    ``a`` and ``b`` map "graphs", "grams" and "moments" to the layers' inputs, as in
    ``cross_similarity_matrices``; each permutation computes every matrix again."""
    observed = cross_similarity_matrices(measures, a, b)
    n = next(layers[0].shape[-1] for key, layers in b.items() if key in ("graphs", "grams"))
    null: dict[str, list] = {name: [] for name in observed}
    for order in permutations(n, count, seed):
        shuffled = {key: _permuted(layers, order) for key, layers in b.items()}
        for name, value in cross_similarity_matrices(measures, a, shuffled).items():
            null[name].append(value)
    # For a distance, "as similar" is "as small".
    sign = {m.name: -1.0 if m.distance else 1.0 for m in measures}
    return {
        name: permutation_p(sign[name] * observed[name], sign[name] * np.stack(null[name]))
        for name in observed
    }
