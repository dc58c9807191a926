"""``python -m ssc_jax.run``: the command line (see :mod:`ssc_jax.pipeline.cli.main`)."""

import sys

from ssc_jax.pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
