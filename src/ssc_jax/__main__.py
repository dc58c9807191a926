"""``python -m ssc_jax`` is ``python -m ssc_jax.run``."""

import sys

from ssc_jax.run import main

sys.exit(main())
