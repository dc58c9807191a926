"""Running a command as a ``jax.distributed`` job: joining one, or starting one on this machine.

Every command of ``python -m ssc_jax.run`` takes the options of `add_process_options`:

- ``--processes N`` alone starts N processes of the same command on this machine (CPU
  backend, a coordinator on a free loopback port) and waits for them: `spawn`;
- ``--coordinator HOST:PORT --processes N --process-id I`` joins a job as process I of N,
  for example once per host by hand: `join`;
- ``--coordinator auto`` leaves what is not given to ``jax.distributed.initialize``, which
  detects SLURM (``srun``) and Open MPI (``mpirun``) from their environment variables.

Each process then runs the same command on the same inputs; ``ssc_gram`` spreads its work
over every device of every process, and only process 0 writes (``solver.distributed``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

import jax

from ssc_jax.pipeline.analysis.inputs import InputError

LOOPBACK = "127.0.0.1"
AUTO = "auto"
# How long a process that is told to stop may take before it is killed.
_GRACE_SECONDS = 5.0


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """The ``jax.distributed`` options of a command."""
    group = parser.add_argument_group(
        "processes (jax.distributed)",
        "Spread the SSC solves over several processes, on one machine or many; "
        "process 0 writes the output.",
    )
    group.add_argument(
        "--processes",
        "--num-processes",
        dest="processes",
        type=int,
        metavar="N",
        help="number of processes; without --coordinator, start N on this machine (CPU)",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="join a job whose process 0 listens at HOST:PORT; 'auto' detects SLURM or mpirun",
    )
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")


def spawns(args: argparse.Namespace) -> bool:
    """Whether ``args`` ask to start the processes of a job on this machine.

    Raises:
      InputError: for a process count below 1, or an id without a coordinator.
    """
    if args.processes is not None and args.processes < 1:
        raise InputError(f"--processes must be >= 1; got {args.processes}")
    if args.coordinator is None and args.process_id is not None:
        raise InputError("--process-id needs --coordinator HOST:PORT (or 'auto')")
    return args.coordinator is None and (args.processes or 1) > 1


def join(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` with the options of ``args``, if ``--coordinator`` is
    given; call it before any JAX computation.

    Raises:
      InputError: for an id outside ``0..N-1``, or an explicit coordinator without both.
    """
    if args.coordinator is None:
        return
    known = {"num_processes": args.processes, "process_id": args.process_id}
    if args.coordinator != AUTO and None in known.values():
        raise InputError("--coordinator HOST:PORT needs --processes N and --process-id I")
    if None not in known.values() and not 0 <= args.process_id < args.processes:
        raise InputError(f"--process-id must be in 0..{args.processes - 1}; got {args.process_id}")
    if "jax_cpu_collectives_implementation" in jax.config.values:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = None if args.coordinator == AUTO else args.coordinator
    jax.distributed.initialize(coordinator_address=address, **known)


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def spawn(
    command: Sequence[str],
    processes: int,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``command`` as ``processes`` local processes of one job and return its status.

    Each process gets ``--coordinator 127.0.0.1:PORT --processes N --process-id I`` appended
    (the options of `add_process_options`) and ``JAX_PLATFORMS=cpu``. Process 0 keeps this
    terminal; the others' output is shown only if they fail. When one process fails, the
    others are stopped, and the first failure's exit status is returned.

    Args:
      command: the program and its arguments, e.g. ``[sys.executable, "-m", "ssc_jax.run",
        "analyze", "runs/r34"]``.
      processes: how many to start.
      env: their environment (default: this one's); ``JAX_PLATFORMS`` is set to ``cpu``.
      timeout: seconds before every process is stopped and ``TimeoutError`` raised.
    """
    address = f"{LOOPBACK}:{free_port()}"
    env = {**(os.environ if env is None else env), "JAX_PLATFORMS": "cpu"}
    with contextlib.ExitStack() as stack:
        logs, running = [], []
        for i in range(processes):
            flags = ["--coordinator", address, "--processes", str(processes), "--process-id"]
            log = None if i == 0 else stack.enter_context(tempfile.TemporaryFile("w+"))
            out = None if i == 0 else subprocess.DEVNULL
            argv = [*command, *flags, str(i)]
            running.append(subprocess.Popen(argv, env=env, stdout=out, stderr=log))
            logs.append(log)
        stack.callback(_stop, running)
        status = _wait(running, timeout)
        for i, (proc, log) in enumerate(zip(running, logs, strict=True)):
            if log is not None and proc.returncode not in (0, None):
                log.seek(0)
                print(f"[process {i}] {log.read()}", file=sys.stderr, end="")
        return status


def _wait(running: list[subprocess.Popen], timeout: float | None) -> int:
    """The first non-zero exit status of ``running``, or 0 once all have exited."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [proc.poll() for proc in running]
        failed = [code for code in codes if code not in (0, None)]
        if failed:
            return failed[0]
        if None not in codes:
            return 0
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{len(running)} processes still running after {timeout} s")
        time.sleep(0.1)


def _stop(running: list[subprocess.Popen]) -> None:
    """Terminate the processes still running, and kill those that do not stop in time."""
    for proc in running:
        if proc.poll() is None:
            proc.terminate()
    for proc in running:
        try:
            proc.wait(_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
