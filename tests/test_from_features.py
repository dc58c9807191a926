"""``ssc_sparse``: SSC from the samples without their Gram certifies the optimum that the
Gram route certifies, on a union of subspaces and on a real ResNet layer's activations."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from lasso_reference import TAU, Solved, assert_same_optimum, float64_gram, rounding_allowance
from ssc_jax import capture_activations, create_model, normalize_images, ssc
from ssc_jax.solver import ADMM
from ssc_jax.solver.convergence import ConvergenceWarning
from ssc_jax.solver.synthetic import union_of_subspaces
from ssc_jax.solver.working_set.float64_finish import (
    finish_problem,
    finish_supports,
    float64_samples,
    from_samples,
)
from ssc_jax.solver.working_set.from_features import ssc_sparse

CIFAR_TEST_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test.zip"


def solved(result) -> Solved:
    """What ``certified`` reads of an ``ssc_sparse`` answer, C dense."""
    return Solved(result.coef.toarray(), result.objective, result.duality_gap)


def cifar_images(per_class: int) -> np.ndarray:
    """The first ``per_class`` test images of each CIFAR-10 class, (n, 32, 32, 3) uint8."""
    from PIL import Image

    with zipfile.ZipFile(CIFAR_TEST_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        by_class = {}
        for name in names:
            by_class.setdefault(name.split("/")[-2], []).append(name)
        chosen = [name for group in by_class.values() for name in group[:per_class]]
        return np.stack([np.asarray(Image.open(archive.open(n)).convert("RGB")) for n in chosen])


def test_same_optimum_as_the_gram_route_on_a_union_of_subspaces():
    x = union_of_subspaces(80, 5, 4, 40, noise=0.05, seed=1)[0]
    x[7] = 0  # a zero sample is rebuilt from nothing and rebuilds nothing
    # A budget of a few slabs' rows, so that the passes and the problems run in blocks.
    # Working sets of at most 32 samples (supports here are far smaller), so that both
    # routes compile fewer rungs.
    settings = dict(gap_tol=1e-6, size=32)
    sparse = ssc_sparse(x, memory_budget_bytes=200_000, progress=False, **settings)
    gram = ssc(x, low_rank=False, **settings)
    assert sparse.converged and sparse.duality_gap <= 1e-6
    assert_same_optimum(float64_gram(x), solved(sparse), gram, coef=True)
    coef = sparse.coef
    assert isinstance(coef, scipy.sparse.csr_array) and coef.shape == (400, 400)
    assert np.all(coef.diagonal() == 0)
    assert coef[[7]].nnz == 0 and coef[:, [7]].nnz == 0
    first, rounds = sparse.history[0], sparse.history[1:]
    assert first.rows_per_size == {} and rounds[-1].relative_gap == sparse.duality_gap
    assert sparse.rounds == len(rounds) and all(r.rows_per_size for r in rounds)
    # Rows certified within a tenth of gap_tol keep their coefficients: later rounds solve
    # fewer.
    counts = [sum(r.rows_per_size.values()) for r in rounds]
    assert counts[0] == 399 and counts[-1] < counts[0]


@pytest.mark.skipif(not CIFAR_TEST_ZIP.exists(), reason="no CIFAR-10 zips beside the checkout")
def test_same_optimum_as_the_gram_route_on_a_resnet_layer():
    model = create_model("resnet18", width=0.125)
    model.eval()
    images = normalize_images(cifar_images(50), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    x = capture_activations(model, np.asarray(images), ["layer4.1.conv2"])["layer4.1.conv2"]
    x = x.reshape(len(x), -1)  # (500, 1024)
    # 1e-6: float32's floor of the gap is near 1e-6 here, so both routes' rounds stall
    # above it and their float64 finishes certify it.
    settings = dict(gap_tol=1e-6, size=64)  # supports of at most 48 samples suffice here
    sparse = ssc_sparse(x, **settings)
    gram = ssc(x, **settings)
    assert sparse.converged and bool(gram.converged)
    assert sparse.history[-1].relative_gap > 1e-6 and sparse.finish_seconds is not None
    assert np.max(np.diff(sparse.coef.indptr)) < 48
    assert_same_optimum(float64_gram(x), solved(sparse), gram)


def test_the_finish_from_the_samples_is_the_finish_from_the_gram():
    """``finish_supports`` (from X, for ``ssc_sparse``) refines and certifies float32
    coefficients as ``finish_problem`` (from G's rows, for ``ssc``) does: the same values
    up to float32's rounding of float64 solves taken in another order, and float64
    certificates within float64's rounding of their terms."""
    x = np.maximum(np.random.default_rng(1).normal(size=(60, 64)), 0).astype(np.float32)
    start = ssc_sparse(x, gap_tol=1e-5, size=32, progress=False)
    coef = start.coef.toarray()
    x64, norms = float64_samples(x, normalize=True)
    by_gram = finish_problem(coef, from_samples(x, normalize=True), tau=TAU, budget=2**20)
    width = int(np.max(np.diff(start.coef.indptr)))
    index = np.repeat(np.arange(60, dtype=np.int32)[:, None], width, axis=1)
    values = np.zeros((60, width), np.float32)
    for row in range(60):
        line = start.coef[[row]]
        index[row, : line.nnz], values[row, : line.nnz] = line.indices, line.data
    reported = np.full(60, np.inf)  # no row's old coefficients are certified again
    by_samples = finish_supports(x64, norms, index, values, reported, tau=TAU, budget=2**20)
    refined = np.zeros_like(coef)
    np.put_along_axis(refined, index, by_samples.values, axis=1)
    np.testing.assert_allclose(refined, by_gram[0], rtol=2 * np.finfo(np.float32).eps)
    allowance = rounding_allowance(refined, np.float64)
    assert np.all(np.abs(by_samples.objective - by_gram[1]) <= allowance)
    assert np.all(np.abs(by_samples.gap - by_gram[2]) <= allowance)
    assert int(np.sum(by_samples.safe)) == by_gram[3]
    assert np.sum(by_samples.gap) / np.sum(by_samples.objective) < start.duality_gap / 10
    # Below what float32 coefficients certify, the rounds stall and the finish says so.
    with pytest.warns(ConvergenceWarning, match="its rounds stalled"):
        stopped = ssc_sparse(x, gap_tol=1e-12, size=32, progress=False)
    assert stopped.finish_seconds is not None and 1e-12 < stopped.duality_gap < 1e-7


def test_bad_input_and_another_solver_are_named():
    x = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(ValueError, match="ssc_sparse solves with a WorkingSet; got ADMM"):
        ssc_sparse(x, solver=ADMM())
    with pytest.raises(ValueError, match="unknown solver setting"):
        ssc_sparse(x, sweeps=3)
    with pytest.raises(ValueError, match="X"):
        ssc_sparse(x[0])
