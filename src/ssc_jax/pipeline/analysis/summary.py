"""Per-checkpoint numbers shared by every command: modularity and the similarity matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssc_jax.graphs.permutation import label_modularity
from ssc_jax.pipeline.analysis.measures import Measure, RowMoments, layer_similarity
from ssc_jax.pipeline.store.graph_store import OWN

# What every solver reports beside its own diagnostics, by the name its column shows.
SHARED_DIAGNOSTICS = {
    "converged": "converged",
    "certified_gap": "duality_gap",
    "objective": "objective",
}


def layer_modularity(A: Sequence, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Modularity (L,) of each of the L non-negative sparse affinity graphs in A, from its
    nonzeros (``permutation.label_modularity``)."""
    labels = np.asarray(labels)[None]
    return np.asarray([label_modularity(a, labels, n_classes)[0] for a in A], np.float32)


def graph_summary(
    A: Sequence,
    grams,
    labels: np.ndarray,
    n_classes: int,
    measures: Sequence[Measure],
    moments: RowMoments | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Modularity (L,) of each of the L sparse affinity graphs A (n, n) with ``labels`` (n,)
    as communities, and {name: (L, L)} of each of ``measures`` between every pair of layers,
    from A, the Grams (an (L, n, n) array or memmap) or, for measures of the row-centred
    Grams, the Grams and the layers' ``moments``.

    Peak memory besides the inputs: one dense n x n graph for modularity, and for the
    paper's measures O(nnz of A) for SSC-CKA and ``L * b * n`` float64 for linear CKA with b
    rows per block, see `ssc_jax.similarity.streamed.streamed_cka_matrix`; nothing of L n^2
    entries.
    """
    similarity = layer_similarity(measures, A, grams, moments)
    return layer_modularity(A, labels, n_classes), similarity


def solver_columns(diagnostics: dict) -> dict[str, list]:
    """The report table's solver columns by name, each a value per layer: the solver's own
    diagnostics under their names, then ``SHARED_DIAGNOSTICS``."""
    columns = {name: np.asarray(values).tolist() for name, values in diagnostics[OWN].items()}
    for name, key in SHARED_DIAGNOSTICS.items():
        columns[name] = np.asarray(diagnostics[key]).tolist()
    return columns
