"""mutual_knn, rsa and procrustes against independent references: rsatoolbox where it is
installed, float64 NumPy/SciPy transcriptions of platonic-rep's and netrep's definitions;
their invariances; and the Gram forms the pipeline uses against the activation forms."""

import json

import numpy as np
import pytest
from scipy import linalg, stats

import ssc_jax
from ssc_jax.pipeline.cli.main import main
from ssc_jax.similarity.peers import (
    LOW_RANK_START,
    column_centred_gram,
    low_rank_factor,
    mutual_knn_gram,
    procrustes_gram,
    row_centred_gram,
    rsa_gram,
)

# Float64 sums of a few hundred products, compared after O(1) further operations.
FLOAT64_TOL = 1e-10


def _layers(seed: int, n: int = 60, dx: int = 12, dy: int = 20):
    """Two related layers: Y a noisy nonlinear map of X, so every measure is between its
    extremes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx))
    Y = np.maximum(X @ rng.normal(size=(dx, dy)), 0) + 0.5 * rng.normal(size=(n, dy))
    return X, Y


def _platonic_mutual_knn(X, Y, k):
    """platonic-rep's ``mutual_knn``: rows L2-normalised, self-similarity masked, top-k of
    each row, mean over rows of the shared neighbours over k."""

    def knn(A):
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        sim = A @ A.T
        np.fill_diagonal(sim, -1e8)
        return np.argsort(-sim, axis=1)[:, :k]

    a, b = knn(X), knn(Y)
    return np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(X))])


def _netrep_angular_procrustes(X, Y):
    """netrep's ``LinearMetric(alpha=1, center_columns=True, score_method="angular")``:
    centre, scale to unit Frobenius norm, zero-pad, align by the orthogonal Procrustes
    rotation, and take the angle between the aligned matrices."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    width = max(Xc.shape[1], Yc.shape[1])
    Xc = np.pad(Xc, ((0, 0), (0, width - Xc.shape[1])))
    Yc = np.pad(Yc, ((0, 0), (0, width - Yc.shape[1])))
    rotation, _ = linalg.orthogonal_procrustes(Xc, Yc)
    return np.arccos(np.clip(np.sum((Xc @ rotation) * Yc), -1, 1))


def _rsa_reference(X, Y):
    """rsatoolbox's correlation RDM and Spearman comparison, transcribed."""

    def rdm(A):
        A = A - A.mean(axis=1, keepdims=True)
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        return (1 - A @ A.T)[np.triu_indices(len(A), k=1)]

    return stats.spearmanr(rdm(X), rdm(Y)).statistic


def _random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", [0, 1])
def test_mutual_knn_matches_platonic_rep(seed):
    X, Y = _layers(seed)
    for k in (1, 5, 10):
        assert ssc_jax.mutual_knn(X, Y, k=k) == pytest.approx(_platonic_mutual_knn(X, Y, k))


@pytest.mark.parametrize("seed", [0, 1])
def test_procrustes_matches_netrep_definition(seed):
    X, Y = _layers(seed)
    want = _netrep_angular_procrustes(X, Y)
    assert ssc_jax.procrustes(X, Y) == pytest.approx(want, abs=FLOAT64_TOL)
    # More features than inputs: the factor of the Gram replaces the activations.
    wide = np.hstack([Y, Y @ np.random.default_rng(seed).normal(size=(20, 70))])
    assert ssc_jax.procrustes(X, wide) == pytest.approx(
        _netrep_angular_procrustes(X, wide), abs=FLOAT64_TOL
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_rsa_matches_its_definition(seed):
    X, Y = _layers(seed)
    assert ssc_jax.rsa(X, Y) == pytest.approx(_rsa_reference(X, Y), abs=FLOAT64_TOL)


def test_rsa_matches_rsatoolbox():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    X, Y = _layers(2)
    rdms = [
        rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method="correlation") for A in (X, Y)
    ]
    want = rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")[0, 0]
    assert ssc_jax.rsa(X, Y) == pytest.approx(want, abs=FLOAT64_TOL)


def test_invariances():
    """mutual kNN: orthogonal maps and isotropic scaling of a layer; Procrustes: those and
    translation of the inputs (its columns are centred); RSA (Pearson between inputs, so
    not every rotation): feature permutations, isotropic scaling and a constant added to
    each input's features."""
    rng = np.random.default_rng(3)
    X, Y = _layers(3)
    moved = 2.5 * X @ _random_rotation(rng, X.shape[1])
    assert ssc_jax.mutual_knn(moved, Y) == pytest.approx(ssc_jax.mutual_knn(X, Y))
    shifted = moved + rng.normal(size=X.shape[1])
    assert ssc_jax.procrustes(shifted, Y) == pytest.approx(
        ssc_jax.procrustes(X, Y), abs=FLOAT64_TOL
    )
    offset = 3.0 * X[:, rng.permutation(X.shape[1])] + rng.normal(size=(len(X), 1))
    assert ssc_jax.rsa(offset, Y) == pytest.approx(ssc_jax.rsa(X, Y), abs=FLOAT64_TOL)
    # A layer against a transformed copy of itself: identical by every measure.
    assert ssc_jax.mutual_knn(X, moved) == 1.0
    assert ssc_jax.rsa(X, offset) == pytest.approx(1.0, abs=FLOAT64_TOL)
    # arccos near 1 turns rounding eps into sqrt(2 eps).
    assert ssc_jax.procrustes(X, shifted) == pytest.approx(0.0, abs=1e-7)


def test_gram_forms_agree_with_activation_forms():
    """What the pipeline gives the measures (Grams, feature sums, feature counts) reproduces
    the activation forms; a float32 Gram stays within its rounding."""
    X, Y = _layers(4, n=80, dx=30, dy=300)
    Kx, Ky = X @ X.T, Y @ Y.T
    assert mutual_knn_gram(Kx, Ky, 7) == ssc_jax.mutual_knn(X, Y, k=7)
    assert procrustes_gram(Kx, Ky) == pytest.approx(ssc_jax.procrustes(X, Y), abs=1e-9)
    centred = [row_centred_gram(A @ A.T, A.sum(axis=1), A.shape[1]) for A in (X, Y)]
    assert rsa_gram(*centred) == pytest.approx(ssc_jax.rsa(X, Y), abs=FLOAT64_TOL)
    # float32 Grams: relative rounding ~ D eps32 in each entry, through arccos near its
    # middle (slope ~1) and the dropped eigenvalues below n eps32 of the largest.
    bound = float(np.sqrt(80 * np.finfo(np.float32).eps))
    got = procrustes_gram(Kx.astype(np.float32), Ky.astype(np.float32))
    assert got == pytest.approx(ssc_jax.procrustes(X, Y), abs=bound)


def test_bad_input_is_one_clear_error():
    X, Y = _layers(5)
    with pytest.raises(ValueError, match="same inputs"):
        ssc_jax.rsa(X, Y[:-1])
    with pytest.raises(ValueError, match="k must be"):
        ssc_jax.mutual_knn(X, Y, k=len(X))
    with pytest.raises(ValueError, match="the same for every input"):
        ssc_jax.procrustes(np.ones_like(X), Y)


def test_a_command_writes_the_peer_measures(tmp_path):
    """`compare --measures mutual_knn,rsa,procrustes` on two networks' saved activations
    reaches the built-in peer measures through the registry (RSA with the feature sums the
    files give): each in metrics.json, equal to the function of the activations."""
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(3), 20)
    files, nets = [], []
    for seed in (0, 1):
        x = rng.normal(size=(60, 5)) + labels[:, None]
        net = {"a": x, "b": np.maximum(x @ rng.normal(size=(5, 40)), 0) + seed}
        nets.append({k: v.astype(np.float32) for k, v in net.items()})
        files.append(tmp_path / f"net{seed}.npz")
        np.savez(files[-1], labels=labels, **nets[-1])
    out = tmp_path / "out"
    argv = ["compare", *map(str, files), "--out", str(out), "--quiet", "--resamples", "0"]
    assert main([*argv, "--measures", "mutual_knn,rsa,procrustes"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cross = metrics["cross"][0]
    assert np.shape(cross["rsa"]) == np.shape(metrics["runs"][0]["procrustes"]) == (2, 2)
    a, b = nets[0]["b"], nets[1]["a"]
    assert cross["mutual_knn"][1][0] == ssc_jax.mutual_knn(a, b)
    # From float32 Grams the RDMs agree to float32 rounding, so their ranks agree up to swaps
    # of near-tied entries; each swap of adjacent ranks moves Spearman's 1 - 6 sum d^2 /
    # (m (m^2 - 1)) by at most 24 / m^2 (8e-6 at m = 1,770 pairs): 1e-4 allows a dozen.
    assert cross["rsa"][1][0] == pytest.approx(ssc_jax.rsa(a, b), abs=1e-4)
    bound = float(np.sqrt(60 * np.finfo(np.float32).eps))
    assert cross["procrustes"][1][0] == pytest.approx(ssc_jax.procrustes(a, b), abs=bound)
    # One network's layers against each other, by a command that solves one network.
    argv = ["activations", str(files[0]), "--out", str(tmp_path / "one"), "--quiet"]
    assert main([*argv, "--measures", "rsa"]) == 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert one["rsa"][0][1] == pytest.approx(ssc_jax.rsa(nets[0]["a"], nets[0]["b"]), abs=1e-4)
    # and, with the default resampling, its interval: (low, high) around each cell
    low, high = np.moveaxis(np.asarray(one["rsa_ci"]), -1, 0)
    assert (
        low.shape == (2, 2) and np.all(low <= np.asarray(one["rsa"])) and np.all(one["rsa"] <= high)
    )


def test_a_low_rank_gram_is_factored_from_a_subspace_with_the_full_answer():
    """A layer narrower than n takes the O(n^2 r) route: its factor rebuilds the centred
    Gram, and procrustes of the Grams equals netrep's definition on the activations, in
    float64 and within float32's rounding; a full-rank layer is refused by that route and
    takes the full eigendecomposition, with the same answer."""
    rng = np.random.default_rng(7)
    n = 2 * (LOW_RANK_START + 20)
    X = rng.normal(size=(n, 24))
    Y = np.maximum(X @ rng.normal(size=(24, 40)), 0) + 0.3 * rng.normal(size=(n, 40))
    wide = np.maximum(X @ rng.normal(size=(24, n + 50)), 0) + rng.normal(size=(n, n + 50))
    eps = np.finfo(np.float64).eps
    centred = column_centred_gram(X @ X.T)
    factor = low_rank_factor(centred, 32, eps)
    assert factor.shape == (n, 24)
    # Products of O(n) float64 terms of the Gram's scale.
    np.testing.assert_allclose(factor @ factor.T, centred, atol=n * eps * np.abs(centred).max())
    assert low_rank_factor(column_centred_gram(wide @ wide.T), LOW_RANK_START, eps) is None
    for A, B in ((X, Y), (Y, wide)):
        expected = _netrep_angular_procrustes(A, B)
        assert procrustes_gram(A @ A.T, B @ B.T) == pytest.approx(expected, abs=1e-9)
        # As test_gram_forms_agree_with_activation_forms: rounding of float32 entries.
        got = procrustes_gram((A @ A.T).astype(np.float32), (B @ B.T).astype(np.float32))
        assert got == pytest.approx(expected, abs=float(np.sqrt(n * np.finfo(np.float32).eps)))
