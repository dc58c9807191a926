"""``analyze``: one checkpoint's SSC graphs and everything the paper reads from them.

Per layer: modularity (Fig 1/2 a at one epoch), pairwise SSC-CKA and linear CKA (Fig 3-7),
spectral embeddings (Fig 8); on the last layer: Table 1 and the confidently wrong inputs
with their class affinities and top neighbours (Fig 9).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.graphs.communities import class_affinity, label_agreement, top_neighbours
from ssc_jax.graphs.spectral import spectral_embedding
from ssc_jax.pipeline import findings, plots
from ssc_jax.pipeline.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SOLVER,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.inputs import (
    AnalysisInputs,
    held_out_data,
    load_inputs,
    resolve_epoch,
    run_info,
)
from ssc_jax.pipeline.layer_graphs import LayerGraphs, checkpoint_graphs, export_graphs
from ssc_jax.pipeline.report import Report
from ssc_jax.pipeline.summary import SOLVER_HEADERS, graph_summary, solver_rows


class WrongInput(NamedTuple):
    """An input the network got confidently wrong; indices are into the analysis set."""

    index: int
    true: int
    predicted: int
    confidence: float
    class_scores: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray


class CheckpointAnalysis(NamedTuple):
    """Everything ``analyze`` computes. Arrays: ``probs`` (n, K), ``modularity`` (L,),
    ``ssc_cka`` and ``linear_cka`` (L, L), ``embedded`` (m,) the inputs in Fig 8 and
    ``embeddings`` [(layer, (m, 2))]."""

    run: str
    epoch: int
    inputs: AnalysisInputs
    graphs: LayerGraphs
    probs: np.ndarray
    modularity: np.ndarray
    ssc_cka: np.ndarray
    linear_cka: np.ndarray
    table1: dict[str, float]
    embedded: np.ndarray
    embeddings: list[tuple[str, np.ndarray]]
    wrong: list[WrongInput]


def embedding_layers(n_layers: int, count: int = 6) -> list[int]:
    """Up to ``count`` layer indices spread evenly from the first layer to the last."""
    return sorted({round(x) for x in np.linspace(0, n_layers - 1, min(count, n_layers))})


# Fewer correctly classified inputs than this, and Fig 8 embeds every input instead.
MIN_EMBEDDED = 10


def embedded_inputs(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices of the inputs for Fig 8: the correctly classified ones, as in the paper
    (Sec. 6.1), or every input when fewer than ``MIN_EMBEDDED`` are."""
    correct = np.flatnonzero(np.asarray(predicted) == np.asarray(labels))
    return correct if correct.size >= MIN_EMBEDDED else np.arange(len(labels))


def confidently_wrong(
    A: np.ndarray, labels: np.ndarray, probs: np.ndarray, count: int, k: int = 8
) -> list[WrongInput]:
    """The ``count`` misclassified inputs with the highest softmax score, read on graph A."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    scores = np.asarray(class_affinity(A, labels, n_classes=probs.shape[1]))
    out = []
    for i in wrong:
        neighbours, weights = top_neighbours(A, int(i), k=k)
        out.append(
            WrongInput(
                int(i),
                int(labels[i]),
                int(predicted[i]),
                float(confidence[i]),
                scores[i],
                np.asarray(neighbours),
                np.asarray(weights),
            )
        )
    return out


def analyze_checkpoint(
    run_dir: str | Path,
    *,
    epoch: int | None = None,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SOLVER,
    n_wrong: int = 3,
    progress: bool = True,
) -> CheckpointAnalysis:
    """Analyse the checkpoint of ``epoch`` (default: the last) of the run in ``run_dir``."""
    epoch = resolve_epoch(run_dir, epoch)
    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))
    graphs = checkpoint_graphs(
        run_dir, epoch, inputs, analysis=analysis, solver=solver, progress=progress
    )
    probs = graphs.probs
    A = graphs.affinity
    modularity, ssc_cka, linear_cka = graph_summary(
        A, graphs.grams, inputs.labels, len(inputs.class_names)
    )
    last = A[-1]
    agreement = label_agreement(
        last, inputs.labels, probs.argmax(axis=1), n_classes=len(inputs.class_names)
    )
    table1 = {name: float(getattr(agreement, name)) for name in agreement._fields}
    embedded = embedded_inputs(inputs.labels, probs.argmax(axis=1))
    subgraph = np.ix_(embedded, embedded)
    embeddings = [
        (
            graphs.layers[i],
            np.asarray(spectral_embedding(A[i][subgraph], n_components=2, normalized=False)),
        )
        for i in embedding_layers(len(graphs.layers))
    ]
    wrong = confidently_wrong(last, inputs.labels, probs, n_wrong)
    return CheckpointAnalysis(
        str(run_dir),
        epoch,
        inputs,
        graphs,
        probs,
        modularity,
        ssc_cka,
        linear_cka,
        table1,
        embedded,
        embeddings,
        wrong,
    )


def _wrong_figure(result: CheckpointAnalysis, w: WrongInput):
    names = result.inputs.class_names
    images = result.inputs.images
    caption = f"true: {names[w.true]}\npredicted: {names[w.predicted]} ({w.confidence:.2f})"
    captions = [
        f"{names[result.inputs.labels[j]]} ({a:.2f})"
        for j, a in zip(w.neighbours, w.weights, strict=True)
    ]
    return plots.plot_wrong_input(
        images[w.index],
        caption,
        w.class_scores,
        names,
        images[w.neighbours],
        captions,
        highlight=(w.true, w.predicted),
    )


def write_checkpoint(result: CheckpointAnalysis, out_dir: Path, report: Report) -> dict:
    """Write figures and graphs of ``result`` under ``out_dir``, add its report sections,
    and return its ``metrics.json`` entries."""
    figures = out_dir / "figures"
    layers = result.graphs.layers
    names = result.inputs.class_names
    tag = f"epoch {result.epoch}"
    graph_file = export_graphs(result.graphs, result.epoch, out_dir / "graphs")

    found = [
        findings.modularity_grows(layers, result.modularity),
        findings.labels_agree(result.table1, layers[-1]),
    ]
    report.heading(f"The paper's findings on this checkpoint ({tag})")
    report.table(["finding", "holds here", "evidence"], findings.as_rows(found))
    report.heading(f"Table 1: SSC labels of the last conv layer ({layers[-1]}) vs. the network")
    t = result.table1
    report.table(
        ["SSC label accuracy", "network accuracy", "agreement"],
        [[t["ssc_label_accuracy"], t["network_accuracy"], t["agreement"]]],
        caption="SSC label: the class with the largest summed affinity (neighbours' true labels).",
    )
    report.heading("Modularity of each layer's SSC graph (class labels as communities)")
    fig = plots.plot_modularity_by_layer(
        {tag: (layers, result.modularity)}, title=f"Modularity per layer, {tag}"
    )
    report.figure(plots.save_figure(fig, figures, "modularity_by_layer"))
    report.table(
        ["layer", "modularity", *SOLVER_HEADERS],
        [
            [name, float(q), *row]
            for name, q, row in zip(
                layers, result.modularity, solver_rows(result.graphs.diagnostics), strict=True
            )
        ],
        caption="Solver diagnostics per layer (ADMM).",
    )
    report.heading("Pairwise similarity of all layers (Fig 3-7 style)")
    fig = plots.plot_cka_heatmaps(
        [("SSC-CKA", result.ssc_cka, layers), ("linear CKA", result.linear_cka, layers)],
        title=f"Layer-by-layer CKA, {tag}",
        colorbar_label="CKA",
    )
    report.figure(plots.save_figure(fig, figures, "cka_heatmaps"))
    report.heading("Spectral embeddings of the SSC graphs (Fig 8)")
    labels = result.inputs.labels
    fig = plots.plot_spectral_embeddings(result.embeddings, labels[result.embedded], names)
    correct = int(np.sum(result.probs.argmax(axis=1) == labels))
    report.figure(
        plots.save_figure(fig, figures, "spectral_embeddings"),
        "Top two eigenvectors of each layer's affinity graph restricted to "
        + (
            f"all {labels.size} analysis inputs (fewer than {MIN_EMBEDDED} are classified "
            "correctly)"
            if correct < MIN_EMBEDDED
            else f"the {result.embedded.size} correctly classified inputs, as in the paper"
        )
        + ", coloured by their true class.",
    )
    report.heading("Confidently wrong inputs and their SSC neighbourhoods (Fig 9)")
    if not result.wrong:
        report.text("The network classified every analysis input correctly.")
    for k, w in enumerate(result.wrong):
        report.figure(
            plots.save_figure(_wrong_figure(result, w), figures, f"wrong_input_{k + 1}"),
            f"Input {w.index}: its class-affinity distribution on {layers[-1]} and its "
            "8 strongest neighbours (class, affinity).",
        )
    return {
        "run": result.run,
        "epoch": result.epoch,
        "n": len(result.inputs.labels),
        "data": result.inputs.key["data"],
        "split": result.inputs.key["split"],
        "class_names": names,
        "layers": layers,
        "modularity": result.modularity,
        "ssc_cka": result.ssc_cka,
        "linear_cka": result.linear_cka,
        **result.table1,
        "neighbour_labels": "ground truth",
        "embedded_inputs": int(result.embedded.size),
        "findings": findings.as_json(found),
        "solver_diagnostics": result.graphs.diagnostics,
        "confidently_wrong": [
            {
                "index": w.index,
                "true": names[w.true],
                "predicted": names[w.predicted],
                "confidence": w.confidence,
                "class_affinity": w.class_scores,
                "neighbours": w.neighbours,
                "neighbour_weights": w.weights,
            }
            for w in result.wrong
        ],
        "graph_file": graph_file.relative_to(out_dir),
    }
