"""Permutation p-values where the null hypothesis makes the inputs' order exchangeable.

Modularity against "the classes are unrelated to the graph": the labels are permuted on the
fixed graph. Similarity of two representations of the same inputs against "they share no
input-level structure": one side's inputs are permuted (a Gram ``G[p][:, p]`` or a graph's
nodes relabelled). Under either null the observed statistic and its P permuted copies are
exchangeable, so ``(1 + #{null >= observed}) / (P + 1)`` is a valid p-value for any P:
``P(p <= a) <= a`` for every a.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEFAULT_PERMUTATIONS = 199


def permutation_p(observed, null) -> np.ndarray:
    """``(1 + #{null >= observed}) / (P + 1)`` entrywise: the one-sided p-value of
    ``observed`` (...) against ``null`` (P, ...), its values under P permutations. A
    non-finite observed value gets nan."""
    observed = np.asarray(observed, np.float64)
    null = np.asarray(null, np.float64)
    if null.shape[1:] != observed.shape:
        raise ValueError(f"null {null.shape} must be (permutations, *{observed.shape})")
    p = (1.0 + np.sum(null >= observed, axis=0)) / (null.shape[0] + 1.0)
    return np.where(np.isfinite(observed), p, np.nan)


def permutations(n: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, n) independent uniform permutations of range(n)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]).reshape(count, n)


def relabel(x, order: np.ndarray):
    """A graph or Gram (n, n) with its inputs taken in ``order``: ``x[order][:, order]``
    (sparse stays sparse)."""
    if sp.issparse(x):
        return sp.csr_array(x)[order][:, order]
    return np.asarray(x)[np.ix_(order, order)]


def label_modularity(A, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Modularity of one non-negative graph A (n, n) (sparse or dense) under each row of
    ``labels`` (P, n): ``communities.modularity`` computed in float64 for many labellings
    of one graph, from its nonzeros."""
    coo = sp.coo_array(A)
    rows, cols, weights = coo.row, coo.col, coo.data.astype(np.float64)
    total = weights.sum()
    labels = np.atleast_2d(np.asarray(labels))
    if total == 0:
        return np.zeros(labels.shape[0])
    out_degree = np.bincount(rows, weights, minlength=A.shape[0])
    in_degree = np.bincount(cols, weights, minlength=A.shape[0])
    q = np.empty(labels.shape[0])
    for i, lab in enumerate(labels):
        inside = weights[lab[rows] == lab[cols]].sum()
        expected = np.bincount(lab, out_degree, minlength=n_classes) @ np.bincount(
            lab, in_degree, minlength=n_classes
        )
        q[i] = (inside - expected / total) / total
    return q


def modularity_p(
    A, labels: np.ndarray, n_classes: int, count: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> float:
    """The p-value of graph A's modularity with ``labels`` (n,) as communities against
    ``count`` random permutations of the labels on the same graph: how often classes that
    are unrelated to the graph would separate it as well."""
    labels = np.asarray(labels)
    shuffled = labels[permutations(labels.size, count, seed)]
    q = label_modularity(A, np.concatenate([labels[None], shuffled]), n_classes)
    return float(permutation_p(q[0], q[1:]))
