"""Distributed benchmark: one SSC problem as a jax.distributed job of 1 and of 2 processes.

The parent starts each job with ``ssc_jax.pipeline.cli.launch.spawn`` (loopback, CPU backend,
gloo collectives); process 0 of each job reports:

- the wall time of ``ssc(X)`` on one problem of n samples (rank ``--rank``, the low-rank
  path; its rows are split over the job's devices), its first call (compilation included,
  a second of the total; a warm-up solve would double the run) or the best of
  ``--repeat`` calls after it, and its ADMM iterations;
- with 2 processes, what the second costs in communication: the gather of the n x n
  coefficients, split by rows, once per solve: onto every host (``distributed.to_host``),
  in one piece and in slices of 4 MiB, and onto process 0 alone (``gather(..., "writer")``,
  the default); and, per ADMM
  iteration, the all-gather of an n x n float32 array that a factor sharded by columns would
  need (lifting the one-factor-per-device ceiling), beside the local matmul of one dense
  iteration, (n / 2, n) @ (n, n), at each of ``--comm-sizes``.

The jobs are 1 process with XLA's default threads (every core) and 2 processes with
Eigen's multi-threading off (one core each), so that both use the same cores. On a shared
machine the other users' load falls on both alike only roughly.

    python benchmarks/distributed.py                       # n = 4,000, rank 100
    python benchmarks/distributed.py --n 1000 --repeat 2   # a quick look, warm solves
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssc_jax.pipeline.cli import launch

# One core per process: Eigen's intra-op threads off.
_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="samples of the problem")
    parser.add_argument("--rank", type=int, default=100, help="feature dimension d < n")
    parser.add_argument("--comm-sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--repeat", type=int, default=0, help="warm solves (0: the first)")
    parser.add_argument("--timeout", type=float, default=170.0, help="seconds per job")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the JSON file process 0 writes
    launch.add_process_options(parser)
    return parser.parse_args(argv)


def best_seconds(fn, repeat: int) -> tuple[float, object]:
    """The best wall time of ``repeat`` blocking calls of ``fn`` after a warm-up call, or
    with ``repeat=0`` the time of the first call."""
    import jax

    if repeat == 0:
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        return time.perf_counter() - start, result
    result = jax.block_until_ready(fn())
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return min(seconds), result


def worker(args: argparse.Namespace) -> None:
    launch.join(args)
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import ssc_jax
    from ssc_jax.solver import distributed
    from ssc_jax.solver.distributed import gather, is_writer, to_host
    from ssc_jax.solver.synthetic import union_of_subspaces

    x = union_of_subspaces(args.n // 100, 100, 10, args.rank, noise=0.05, seed=0)[0]
    x = x.astype(np.float32)
    # The result goes to process 0 alone (the default); the others get fields of None.
    solve, result = best_seconds(lambda: ssc_jax.ssc(x, solver=ssc_jax.ADMM()), args.repeat)
    report = {"processes": jax.process_count(), "devices": len(jax.devices()), "solve_s": solve}
    if is_writer():
        report["iterations"] = int(result.iterations)
        report["converged"] = bool(result.converged)
        report["objective"] = float(result.objective)
    if jax.process_count() > 1:
        mesh = Mesh(np.asarray(jax.devices()), ("devices",))
        rows = NamedSharding(mesh, PartitionSpec("devices"))
        everywhere = NamedSharding(mesh, PartitionSpec())
        coef = jax.device_put(np.zeros((args.n, args.n), np.float32), rows)
        report["gather_coef_s"] = best_seconds(lambda: to_host(coef), 3)[0]
        report["gather_writer_s"] = best_seconds(lambda: gather(coef, "writer"), 3)[0]
        distributed.GATHER_SLICE_BYTES = 4 * 2**20
        report["gather_sliced_s"] = best_seconds(lambda: to_host(coef), 3)[0]
        distributed.GATHER_SLICE_BYTES = 64 * 2**20
        gather = jax.jit(lambda a: a, out_shardings=everywhere)
        matmul = jax.jit(lambda a, b: a @ b)
        comm = {}
        for n in args.comm_sizes:
            a = jax.device_put(np.ones((n, n), np.float32), rows)
            local = jnp.ones((n // jax.process_count(), n), jnp.float32)
            square = jnp.ones((n, n), jnp.float32)
            comm[n] = {
                "allgather_s": best_seconds(lambda a=a: gather(a), 5)[0],
                "matmul_s": best_seconds(lambda lo=local, sq=square: matmul(lo, sq), 5)[0],
            }
        report["per_iteration"] = comm
    if is_writer():
        Path(args.worker).write_text(json.dumps(report))


def run_job(args: argparse.Namespace, processes: int, *, single_thread: bool) -> dict:
    env = dict(os.environ)
    if single_thread:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {_SINGLE_THREAD}".strip()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [sys.executable, __file__, "--worker", str(out), "--n", str(args.n)]
        command += ["--rank", str(args.rank), "--repeat", str(args.repeat), "--comm-sizes"]
        command += [str(n) for n in args.comm_sizes]
        status = launch.spawn(command, processes, env=env, timeout=args.timeout)
        if status != 0:
            raise SystemExit(f"the {processes}-process job failed with status {status}")
        return json.loads(out.read_text())


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    jobs = {
        "1 process x all threads": run_job(args, 1, single_thread=False),
        "2 processes x 1 thread": run_job(args, 2, single_thread=True),
    }
    timed = "first call (s)" if args.repeat == 0 else f"best of {args.repeat} warm (s)"
    print(f"one problem: n = {args.n}, d = {args.rank} (low-rank path), float32, CPU\n")
    print(f"| job | devices | solve, {timed} | iterations | converged | objective |")
    print("|---|---:|---:|---:|---|---:|")
    for name, r in jobs.items():
        print(
            f"| {name} | {r['devices']} | {r['solve_s']:.2f} | {r['iterations']} | "
            f"{r['converged']} | {r['objective']:.2f} |"
        )
    two = jobs["2 processes x 1 thread"]
    print(f"\ngather of the {args.n} x {args.n} coefficients, split by rows:\n")
    print("| onto | slices | seconds |\n|---|---:|---:|")
    slices = -(-args.n * args.n * 4 // (4 * 2**20))
    print(f"| every host | 1 | {two['gather_coef_s']:.3f} |")
    print(f"| every host | {slices} | {two['gather_sliced_s']:.3f} |")
    print(f"| process 0 alone (the default) | 1 | {two['gather_writer_s']:.3f} |")
    print("\nper ADMM iteration with a factor sharded by columns over 2 processes:\n")
    print("| n | all-gather n x n float32 (s) | local (n/2, n) @ (n, n) matmul (s) | ratio |")
    print("|---:|---:|---:|---:|")
    for n, c in two["per_iteration"].items():
        ratio = c["allgather_s"] / c["matmul_s"]
        print(f"| {n} | {c['allgather_s']:.4f} | {c['matmul_s']:.4f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
