"""The solver contract (``ssc_jax.solver.result``): every solver runs through the one loop, keeps
a state of its own and reports its own diagnostics; a new solver plugs into ``ssc``."""

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssc_jax
from lasso_reference import assert_same_optimum
from ssc_jax.solver import chunks
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.admm_state import ADMMDiagnostics, ADMMState
from ssc_jax.solver.certificate import correlations, diagonal_mask, row_certificates
from ssc_jax.solver.factor import DenseFactor, GramFactor
from ssc_jax.solver.result import RowSolution, Solver, Status
from ssc_jax.solver.synthetic import union_of_subspaces
from ssc_jax.solver.working_set import WorkingSet, WorkingSetDiagnostics, WorkingSetState


@pytest.fixture(scope="module")
def x():
    return union_of_subspaces(12, 5, 3, 24, noise=0.05, seed=3)[0].astype(np.float32)


def unit_gram(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def by_hand(solver: Solver, factor, rows) -> tuple[RowSolution, int]:
    """The loop of ``Solver.run`` in Python: the solution and the steps taken."""
    step = jax.jit(lambda state: solver.step(factor, state, rows))
    state, steps = solver.init(factor, rows), 0
    while not bool(solver.terminate(state)):
        state, steps = step(state), steps + 1
    return solver.postprocess(factor, state, rows), steps


def test_both_solvers_run_through_the_one_loop(x):
    gram = jnp.asarray(unit_gram(x))
    values, vectors = jnp.linalg.eigh(gram)
    rows = jnp.arange(60)
    for solver, factor, state_type in (
        (ADMM(), DenseFactor(vectors, jnp.maximum(values, 0)), ADMMState),
        (WorkingSet(gap_tol=1e-5), GramFactor(gram), WorkingSetState),
    ):
        assert type(solver).run is Solver.run
        assert isinstance(solver.init(factor, rows), state_type)
        looped = jax.jit(lambda s, f: s.run(f, rows))(solver, factor)
        assert isinstance(looped, RowSolution) and int(looped.status) == Status.CONVERGED
        manual, steps = by_hand(solver, factor, rows)
        assert steps > 0
        np.testing.assert_allclose(manual.coef, looped.coef, atol=1e-5)
        assert int(manual.iterations) == int(looped.iterations)
        assert type(manual.diagnostics) is type(looped.diagnostics)


def test_each_solver_reports_its_own_diagnostics(x):
    for budget, polish in ((None, False), (200_000, True)):
        admm = ssc_jax.ssc(x, solver=ADMM(polish=polish), memory_budget_bytes=budget)
        assert isinstance(admm.diagnostics, ADMMDiagnostics)
        for name in ("iterations", "primal_residual", "dual_residual", "mu"):
            np.testing.assert_array_equal(getattr(admm.diagnostics, name), getattr(admm, name))
        polished = int(admm.diagnostics.rows_polished)
        assert polished == round(float(admm.verified) * 60) and (polished > 0) == polish

    # Row blocks (a small memory budget) merge each diagnostic by its own rule.
    for budget in (None, 200_000):
        ws = ssc_jax.ssc(x, solver=WorkingSet(gap_tol=1e-5), memory_budget_bytes=budget)
        d = ws.diagnostics
        assert isinstance(d, WorkingSetDiagnostics) and bool(ws.converged)
        assert int(d.rounds) == int(ws.iterations) > 0
        assert int(d.rows_proven) == round(float(ws.verified) * 60) > 0
        assert 0 <= float(d.kkt_violation) <= float(ws.primal_residual) + 1e-7
        assert float(d.change) <= float(ws.dual_residual) + 1e-7
        assert np.isnan(float(ws.mu))
    assert set(d._asdict()) == {"rounds", "kkt_violation", "rows_proven", "change"}


class _ISTAState(NamedTuple):
    coef: jax.Array
    step_size: jax.Array
    steps: jax.Array
    relative_gap: jax.Array


class _ISTADiagnostics(NamedTuple):
    steps: jax.Array


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("tau", "gap_tol"),
    meta_fields=("max_iterations",),
)
@dataclass(frozen=True)
class ISTA(Solver):
    """Proximal gradient on the rows, certified by the duality gap: a third solver."""

    tau: float = 10.0
    gap_tol: float = 1e-3
    max_iterations: int = 20_000

    reads_gram = True

    def init(self, factor, rows, start=None):
        gram = factor.gram
        coef = jnp.zeros((rows.shape[0], gram.shape[0]), gram.dtype)
        lipschitz = self.tau * jnp.linalg.eigvalsh(gram)[-1]
        return _ISTAState(coef, 1 / lipschitz, jnp.asarray(0), jnp.asarray(jnp.inf, gram.dtype))

    def step(self, factor, state, rows, axis_name=None):
        q = correlations(factor, state.coef, rows)[1]
        moved = state.coef + state.step_size * self.tau * q
        coef = jnp.sign(moved) * jnp.maximum(jnp.abs(moved) - state.step_size, 0)
        coef = jnp.where(diagonal_mask(rows, coef.shape[1]), 0, coef)
        objective, gap = (jnp.sum(a) for a in row_certificates(factor, coef, rows, self.tau))
        return _ISTAState(coef, state.step_size, state.steps + 1, gap / objective)

    def terminate(self, state):
        return (state.relative_gap <= self.gap_tol) | (state.steps >= self.max_iterations)

    def postprocess(self, factor, state, rows, axis_name=None):
        objective, gap = (jnp.sum(a) for a in row_certificates(factor, state.coef, rows, self.tau))
        converged = gap <= self.gap_tol * objective
        return RowSolution(
            coef=state.coef,
            objective=objective,
            gap=gap,
            iterations=state.steps,
            status=jnp.where(converged, Status.CONVERGED, Status.MAX_ITERATIONS),
            verified=jnp.asarray(0),
            errors=-jnp.ones((1, 3), objective.dtype),
            diagnostics=_ISTADiagnostics(state.steps),
        )


def test_a_third_solver_plugs_in_and_reaches_a_certified_gap(x):
    x = x[:41]
    toy = ssc_jax.ssc(x, solver=ISTA())
    assert bool(toy.converged) and float(toy.duality_gap) <= 1e-3
    assert int(toy.diagnostics.steps) == int(toy.iterations) > 0
    assert np.isnan(float(toy.primal_residual)) and np.isnan(float(toy.mu))
    # Within the certified gaps of the working set's answer.
    assert_same_optimum(unit_gram(x), toy, ssc_jax.ssc(x, solver=WorkingSet(gap_tol=1e-6)))
    batch = ssc_jax.ssc_gram(np.stack([x @ x.T] * 2), solver=ISTA(tau=20.0))
    assert np.all(batch.converged) and batch.diagnostics.steps.shape == (2,)
    # tau is a traced leaf of this solver too: another tau compiles nothing new.
    before = chunks.run_batch._cache_size()
    ssc_jax.ssc(x, solver=ISTA(tau=5.0))
    assert chunks.run_batch._cache_size() == before
