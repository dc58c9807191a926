"""``python -m ssc_jax.run``: the command line (see :mod:`ssc_jax.pipeline.cli.main`)."""

import sys

from ssc_jax.core.huge_pages import with_huge_pages


def main() -> int:
    """The command line, in a process that gets transparent huge pages where the kernel
    and glibc give them (`with_huge_pages`)."""
    with_huge_pages()
    from ssc_jax.pipeline.cli.main import main as command_line

    return command_line()


if __name__ == "__main__":
    sys.exit(main())
