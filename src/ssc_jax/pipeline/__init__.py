"""The analysis pipeline behind ``python -m ssc_jax.run``: graphs, metrics, figures, report."""

from ssc_jax.pipeline.analysis.measures import register_measure
from ssc_jax.pipeline.publish.api import analyze_activations, analyze_grams, write_analysis
from ssc_jax.pipeline.publish.torch_api import analyze_torch, compare_models

__all__ = [
    "analyze_activations",
    "analyze_grams",
    "analyze_torch",
    "compare_models",
    "register_measure",
    "write_analysis",
]
