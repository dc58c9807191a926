"""``metrics.json`` from a result object, by one function.

Every field of a result goes into its metrics under its own name, unless the result's class
says otherwise in its ``METRICS`` `layout`, field name -> rule:

- ``None``: left out (the inputs' images, the Grams, the exported files' sources);
- a string: the key the field goes under;
- a function ``(value, result) -> dict``: the keys the field gives, such as one key per
  similarity measure (`spread`) or the inputs' size and origin (`INPUTS`).

A result held in a field, or a list of them, gives its own metrics. A new field of a result
therefore reaches ``metrics.json`` with no line written for it, and so does a newly
registered similarity measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.layer_graphs import unconverged_layers
from ssc_jax.pipeline.store.outputs import to_jsonable

Rule = None | str | Callable[[Any, Any], dict]


def metrics_of(result: Any) -> dict:
    """The ``metrics.json`` entries of ``result`` (a NamedTuple), JSON types only."""
    layout: Mapping[str, Rule] = getattr(type(result), "METRICS", {})
    out: dict = {}
    for field, value in zip(result._fields, result, strict=True):
        rule = layout.get(field, field)
        if rule is None:
            continue
        if callable(rule):
            out.update(rule(value, result))
        else:
            out[rule] = _entry(value)
    return to_jsonable(out)


def layout(**rules: Rule) -> Mapping[str, Rule]:
    """A result class's ``METRICS``: field name -> rule, for the fields not written as
    they are under their own name."""
    return MappingProxyType(rules)


def _entry(value: Any) -> Any:
    if hasattr(type(value), "METRICS"):
        return metrics_of(value)
    if isinstance(value, list) and value and hasattr(type(value[0]), "METRICS"):
        return [metrics_of(v) for v in value]
    return value


def spread(pattern: str = "{}") -> Callable[[Mapping[str, Any], Any], dict]:
    """A rule for a mapping such as {measure name: values}: each entry under the key
    ``pattern.format(name)``."""
    return lambda mapping, _: {pattern.format(name): v for name, v in mapping.items()}


def constant(key: str, value: Any) -> Callable[[Any, Any], dict]:
    """A rule that writes ``value`` under ``key`` (a fact of the method, not of the result)."""
    return lambda _value, _result: {key: value}


def inputs_keys(*keys: str) -> Callable[[Any, Any], dict]:
    """A rule for an `AnalysisInputs` field: ``keys`` of n (their count), data and split
    (where they were taken from) and class_names."""

    def rule(inputs, _) -> dict:
        facts = {
            "n": len(inputs.labels),
            "data": inputs.key["data"],
            "split": inputs.key["split"],
            "class_names": inputs.class_names,
        }
        return {key: facts[key] for key in keys}

    return rule


INPUTS = inputs_keys("n", "data", "split", "class_names")


def graphs_keys(graphs, _) -> dict:
    """A rule for a `LayerGraphs` field: the layers, their solves' diagnostics and the
    layers whose solve stopped unconverged."""
    return {
        "layers": graphs.layers,
        "solver_diagnostics": graphs.diagnostics,
        "unconverged_layers": unconverged_layers(graphs.layers, graphs.diagnostics),
    }


def unconverged_along(
    labels: Iterable[str], layers: list[str], diagnostics: Mapping[str, np.ndarray]
) -> dict[str, list[str]]:
    """{label: the unconverged layers} of the solves along a sequence of epochs or taus
    (``labels``) that left some unconverged; ``diagnostics`` maps each name to (S, L)."""
    found = {}
    for i, label in enumerate(labels):
        missed = unconverged_layers(layers, {k: v[i] for k, v in diagnostics.items()})
        if missed:
            found[label] = missed
    return found


def findings_rule(key: str = "findings") -> Callable[[list, Any], dict]:
    """A rule for a list of `Finding` (or of such lists, one per epoch or tau)."""

    def rule(found: list, _) -> dict:
        if found and isinstance(found[0], list):
            return {key: [findings.as_json(f) for f in found]}
        return {key: findings.as_json(found)}

    return rule


def graph_files(exports: Mapping[str, Any], _) -> dict:
    """A rule for the exported graph files: their paths in the output folder."""
    return {"graph_files": list(exports)}


def graph_file(exports: Mapping[str, Any], _) -> dict:
    """A rule for one network's exported graph file: its path in the output folder."""
    (path,) = exports
    return {"graph_file": path}
