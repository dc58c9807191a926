"""``python -m ssc_jax`` is ``python -m ssc_jax.run``."""

import sys

from ssc_jax.pipeline.cli.main import main

sys.exit(main())
