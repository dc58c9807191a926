"""Modularity against networkx; class affinities, SSC labels and neighbours against NumPy."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from ssc_jax import (
    LabelAgreement,
    affinity_labels,
    class_affinity,
    label_agreement,
    modularity,
    top_neighbours,
)


def graph(seed, n=30, n_classes=3, p=0.3, symmetric=True):
    """A weighted graph with zero diagonal whose edges favour same-class pairs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    boost = np.where(labels[:, None] == labels[None, :], 3.0, 1.0)
    A = rng.random((n, n)) * boost * (rng.random((n, n)) < p)
    if symmetric:
        A = A + A.T
    np.fill_diagonal(A, 0)
    return A, labels


def nx_modularity(A, labels, directed=False):
    G = nx.from_numpy_array(A, create_using=nx.DiGraph if directed else nx.Graph)
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return nx.community.modularity(G, communities, weight="weight")


@pytest.mark.parametrize("seed", [0, 1])
def test_modularity_matches_networkx(seed):
    A, labels = graph(seed)
    expected = nx_modularity(A, labels)
    with jax.enable_x64(True):
        assert float(modularity(A, labels)) == pytest.approx(expected, abs=1e-12)
    assert float(modularity(A.astype(np.float32), jnp.asarray(labels))) == pytest.approx(
        expected, abs=1e-5
    )


def test_directed_modularity_matches_networkx_digraph():
    A, labels = graph(2, symmetric=False)
    expected = nx_modularity(A, labels, directed=True)
    assert float(modularity(A, labels)) == pytest.approx(expected, abs=1e-5)


def test_modularity_is_batched_and_jittable():
    graphs = [graph(seed) for seed in (3, 4, 5)]
    labels = graphs[0][1]
    As = np.stack([A for A, _ in graphs]).reshape(3, 1, 30, 30)
    expected = [nx_modularity(A, labels) for A, _ in graphs]
    got = modularity(As, labels)
    assert got.shape == (3, 1)
    np.testing.assert_allclose(np.asarray(got)[:, 0], expected, atol=1e-5)
    jitted = jax.jit(modularity, static_argnames="n_classes")
    np.testing.assert_allclose(
        np.asarray(jitted(As, labels, n_classes=3))[:, 0], expected, atol=1e-5
    )
    with pytest.raises(ValueError, match="n_classes"):
        jax.jit(modularity)(As, labels)


def test_modularity_edge_cases():
    labels = np.array([0, 0, 1, 1])
    assert float(modularity(np.zeros((4, 4)), labels)) == 0.0
    two_cliques = np.kron(np.eye(2), np.ones((2, 2))) - np.eye(4)
    assert float(modularity(two_cliques, labels)) == pytest.approx(0.5, abs=1e-6)
    assert float(modularity(two_cliques, np.zeros(4, int))) == pytest.approx(0.0, abs=1e-6)


def test_modularity_bad_input():
    A, labels = graph(6)
    with pytest.raises(ValueError, match="negative"):
        modularity(A - 0.5, labels)
    bad = A.copy()
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        modularity(bad, labels)
    with pytest.raises(ValueError, match="entries but the graph"):
        modularity(A, labels[:-1])
    with pytest.raises(ValueError, match="integers"):
        modularity(A, labels.astype(float))
    with pytest.raises(ValueError, match="n_classes"):
        modularity(A, labels, n_classes=2)
    with pytest.raises(ValueError, match="square"):
        modularity(A[:, :-1], labels)


def test_class_affinity_and_labels():
    A, labels = graph(7, n_classes=4)
    A[np.arange(30), np.arange(30)] = 5.0  # a self-affinity must not vote
    expected = np.stack(
        [[A[i, (labels == c) & (np.arange(30) != i)].sum() for c in range(4)] for i in range(30)]
    )
    np.testing.assert_allclose(np.asarray(class_affinity(A, labels)), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(affinity_labels(A, labels)), expected.argmax(1))
    assert class_affinity(A, labels, n_classes=6).shape == (30, 6)
    jitted = jax.jit(affinity_labels, static_argnames="n_classes")
    np.testing.assert_array_equal(np.asarray(jitted(A, labels, n_classes=4)), expected.argmax(1))


def test_isolated_node_gets_no_label():
    A, labels = graph(8)
    A[5, :] = A[:, 5] = 0
    got = np.asarray(affinity_labels(A, labels))
    assert got[5] == -1 and np.all(got[np.arange(30) != 5] >= 0)


def test_label_agreement_is_table_1():
    A, labels = graph(9, n=40, n_classes=4)
    rng = np.random.default_rng(9)
    predictions = np.where(rng.random(40) < 0.8, labels, rng.integers(0, 4, 40))
    scores = np.stack(
        [[A[i, (labels == c) & (np.arange(40) != i)].sum() for c in range(4)] for i in range(40)]
    )
    ssc = scores.argmax(1)
    got = label_agreement(A, labels, predictions)
    assert isinstance(got, LabelAgreement)
    assert float(got.ssc_label_accuracy) == pytest.approx(np.mean(ssc == labels))
    assert float(got.network_accuracy) == pytest.approx(np.mean(predictions == labels))
    assert float(got.agreement) == pytest.approx(np.mean(ssc == predictions))
    by_network = label_agreement(A, labels, predictions, neighbour_labels=predictions)
    vote = np.stack(
        [
            [A[i, (predictions == c) & (np.arange(40) != i)].sum() for c in range(4)]
            for i in range(40)
        ]
    ).argmax(1)
    assert float(by_network.ssc_label_accuracy) == pytest.approx(np.mean(vote == labels))
    assert float(by_network.agreement) == pytest.approx(np.mean(vote == predictions))
    with pytest.raises(ValueError, match="predictions has 39 entries"):
        label_agreement(A, labels, predictions[:-1])
    with pytest.raises(ValueError, match="neighbour_labels has 39 entries"):
        label_agreement(A, labels, predictions, neighbour_labels=predictions[:-1])


def test_top_neighbours():
    A, _ = graph(10)
    A[4, 4] = 100.0  # self excluded even when strongest
    idx, w = top_neighbours(A, 4, k=8)
    order = [j for j in np.argsort(-A[4], kind="stable") if j != 4][:8]
    np.testing.assert_allclose(np.asarray(w), A[4, order], atol=1e-6)
    assert 4 not in np.asarray(idx).tolist()
    assert np.all(np.diff(np.asarray(w)) <= 0)
    np.testing.assert_allclose(A[4, np.asarray(idx)], np.asarray(w), atol=1e-6)
    jitted = jax.jit(top_neighbours, static_argnames="k")
    np.testing.assert_array_equal(np.asarray(jitted(A, jnp.int32(4), k=8)[0]), np.asarray(idx))
    with pytest.raises(ValueError, match="k must be"):
        top_neighbours(A, 0, k=30)
    with pytest.raises(ValueError, match="node index"):
        top_neighbours(A, 30)
