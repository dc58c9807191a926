"""What glibc's huge-page tunable (``ssc_jax.core.huge_pages``) buys the command line.

The same jitted program, run in two fresh processes, one with ``glibc.malloc.hugetlb=1`` in
``GLIBC_TUNABLES`` and one without, each timing ``--repeats`` calls after a first that
compiles. The program is what dominates a round of the working-set solver at N = 10,000
outside its small dense blocks: elementwise passes that write new (2, N, N) float32 arrays,
each of them a fresh allocation of 800 MB. Prints the seconds, page faults and system time of
each, and their ratio::

    python benchmarks/huge_pages.py --n 10000 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ssc_jax.core.huge_pages import TUNABLE, glibc_version, thp_mode

_CHILD = """
import json, resource, sys, time
import jax, jax.numpy as jnp
n, repeats = int(sys.argv[1]), int(sys.argv[2])
x = jnp.ones((2, n, n), jnp.float32)
passes = jax.jit(lambda a: (a * 1.0001 + 1.0, jnp.abs(a) > 0.5))
jax.block_until_ready(passes(x))
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
for _ in range(repeats):
    jax.block_until_ready(passes(x))
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "faults": after.ru_minflt - before.ru_minflt,
                  "system": after.ru_stime - before.ru_stime}))
"""


def run(n: int, repeats: int, tunable: str | None) -> dict:
    """One child process's timing, with ``GLIBC_TUNABLES`` set to ``tunable`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunable is not None:
        env["GLIBC_TUNABLES"] = tunable
    command = [sys.executable, "-c", _CHILD, str(n), str(repeats)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"kernel transparent huge pages: {thp_mode()}; glibc {glibc_version()}")
    print("| GLIBC_TUNABLES | s | page faults | system s |")
    print("|---|---:|---:|---:|")
    rows = {}
    for label, tunable in (("(unset)", None), (f"{TUNABLE}=1", f"{TUNABLE}=1")):
        rows[label] = run(args.n, args.repeats, tunable)
        r = rows[label]
        print(f"| {label} | {r['seconds']:.2f} | {r['faults']:,} | {r['system']:.1f} |")
    base, huge = rows.values()
    print(f"ratio (unset / tunable): {base['seconds'] / huge['seconds']:.2f}")


if __name__ == "__main__":
    main()
