"""The analysis pipeline behind ``python -m ssc_jax.run``: graphs, metrics, figures, report."""
