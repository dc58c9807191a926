"""``ssc_sparse``: SSC from the samples without their Gram certifies the optimum that the
Gram route certifies, on a union of subspaces and on a real ResNet layer's activations."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from lasso_reference import Solved, assert_same_optimum, float64_gram
from ssc_jax import capture_activations, create_model, normalize_images, ssc
from ssc_jax.solver import ADMM
from ssc_jax.solver.synthetic import union_of_subspaces
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
    # Rows certified within half of gap_tol keep their coefficients: later rounds solve fewer.
    counts = [sum(r.rows_per_size.values()) for r in rounds]
    assert counts[0] == 399 and counts[-1] < counts[0]


@pytest.mark.skipif(not CIFAR_TEST_ZIP.exists(), reason="no CIFAR-10 zips beside the checkout")
def test_same_optimum_as_the_gram_route_on_a_resnet_layer():
    model = create_model("resnet18", width=0.125)
    model.eval()
    images = normalize_images(cifar_images(50), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    x = capture_activations(model, np.asarray(images), ["layer4.1.conv2"])["layer4.1.conv2"]
    x = x.reshape(len(x), -1)  # (500, 1024)
    # 1e-5: float32's floor of the gap is near 1e-6 here, which only the Gram route's
    # float64 finish goes below.
    settings = dict(gap_tol=1e-5, size=64)  # supports of at most 48 samples suffice here
    sparse = ssc_sparse(x, **settings)
    gram = ssc(x, **settings)
    assert sparse.converged and bool(gram.converged)
    assert np.max(np.diff(sparse.coef.indptr)) < 48
    assert_same_optimum(float64_gram(x), solved(sparse), gram)


def test_bad_input_and_another_solver_are_named():
    x = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(ValueError, match="ssc_sparse solves with a WorkingSet; got ADMM"):
        ssc_sparse(x, solver=ADMM())
    with pytest.raises(ValueError, match="unknown solver setting"):
        ssc_sparse(x, sweeps=3)
    with pytest.raises(ValueError, match="X"):
        ssc_sparse(x[0])
