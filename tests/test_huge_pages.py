"""The command line's re-execution with glibc's huge-page tunable (core/huge_pages.py)."""

import os
import subprocess
import sys

import pytest

from ssc_jax.core import huge_pages
from ssc_jax.core.huge_pages import TUNABLE, huge_page_environment, thp_mode

GLIBC = (2, 36)


def test_adds_the_tunable_in_madvise_mode():
    env = huge_page_environment({"HOME": "/h"}, "madvise", GLIBC)
    assert env == {"HOME": "/h", "GLIBC_TUNABLES": f"{TUNABLE}=1"}


def test_keeps_the_users_other_tunables():
    env = huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}=1"


@pytest.mark.parametrize(
    ("environ", "mode", "glibc"),
    [
        ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, "madvise", GLIBC),  # the user's choice
        ({"GLIBC_TUNABLES": f"a=1:{TUNABLE}=1"}, "madvise", GLIBC),  # already re-executed
        ({}, "always", GLIBC),  # every mapping gets huge pages already
        ({}, "never", GLIBC),
        ({}, None, GLIBC),
        ({}, "madvise", (2, 34)),  # no such tunable
        ({}, "madvise", None),  # another C library
    ],
)
def test_changes_nothing_where_it_would_not_help(environ, mode, glibc):
    assert huge_page_environment(environ, mode, glibc) is None


def test_reads_the_kernels_mode(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert thp_mode(path) == "madvise"
    assert thp_mode(tmp_path / "missing") is None


def test_re_executes_with_the_same_arguments_and_the_tunable():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    wanted = huge_page_environment(env, thp_mode(), huge_pages.glibc_version())
    script = (
        "import os, sys; from ssc_jax.core.huge_pages import with_huge_pages; "
        "with_huge_pages(); print(repr(os.environ.get('GLIBC_TUNABLES', '')), sys.argv[1:])"
    )
    command = [sys.executable, "-c", script, "x", "--y"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    tunables = "" if wanted is None else wanted["GLIBC_TUNABLES"]
    assert out.strip() == f"{tunables!r} ['x', '--y']"
