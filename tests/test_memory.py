"""The memory policy: the solver's byte model against XLA, and the plans it gives."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssc_jax.core.memory import (
    block_budget,
    default_memory_budget,
    plan_chunks,
    problem_bytes,
)
from ssc_jax.similarity.hsic import block_rows
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.factor import choose_factor


def xla_bytes(compiled) -> int:
    """Arguments, outputs and temporaries of a compiled program, as XLA counts them."""
    analysis = compiled.memory_analysis()
    return (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
    )


@functools.cache
def factor(n: int, low_rank: bool):
    """A float32 factor of the Gram of n samples, of rank 16 or full, built as the solver does."""
    x = np.random.default_rng(n).normal(size=(n, 16 if low_rank else 2 * n))
    values, vectors = jnp.linalg.eigh(jnp.asarray(x @ x.T, jnp.float32))
    return choose_factor(values, vectors, low_rank, float(np.finfo(np.float32).eps))


# Measured on a CPU (jax 0.10), model / XLA is 1.08-1.40 over these cases. A model without
# the dense inverse falls to 0.96 at n = 512, rows = 64; one without the vmap selects (eight
# state arrays) to 0.97 for two low-rank problems.
@pytest.mark.parametrize("low_rank", [False, True], ids=["dense", "low_rank"])
@pytest.mark.parametrize(("n", "rows"), [(256, 64), (256, 256), (512, 64), (512, 512)])
def test_problem_bytes_bounds_what_xla_allocates(n, rows, low_rank):
    fac = factor(n, low_rank)
    rank = fac.vectors.shape[-1]
    assert (rank < n) == low_rank
    model = problem_bytes(n, rank, rows, 4)
    block = jnp.arange(rows)
    single = xla_bytes(jax.jit(ADMM().run).lower(fac, block).compile())
    assert single <= model <= 2 * single
    # Two problems side by side, as the solver runs a chunk of problems on an accelerator.
    pair = jax.tree.map(lambda a: jnp.stack([a, a]), fac)
    run = functools.partial(ADMM().run, rows=block, axis_name="problems")
    paired = xla_bytes(jax.jit(jax.vmap(run, axis_name="problems")).lower(pair).compile())
    assert paired <= 2 * model <= 4 * paired


def test_whole_problems_per_chunk_follow_the_budget():
    n, rank, itemsize = 100, 100, 4
    whole = problem_bytes(n, rank, n, itemsize)
    assert plan_chunks(n, 8, rank, itemsize, budget=3 * whole) == (3, n)
    assert plan_chunks(n, 8, rank, itemsize, budget=3 * whole - 1) == (2, n)
    assert plan_chunks(n, 8, rank, itemsize, budget=whole) == (1, n)
    assert plan_chunks(n, 2, rank, itemsize, budget=100 * whole) == (2, n)  # the whole batch


@pytest.mark.parametrize("rank", [1000, 40], ids=["dense", "low_rank"])
def test_rows_per_chunk_are_the_most_that_fit(rank):
    n, itemsize = 1000, 4
    for budget in (problem_bytes(n, rank, 100, itemsize), problem_bytes(n, rank, n, itemsize) - 1):
        plan = plan_chunks(n, 3, rank, itemsize, budget)
        assert plan.problems == 1
        assert plan.rows % 8 == 0
        assert problem_bytes(n, rank, plan.rows, itemsize) <= budget
        assert problem_bytes(n, rank, plan.rows + 8, itemsize) > budget
    needed = problem_bytes(n, rank, 8, itemsize)
    with pytest.raises(ValueError, match=f"needs at least {needed:,} bytes"):
        plan_chunks(n, 1, rank, itemsize, budget=needed - 1)
    assert plan_chunks(n, 1, rank, itemsize, budget=needed) == (1, 8)


def test_default_budget_is_half_the_default_device():
    budget = default_memory_budget()
    device = jax.devices()[0]
    if device.platform == "cpu":
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        total = device.memory_stats()["bytes_limit"]
    assert budget == total // 2
    assert 0 < block_budget() <= budget


def test_hsic_blocks_are_as_few_as_the_block_budget_allows():
    n, layers, itemsize = 600, 8, 4
    row_bytes = layers * n * itemsize  # one row of every centered matrix
    rows = block_rows(n, layers, itemsize)
    assert rows * row_bytes <= block_budget()
    assert -(-n // rows) == -(-n // (block_budget() // row_bytes))
    assert block_rows(n, layers, itemsize, budget=150 * row_bytes) == 150
    assert block_rows(n, layers, itemsize, budget=149 * row_bytes) == 120  # 5 even blocks
