"""Per-checkpoint numbers shared by every command: modularity and the two CKA matrices."""

from __future__ import annotations

import numpy as np

from ssc_jax.graphs.communities import modularity
from ssc_jax.pipeline.graph_store import DIAGNOSTICS
from ssc_jax.similarity.cka import cka_matrix

SOLVER_HEADERS = [
    "iterations",
    "converged",
    "primal residual",
    "dual residual",
    "certified gap",
    "objective",
]


def graph_summary(
    A: np.ndarray, grams: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modularity (L,) of each affinity graph in A (L, n, n) with ``labels`` (n,) as
    communities, pairwise SSC-CKA (L, L) of A and linear CKA (L, L) of the Grams (L, n, n)."""
    return (
        np.asarray(modularity(A, labels, n_classes=n_classes)),
        np.asarray(cka_matrix(A)),
        np.asarray(cka_matrix(grams)),
    )


def solver_rows(diagnostics: dict[str, np.ndarray]) -> list[list]:
    """One report-table row per layer, in the order of ``SOLVER_HEADERS``."""
    columns = [np.asarray(diagnostics[name]).tolist() for name in DIAGNOSTICS]
    return [list(row) for row in zip(*columns, strict=True)]
