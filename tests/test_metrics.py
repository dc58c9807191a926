"""metrics.json is made from the result objects by one function."""

from typing import NamedTuple

import numpy as np

from ssc_jax.pipeline.analysis import metrics
from ssc_jax.pipeline.analysis.analyze import CheckpointAnalysis
from ssc_jax.pipeline.analysis.compare import Comparison, CrossSimilarity, RunSummary
from ssc_jax.pipeline.analysis.dynamics import Dynamics
from ssc_jax.pipeline.analysis.tau_path import TauPath


class Part(NamedTuple):
    similarity: dict
    hidden: object

    METRICS = metrics.layout(similarity=metrics.spread("{}_part"), hidden=None)


class Whole(NamedTuple):
    modularity: np.ndarray
    renamed: float
    parts: list
    one: Part
    added: np.ndarray

    METRICS = metrics.layout(renamed="renamed_key")


def test_each_field_goes_under_its_name_unless_its_layout_says_otherwise():
    part = Part({"ssc_cka": np.eye(2), "mine": np.ones(2)}, hidden=object())
    whole = Whole(np.array([0.5, np.nan]), 2.0, [part, part], part, np.arange(3))
    found = metrics.metrics_of(whole)
    expected_part = {"ssc_cka_part": [[1.0, 0.0], [0.0, 1.0]], "mine_part": [1.0, 1.0]}
    assert found == {
        "modularity": [0.5, None],
        "renamed_key": 2.0,
        "parts": [expected_part, expected_part],
        "one": expected_part,
        "added": [0, 1, 2],
    }


def test_every_layout_rule_names_a_field_of_its_result():
    for result in (CheckpointAnalysis, Dynamics, TauPath, Comparison, RunSummary, CrossSimilarity):
        assert set(result.METRICS) <= set(result._fields), result.__name__


def test_an_analysis_writes_each_field_it_does_not_leave_out(analyzed):
    """The fields written under their own names are keys of a real analysis's metrics."""
    _, found = analyzed
    own = set(CheckpointAnalysis._fields) - set(CheckpointAnalysis.METRICS)
    assert own <= set(found)
    assert {"n", "layers", "solver_diagnostics", "graph_file", "ssc_cka"} <= set(found)
