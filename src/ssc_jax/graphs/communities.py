"""Analytics of an affinity graph whose nodes carry class labels (paper Eq. 5, Sec. 6, Table 1).

``A[i, j] >= 0`` is the affinity between samples i and j, for SSC ``A = |C| + |C|^T`` (zero
diagonal). Labels are integers in ``[0, n_classes)``; ``n_classes`` defaults to the largest
label + 1 and must be given when the labels are traced (under ``jax.jit``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.core.checks import check_finite, check_ndim, check_square, is_traced


class LabelAgreement(NamedTuple):
    """Table 1 of the paper, as fractions in [0, 1].

    Attributes:
      ssc_label_accuracy: how often the SSC label (the class of largest summed affinity)
        equals the true label.
      network_accuracy: how often the network's prediction equals the true label.
      agreement: how often the SSC label equals the network's prediction.
    """

    ssc_label_accuracy: jax.Array
    network_accuracy: jax.Array
    agreement: jax.Array


def modularity(A, labels, *, n_classes: int | None = None) -> jax.Array:
    """Newman modularity of the weighted graph A with the classes as communities (Eq. 5).

    With one-hot labels Y, out- and in-degrees k = A 1, k' = A^T 1 and S = sum(A)::

        Q = (tr(Y^T A Y) - (Y^T k) . (Y^T k') / S) / S

    For a symmetric A (S = 2m) this is Eq. 5; otherwise it is the directed modularity
    (Leicht & Newman 2008), as networkx computes for a DiGraph. A diagonal entry counts
    once (networkx counts a self-loop twice in the degree). A graph without edges has Q = 0.

    Args:
      A: (..., n, n) non-negative affinities; leading axes are a batch of graphs.
      labels: (n,) integer class of each node, shared by the batch.
      n_classes: number of classes.

    Returns:
      (...) modularity of each graph.
    """
    A = _as_graph(A)
    if not is_traced(A) and bool(jnp.any(A < 0)):
        raise ValueError("A has negative affinities; modularity needs weights >= 0")
    labels, n_classes = _as_labels("labels", labels, A.shape[-1], n_classes)
    return _modularity(A, labels, n_classes)


def class_affinity(A, labels, *, n_classes: int | None = None) -> jax.Array:
    """Summed affinity of every node to each class, itself excluded (paper Sec. 6.2).

    ``score[i, c] = sum_{j != i} A[i, j] [labels[j] == c]``.

    Args:
      A: (..., n, n) affinities.
      labels: (n,) integer class of each node (the neighbours' labels).
      n_classes: number of classes.

    Returns:
      (..., n, n_classes) scores.
    """
    A = _as_graph(A)
    labels, n_classes = _as_labels("labels", labels, A.shape[-1], n_classes)
    return _class_affinity(A, labels, n_classes)


def affinity_labels(A, labels, *, n_classes: int | None = None) -> jax.Array:
    """The class of largest summed affinity for each node: the SSC label of Table 1.

    Ties go to the smaller class; a node with no affinity to any other node gets -1.

    Args:
      A: (..., n, n) affinities.
      labels: (n,) integer class of each node (the neighbours' labels).
      n_classes: number of classes.

    Returns:
      (..., n) int32 labels.
    """
    A = _as_graph(A)
    labels, n_classes = _as_labels("labels", labels, A.shape[-1], n_classes)
    return _affinity_labels(A, labels, n_classes)


def label_agreement(
    A, labels, predictions, *, neighbour_labels=None, n_classes: int | None = None
) -> LabelAgreement:
    """The three numbers of Table 1 for one affinity graph.

    The SSC label of node i is the class with the largest summed affinity of i to the other
    nodes (`affinity_labels`), where the neighbours are labelled by ``neighbour_labels``:
    by default the ground truth ``labels``, a leave-one-out nearest-neighbour vote; pass the
    network's ``predictions`` to label the neighbours by the network instead.

    Args:
      A: (n, n) affinities.
      labels: (n,) true classes.
      predictions: (n,) the network's predicted classes.
      neighbour_labels: (n,) the classes the neighbours vote with; defaults to ``labels``.
      n_classes: number of classes the neighbours vote for.
    """
    A = _as_graph(A)
    check_ndim("A", A, 2, "an (n, n) matrix")
    n = A.shape[-1]
    labels = _check_labels("labels", labels, n)
    predictions = _check_labels("predictions", predictions, n)
    if neighbour_labels is None:
        votes = labels
    else:
        votes = _check_labels("neighbour_labels", neighbour_labels, n)
    ssc = affinity_labels(A, votes, n_classes=n_classes)
    return LabelAgreement(
        ssc_label_accuracy=jnp.mean(ssc == labels),
        network_accuracy=jnp.mean(predictions == labels),
        agreement=jnp.mean(ssc == predictions),
    )


def top_neighbours(A, i, k: int = 8) -> tuple[jax.Array, jax.Array]:
    """The k nodes of largest affinity to node i, strongest first, i itself excluded.

    Args:
      A: (n, n) affinities.
      i: node index (an int, or a traced integer under jit).
      k: number of neighbours, 1 <= k <= n - 1. Nodes of zero affinity fill the list when
        i has fewer than k neighbours.

    Returns:
      (indices, weights): (k,) int32 node indices and their (k,) affinities ``A[i, indices]``.
    """
    A = _as_graph(A)
    check_ndim("A", A, 2, "an (n, n) matrix")
    n = A.shape[-1]
    if not (isinstance(k, int) and 1 <= k <= n - 1):
        raise ValueError(f"k must be an integer in [1, n - 1] = [1, {n - 1}]; got {k!r}")
    if not is_traced(i) and not 0 <= int(i) < n:
        raise ValueError(f"i must be a node index in [0, {n}); got {i}")
    row = A[i]
    row = jnp.where(jnp.arange(n) == i, -jnp.inf, row)
    weights, indices = jax.lax.top_k(row, k)
    return indices.astype(jnp.int32), weights


@partial(jax.jit, static_argnums=2)
def _modularity(A: jax.Array, labels: jax.Array, n_classes: int) -> jax.Array:
    same = labels[:, None] == labels[None, :]
    total = jnp.sum(A, axis=(-2, -1))
    safe_total = jnp.where(total > 0, total, 1)
    inside = jnp.sum(jnp.where(same, A, 0), axis=(-2, -1)) / safe_total
    onehot = jax.nn.one_hot(labels, n_classes, dtype=A.dtype)
    out_share = (A.sum(axis=-1) @ onehot) / safe_total[..., None]
    in_share = (A.sum(axis=-2) @ onehot) / safe_total[..., None]
    q = inside - jnp.sum(out_share * in_share, axis=-1)
    return jnp.where(total > 0, q, 0)


@partial(jax.jit, static_argnums=2)
def _class_affinity(A: jax.Array, labels: jax.Array, n_classes: int) -> jax.Array:
    onehot = jax.nn.one_hot(labels, n_classes, dtype=A.dtype)
    self_weight = jnp.diagonal(A, axis1=-2, axis2=-1)[..., None]
    return jnp.matmul(A, onehot, precision=jax.lax.Precision.HIGHEST) - self_weight * onehot


@partial(jax.jit, static_argnums=2)
def _affinity_labels(A: jax.Array, labels: jax.Array, n_classes: int) -> jax.Array:
    scores = _class_affinity(A, labels, n_classes)
    isolated = jnp.all(scores == 0, axis=-1)
    return jnp.where(isolated, -1, jnp.argmax(scores, axis=-1).astype(jnp.int32))


def _as_graph(A) -> jax.Array:
    """``A`` as a floating JAX array of square matrices, checked for NaN and Inf."""
    A = jnp.asarray(A)
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(jnp.result_type(float))
    check_square("A", A)
    check_finite("A", A)
    return A


def _check_labels(name: str, labels, n: int) -> jax.Array:
    """``labels`` as a JAX integer array of length n; raise otherwise."""
    labels = jnp.asarray(labels)
    check_ndim(name, labels, 1, f"a 1-D array of n = {n} integer labels")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but the graph has n = {n} nodes")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name} must be integers; got dtype {labels.dtype}")
    return labels


def _as_labels(name: str, labels, n: int, n_classes: int | None) -> tuple[jax.Array, int]:
    """Checked labels and the number of classes, inferred as the largest label + 1 if None."""
    labels = _check_labels(name, labels, n)
    if is_traced(labels):
        if n_classes is None:
            raise ValueError(f"pass n_classes when {name} is traced (under jax.jit)")
        return labels, n_classes
    concrete = np.asarray(labels)
    low, high = int(concrete.min()), int(concrete.max())
    n_classes = high + 1 if n_classes is None else n_classes
    if low < 0 or high >= n_classes:
        raise ValueError(f"{name} must lie in [0, n_classes) = [0, {n_classes}); got {low}..{high}")
    return labels, n_classes
