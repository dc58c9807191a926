"""The solver and the command line as a jax.distributed job of two local processes, the
launcher's options, and the memory math of one problem split by row blocks."""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import ssc_jax
from lasso_reference import assert_same_optimum, float64_gram, stored_layers
from ssc_jax.core.memory import problem_bytes
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import InputError, held_out_data, load_inputs, run_info
from ssc_jax.pipeline.analysis.layer_graphs import CACHE_DIR, checkpoint_grams
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.cli import launch
from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.store.graph_store import load_graphs
from ssc_jax.solver.distributed import (
    GIB,
    fewest_devices,
    row_split_bytes,
    scaling_table,
)
from ssc_jax.solver.synthetic import union_of_subspaces

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("n", [50_000, 100_000])
@pytest.mark.parametrize("devices", [1, 2, 8, 64])
def test_row_split_bytes_are_the_solver_byte_model(n, devices):
    split = row_split_bytes(n, devices)
    assert split.factor == problem_bytes(n, n, 0, 4) == 4 * 4 * n * n
    assert split.total == problem_bytes(n, n, math.ceil(n / devices), 4)


@pytest.mark.parametrize("n", [50_000, 100_000, 4_000])
@pytest.mark.parametrize("memory_gib", [24, 80])
def test_fewest_devices_is_the_fewest_that_fit(n, memory_gib):
    memory = memory_gib * GIB
    fewest = fewest_devices(n, memory)
    if fewest is None:
        assert row_split_bytes(n, n).total > memory  # not even one row per device fits
        return
    assert row_split_bytes(n, fewest).total <= memory
    assert fewest == 1 or row_split_bytes(n, fewest - 1).total > memory


def test_the_factor_is_the_ceiling():
    # One float32 N x N array is 9.3 GiB at N = 50,000 and the dense factor holds four.
    assert fewest_devices(50_000, 24 * GIB) is None
    assert fewest_devices(50_000, 80 * GIB) == 2
    assert fewest_devices(100_000, 80 * GIB) is None
    # A late layer (d = 512) has a 0.2 GiB factor; its 335 GiB of state then needs 5 GPUs.
    assert fewest_devices(100_000, 80 * GIB, rank=512) == 5


def test_the_readme_holds_the_scaling_table():
    assert scaling_table() in README.read_text()


def process_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    launch.add_process_options(parser)
    return parser.parse_args(list(argv))


def test_process_options_start_join_or_refuse():
    assert launch.spawns(process_args("--processes", "2"))
    assert not launch.spawns(process_args())
    assert not launch.spawns(process_args("--processes", "1"))
    joining = process_args("--coordinator", "h:1", "--num-processes", "2", "--process-id", "1")
    assert not launch.spawns(joining)
    assert (joining.processes, joining.process_id) == (2, 1)
    with pytest.raises(InputError, match="--processes must be >= 1"):
        launch.spawns(process_args("--processes", "0"))
    with pytest.raises(InputError, match="--process-id needs --coordinator"):
        launch.spawns(process_args("--process-id", "1"))
    with pytest.raises(InputError, match="needs --processes N and --process-id I"):
        launch.join(process_args("--coordinator", "h:1", "--processes", "2"))
    with pytest.raises(InputError, match=r"--process-id must be in 0\.\.1"):
        launch.join(process_args("--coordinator", "h:1", "--processes", "2", "--process-id", "2"))


def test_a_failed_process_stops_the_job_with_its_status(capfd):
    # Process 1 fails at once; process 0 would sleep far past the timeout.
    script = (
        "import sys, time; i = sys.argv[sys.argv.index('--process-id') + 1]\n"
        "if i == '1': sys.exit('process one failed')\n"
        "time.sleep(60)"
    )
    assert launch.spawn([sys.executable, "-c", script], 2, timeout=30) == 1
    assert "[process 1] process one failed" in capfd.readouterr().err


def test_a_job_past_its_timeout_is_stopped():
    with pytest.raises(TimeoutError, match="2 processes still running"):
        launch.spawn([sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1)


# A process of a two-process job: a batch split by problems over the job's two devices,
# gathered to process 0 alone (the default), and one problem split by rows, gathered to both
# and to process 0 alone; each process saves what it got.
_WORKER = """
import argparse, sys
import jax, numpy as np, ssc_jax
from ssc_jax.pipeline.cli import launch
from ssc_jax.solver import distributed
parser = argparse.ArgumentParser()
parser.add_argument("out")
launch.add_process_options(parser)
args = parser.parse_args()
launch.join(args)
assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
grams, x = np.load(args.out + ".in.npy"), np.load(args.out + ".x.npy")
distributed.GATHER_SLICE_BYTES = 4096  # gather the coefficients in many slices
batch = ssc_jax.ssc_gram(grams, solver=ssc_jax.ADMM())
rows = ssc_jax.ssc(x, solver=ssc_jax.ADMM(), rel_tol=1e-6, abs_tol=1e-9, gather="all")
written = ssc_jax.ssc(x, solver=ssc_jax.ADMM(), rel_tol=1e-6, abs_tol=1e-9)
got = {"rows_coef": rows.coef, "rows_objective": rows.objective, "rows_converged": rows.converged}
got.update(rows_gap=rows.duality_gap)
if jax.process_index() == 0:
    got.update(batch_coef=batch.coef, batch_iterations=batch.iterations, written=written.coef)
    got.update(batch_objective=batch.objective, batch_gap=batch.duality_gap)
else:
    assert all(field is None for field in batch), batch
    assert all(field is None for field in written), written
np.savez(f"{args.out}.{jax.process_index()}", **got)
"""


def solved(saved, name):
    """The coefficients and certificate that a worker saved under ``name``, as a result."""
    fields = {"coef": "coef", "objective": "objective", "duality_gap": "gap"}
    return SimpleNamespace(**{field: saved[f"{name}_{key}"] for field, key in fields.items()})


@pytest.mark.slow
def test_two_processes_give_the_single_process_answers(tmp_path):
    xs = [union_of_subspaces(12, 5, 6, d, noise=0.05, seed=s)[0] for s, d in enumerate((20, 90))]
    grams = np.stack([x @ x.T for x in (*xs, xs[0])]).astype(np.float32)  # 3 problems on 2
    x = xs[1].astype(np.float32)
    out = str(tmp_path / "job")
    np.save(out + ".in.npy", grams)
    np.save(out + ".x.npy", x)
    assert launch.spawn([sys.executable, "-c", _WORKER, out], 2, timeout=120) == 0
    job = np.load(out + ".0.npz")
    # The problems of the batch run side by side there (vmap), one after another here; each
    # stops on its own test either way.
    one = ssc_jax.ssc_gram(grams, solver=ssc_jax.ADMM())
    assert_same_optimum(grams, solved(job, "batch"), one)
    np.testing.assert_array_equal(job["batch_iterations"], one.iterations)
    # Each process solves half of the rows, each half with its own mu and stopping test; both
    # processes get the whole answer.
    one = ssc_jax.ssc(x, solver=ssc_jax.ADMM(), rel_tol=1e-6, abs_tol=1e-9)
    other = np.load(out + ".1.npz")
    assert "batch_coef" not in other and "written" not in other
    np.testing.assert_array_equal(job["written"], job["rows_coef"])
    for got in (job, other):
        assert bool(got["rows_converged"])
        assert_same_optimum(float64_gram(x), solved(got, "rows"), one)


def test_an_unknown_gather_mode_is_refused():
    with pytest.raises(ValueError, match="gather must be one of"):
        ssc_jax.ssc_gram(np.eye(3, dtype=np.float32), gather="everywhere")


def test_the_command_line_starts_joins_or_refuses_a_job(tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(launch, "spawn", lambda command, n: started.append((command, n)) or 0)
    argv = ["analyze", str(tmp_path), "--processes", "2"]
    assert main(argv) == 0
    assert started == [([sys.executable, "-m", "ssc_jax.run", *argv], 2)]
    assert main(["train", "--model", "small_cnn", "--processes", "2"]) == 2
    assert "`train` trains in one process" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--coordinator", "h:1", "--processes", "2"]) == 2
    assert "needs --processes N and --process-id I" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_as_two_processes_writes_once_what_one_process_writes(
    tiny_run, analyzed, fast_analysis, tmp_path
):
    # A copy of the run without the graphs that `analyzed` cached, so that the job solves.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(CACHE_DIR))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ssc_jax.run", "analyze", str(run), "--out", str(out)]
    assert launch.spawn([*command, *fast_analysis], 2, timeout=240) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(list((run / CACHE_DIR).rglob("*.npz"))) == 1
    folder, single = analyzed
    assert metrics["layers"] == single["layers"]
    # The job's graphs and the single process's: the same optimum to within their certified
    # gaps (the job splits the rows, each half with its own stopping test, so the two are not
    # the same program). The certificate bounds the fitted values, not metrics of |C|: each
    # job's modularity is checked to be that of its own stored graphs.
    analysis = AnalysisSet(n=metrics["n"])
    inputs = load_inputs(analysis, held_out_data(run_info(run)))
    grams = checkpoint_grams(run, metrics["epoch"], inputs, analysis=analysis).grams
    job = load_graphs(out / metrics["graph_file"])
    one = load_graphs(folder / single["graph_file"])
    for gram, *pair in zip(grams, stored_layers(job), stored_layers(one), strict=True):
        assert_same_optimum(gram, *pair)
    for stored, found in ((job, metrics), (one, single)):
        assert all(stored.diagnostics["converged"])
        A = [sp.csr_array(abs(c) + abs(c).T) for c in stored.coef]
        modularity = layer_modularity(A, inputs.labels, len(inputs.class_names))
        assert found["modularity"] == modularity.tolist()


def test_the_other_processes_solve_and_stop_there(tiny_run, fast_analysis, tmp_path, monkeypatch):
    """A process of a job other than process 0 takes part in every solve, then analyses,
    renders and writes nothing. Which process reads the solves is decided where the results
    are written: the computations hold no such check."""
    from ssc_jax.pipeline.analysis import analyze, compare, dynamics, layer_graphs, tau_path
    from ssc_jax.pipeline.analysis.config import AnalysisSet
    from ssc_jax.pipeline.cli import commands
    from ssc_jax.pipeline.store import graph_store

    analysis_modules = (analyze, compare, dynamics, layer_graphs, tau_path)
    assert not any(hasattr(module, "is_writer") for module in analysis_modules)
    monkeypatch.setattr(commands, "is_writer", lambda: False)
    monkeypatch.setattr(graph_store, "is_writer", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("a process other than process 0 analysed")

    for module, name in (
        (analyze, "analyze_graphs"),
        (dynamics, "layer_modularity"),
        (tau_path, "_summarise"),
        (compare, "_summary"),
    ):
        monkeypatch.setattr(module, name, refuse)
    solved, solve = [], layer_graphs.solve_layers
    monkeypatch.setattr(
        layer_graphs, "solve_layers", lambda *a, **k: solved.append(a[0].shape) or solve(*a, **k)
    )
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(CACHE_DIR))
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--out", str(out), *fast_analysis]) == 0
    analysis = AnalysisSet(n=80)
    quiet = {"analysis": analysis, "progress": False}
    assert commands._computed(dynamics.plan(run, **quiet)) is None
    assert commands._computed(tau_path.plan(run, [5, 10], **quiet)) is None
    assert commands._computed(compare.plan([f"{run}@1", str(run)], **quiet)) is None
    # analyze, dynamics (2 epochs), the tau path (2 taus), compare (2 networks)
    assert len(solved) == 7
    assert not out.exists() and not (run / CACHE_DIR).exists()
