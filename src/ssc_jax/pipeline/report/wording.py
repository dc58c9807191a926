"""How the report words what it shows: settings, numbers, models, inputs and wide tables
as a person writes them, never as Python reprs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ssc_jax.pipeline.analysis.inputs import AnalysisInputs

MAX_TABLE_COLUMNS = 12
"""Wider tables are split into several, each repeating the first column."""

# What a setting left as None means.
_DEFAULT_MEANING = {
    "analysis.data": "the run's test data",
    "memory_budget_bytes": "auto (half the device memory)",
    "analysis.tokens": "none (no layer has a token axis)",
}

# The names ``analyze_grams`` and ``analyze_activations`` give a network that came with none.
_UNNAMED = {"grams": "its layers' Grams", "activations": "its activations"}

# How each pooling of token activations (``nets.tokens``) reads in a report.
_POOLING = {
    "mean": "mean over each input's real tokens",
    "cls": "the first (class) token",
    "last": "each input's last real token",
    "flatten": "every token's vector side by side (T x D features)",
}

# Words a heading writes in capitals.
_ABBREVIATIONS = {"kkt": "KKT"}


def heading(name: str) -> str:
    """A table column's heading from a name: ``kkt_violation`` -> "KKT violation"."""
    return " ".join(_ABBREVIATIONS.get(word, word) for word in name.split("_"))


def _number(value: float) -> str:
    """``value`` as a person writes it: 10, 0.0015, 1e-6, 1e8, inf."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if not math.isfinite(value) or 1e-3 <= abs(value) < 1e5:
        return f"{value:.6g}"
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def setting_text(name: str, value) -> str:
    """A setting's value for the report: no Python reprs (None, True, tuples)."""
    if value is None:
        return _DEFAULT_MEANING.get(name, "auto")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("_bytes"):
        return f"{value / 2**30:.3g} GiB"
    if isinstance(value, int | float):
        return _number(float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{setting_text(name, value[0])} to {setting_text(name, value[1])}"
    if isinstance(value, list | tuple):
        return ", ".join(setting_text(name, v) for v in value)
    return str(value)


def model_text(config: Mapping) -> str:
    """The model of a training run and what it was trained on, from its recorded config."""
    extras = [f"width {_number(config['width'])}"] if config.get("width", 1.0) != 1.0 else []
    if config.get("data_fraction", 1.0) != 1.0:
        extras.append(f"{_number(100 * config['data_fraction'])}% of the training data")
    detail = f" ({', '.join(extras)})" if extras else ""
    return f"{config['model']}{detail}, trained on {Path(str(config['dataset'])).name}"


def given_model_text(source: str) -> str:
    """A network given without a training run: what it is called and what it came as."""
    if source in _UNNAMED:
        return f"a network given by {_UNNAMED[source]}"
    if Path(source).suffix or Path(source).exists():
        return f"a network given by its activations saved in {source}"
    return f"{source}, given by its activations"


def analysis_title(source: str, epoch: int | None, n: int, layers: int) -> str:
    """The report's title: the network (a run's checkpoint or a given model), its layers and N."""
    if epoch is not None:
        network = f"{Path(source).name}, epoch {epoch}"
    elif source in _UNNAMED:
        network = f"a network given by {_UNNAMED[source]}"
    else:
        network = Path(source).name or source
    return f"SSC analysis of {network}: {layers} layers on {n:,} inputs"


def tokens_text(tokens: str | None) -> str:
    """How token activations (n, T, D) were made one vector per input."""
    return _DEFAULT_MEANING["analysis.tokens"] if tokens is None else _POOLING[tokens]


def inputs_text(inputs: AnalysisInputs) -> str:
    data = Path(inputs.key["data"]).name
    split = inputs.key["split"]
    if split == "given":
        return f"N = {inputs.labels.size}, the inputs the activations were taken on"
    return f"N = {inputs.labels.size}, a stratified sample of the {split} split of {data}"


def layers_text(layers: Sequence[str]) -> str:
    return f"{len(layers)}: {layers[0]} to {layers[-1]}" if len(layers) > 1 else layers[0]


def split_columns(
    headers: Sequence[str], rows: Sequence[Sequence], width: int = MAX_TABLE_COLUMNS
) -> list[tuple[list[str], list[list]]]:
    """A table as tables of at most ``width`` columns, each led by the first column."""
    step = max(1, width - 1)
    return [
        (
            [headers[0], *headers[start : start + step]],
            [[r[0], *r[start : start + step]] for r in rows],
        )
        for start in range(1, max(len(headers), 2), step)
    ]
