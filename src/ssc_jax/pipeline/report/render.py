"""The report sections and figures of each analysis, drawn from its computed result.

Nothing here writes a file: each function returns ``report.Section`` objects holding
matplotlib figures, which ``pipeline.publish`` writes out, or a notebook shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.analyze import MIN_EMBEDDED, CheckpointAnalysis, WrongInput
from ssc_jax.pipeline.analysis.compare import Comparison
from ssc_jax.pipeline.analysis.measures import most_alike, title_of
from ssc_jax.pipeline.analysis.summary import solver_columns
from ssc_jax.pipeline.report import plots, plots_inputs
from ssc_jax.pipeline.report.html import Section
from ssc_jax.pipeline.report.wording import (
    given_model_text,
    heading,
    inputs_text,
    layers_text,
    model_text,
    setting_text,
    tokens_text,
)

FINDING_HEADERS = ["finding", "holds here", "evidence"]
TABLE1_HEADERS = {
    "ssc_label_accuracy": "SSC label accuracy",
    "network_accuracy": "network accuracy",
    "agreement": "agreement",
}


def interval_text(ci) -> str:
    """An interval (low, high) as "[low, high]"."""
    low, high = (float(v) for v in ci)
    return f"[{low:.3g}, {high:.3g}]"


def interval_heading(result) -> str:
    """The heading of the intervals of a result computed with resampling: "90% interval"."""
    return f"{result.resampling.level:.0%} interval"


def with_interval_rows(
    rows: Sequence[tuple[str, Sequence[float], np.ndarray | None]], interval_name: str
) -> list[list]:
    """Table rows ``[name, *values]``, each followed by ``[name interval_name, *intervals]``
    where its (len(values), 2) intervals are given (not None)."""
    table = []
    for name, values, ci in rows:
        table.append([name, *values])
        if ci is not None:
            table.append([f"{name} {interval_name}", *map(interval_text, ci)])
    return table


def curve_intervals(
    intervals: Mapping[str, np.ndarray], modularity: str, suffix: str
) -> dict[str, np.ndarray]:
    """The error bars of a figure of curves over epochs or taus, keyed as its panels are:
    ``"modularity"`` (from the key ``modularity + "_ci"``) and each measure's title (from
    the keys ``measure + suffix + "_ci"``); empty without intervals."""
    if not intervals:
        return {}
    bars = {"modularity": intervals[modularity + "_ci"]}
    end = suffix + "_ci"
    bars |= {
        title_of(key.removesuffix(end)): value
        for key, value in intervals.items()
        if key.endswith(end)
    }
    return bars


def _kind(similarity: Mapping[str, np.ndarray]) -> str:
    """The colour bar's label of heatmaps of ``similarity``: "CKA" when every measure is a
    CKA, else "similarity"."""
    titles = [title_of(name) for name in similarity]
    return "CKA" if all(t.endswith("CKA") for t in titles) else "similarity"


def overview(pairs: Sequence[tuple[str, object]]) -> Section:
    """The report's opening box: what was analysed (no heading)."""
    section = Section()
    section.facts(pairs)
    return section


def checkpoint_facts(result: CheckpointAnalysis) -> list[tuple[str, str]]:
    """What one analysed network is, for the report's opening box: a run's model and
    checkpoint, or the model given by its activations; the inputs, accuracy and layers, and
    how the layers were chosen and their tokens pooled where that was recorded."""
    layers = result.graphs.layers
    if result.epoch is None:
        facts = [("model", given_model_text(result.run))]
    else:
        facts = [
            ("model", model_text(result.trained.config)),
            ("checkpoint", f"epoch {result.epoch} of {result.trained.last_epoch} ({result.run})"),
        ]
    accuracy = result.table1.get("network_accuracy")
    return [
        *facts,
        ("analysis inputs", inputs_text(result.inputs)),
        (
            "network accuracy",
            "not given" if accuracy is None else f"{accuracy:.3f} on these inputs",
        ),
        ("layers", layers_text(layers)),
        *([("layer selection", result.layer_selection)] if result.layer_selection else []),
        *([("token pooling", tokens_text(result.tokens))] if result.tokens else []),
    ]


def wrong_input_figure(result: CheckpointAnalysis, wrong: WrongInput) -> Figure:
    """Fig 9 for one confidently wrong input of ``result``."""
    names = result.inputs.class_names
    images = result.inputs.images
    caption = (
        f"true: {names[wrong.true]}\npredicted: {names[wrong.predicted]} ({wrong.confidence:.2f})"
    )
    captions = [
        f"{names[result.inputs.labels[j]]} ({a:.2f})"
        for j, a in zip(wrong.neighbours, wrong.weights, strict=True)
    ]
    return plots_inputs.plot_wrong_input(
        images[wrong.index],
        caption,
        wrong.class_scores,
        names,
        images[wrong.neighbours],
        captions,
        highlight=(wrong.true, wrong.predicted),
    )


def render_checkpoint(result: CheckpointAnalysis) -> list[Section]:
    """The sections of ``analyze``: findings, Table 1, modularity, CKA, Fig 8 and Fig 9."""
    layers = result.graphs.layers
    tag = "given activations" if result.epoch is None else f"epoch {result.epoch}"
    head = overview(checkpoint_facts(result))

    network = "model" if result.epoch is None else "checkpoint"
    found = Section(f"The paper's findings on this {network} ({tag})")
    found.table(FINDING_HEADERS, findings.as_rows(result.findings))

    table1 = Section(
        f"Table 1: SSC labels of the last analysed layer ({layers[-1]}) vs. the network"
    )
    t = result.table1
    ci = result.intervals
    table1.table(
        [TABLE1_HEADERS[name] for name in t],
        [
            list(t.values()),
            *([[interval_text(ci[name + "_ci"]) for name in t]] if ci else []),
        ],
        caption="SSC label: the class with the largest summed affinity (neighbours' true labels)."
        + (f" Second row: the {interval_heading(result)}s (docs/statistics.md)." if ci else ""),
    )

    modularity = Section("Modularity of each layer's SSC graph (class labels as communities)")
    modularity.figure(
        "modularity_by_layer",
        plots.plot_modularity_by_layer(
            {tag: (layers, result.modularity)},
            title=f"Modularity per layer, {tag}",
            intervals={tag: ci["modularity_ci"]} if ci else None,
        ),
    )
    solver = solver_columns(result.graphs.diagnostics)
    modularity.table(
        ["layer", "modularity", *map(heading, solver)],
        [
            [name, float(q), *row]
            for name, q, *row in zip(layers, result.modularity, *solver.values(), strict=True)
        ],
        caption=(
            "The solver's own diagnostics per layer under their own names, then whether its "
            "stopping tests passed, the certified relative duality gap (a bound on the "
            "objective's relative distance from the optimum) and the objective."
        ),
    )
    uncertainty = {}
    if ci:
        uncertainty[interval_heading(result)] = [interval_text(c) for c in ci["modularity_ci"]]
    if result.modularity_p is not None:
        uncertainty["p (permuted labels)"] = [float(p) for p in result.modularity_p]
    if uncertainty:
        modularity.table(
            ["layer", "modularity", *uncertainty],
            [
                [name, float(q), *row]
                for name, q, *row in zip(
                    layers, result.modularity, *uncertainty.values(), strict=True
                )
            ],
            caption="How far each modularity would move with another sample of as many "
            "inputs (its interval), and how often labels unrelated to the graph would "
            "separate it as well (its p-value against permuted labels); docs/statistics.md.",
        )
    missed = result.metrics["unconverged_layers"]
    if missed:
        modularity.text(
            f"The solve stopped at its iteration cap, short of the tolerance, on "
            f"{len(missed)} of {len(layers)} layers ({', '.join(missed)}): their graphs and "
            "numbers are approximate; rerun with a larger --max-rounds (working set) or "
            "--max-iter (ADMM).",
            note=True,
        )

    similarity = Section("Pairwise similarity of all layers (Fig 3-7 style)")
    similarity.figure(
        "cka_heatmaps",
        plots.plot_cka_heatmaps(
            [(title_of(name), m, layers) for name, m in result.similarity.items()],
            title=f"Layer-by-layer {_kind(result.similarity)}, {tag}",
            colorbar_label=_kind(result.similarity),
        ),
    )
    if len(layers) > 1:
        bounds = [ci[name + "_ci"] for name in result.similarity] if ci else []
        similarity.table(
            [
                "layer",
                "next layer",
                *(title_of(name) for name in result.similarity),
                *(
                    f"{title_of(name)} {interval_heading(result)}"
                    for name in (result.similarity if ci else ())
                ),
            ],
            [
                [
                    layers[i],
                    layers[i + 1],
                    *(float(m[i, i + 1]) for m in result.similarity.values()),
                    *(interval_text(b[i, i + 1]) for b in bounds),
                ]
                for i in range(len(layers) - 1)
            ],
            caption="Each measure between consecutive layers (the first off-diagonal of the "
            "heatmaps), and its interval where computed.",
        )

    embeddings = Section("Spectral embeddings of the SSC graphs (Fig 8)")
    labels = result.inputs.labels
    if result.probs is None:
        embedded = f"all {labels.size} analysis inputs (the network's predictions are not given)"
    elif np.sum(result.probs.argmax(axis=1) == labels) < MIN_EMBEDDED:
        embedded = (
            f"all {labels.size} analysis inputs "
            f"(fewer than {MIN_EMBEDDED} are classified correctly)"
        )
    else:
        embedded = f"the {result.embedded.size} correctly classified inputs, as in the paper"
    embeddings.figure(
        "spectral_embeddings",
        plots_inputs.plot_spectral_embeddings(
            result.embeddings, labels[result.embedded], result.inputs.class_names
        ),
        f"Top two eigenvectors of each layer's affinity graph restricted to {embedded}, "
        "coloured by their true class.",
    )

    wrong = Section("Confidently wrong inputs and their SSC neighbourhoods (Fig 9)")
    if result.probs is None:
        wrong.text("Not drawn: the network's predictions were not given.")
    elif not result.wrong:
        wrong.text("The network classified every analysis input correctly.")
    elif result.inputs.images is None:
        wrong.text("Not drawn: the input images were not given.")
    for k, w in enumerate(result.wrong if result.inputs.images is not None else []):
        wrong.figure(
            f"wrong_input_{k + 1}",
            wrong_input_figure(result, w),
            f"Input {w.index}: its class-affinity distribution on {layers[-1]} and its "
            "8 strongest neighbours (class, affinity).",
        )
    return [head, found, table1, modularity, similarity, embeddings, wrong]


def render_comparison(result: Comparison) -> list[Section]:
    """The sections of ``compare``: the runs, their heatmaps side by side, and modularity."""
    runs = result.runs
    table = Section("Networks compared")
    table.table(
        ["run", "model", "epoch", "layers", "network accuracy", "Q first layer", "Q last layer"],
        [
            [
                r.name,
                "saved activations" if r.trained is None else model_text(r.trained.config),
                "-" if r.epoch is None else r.epoch,
                len(r.layers),
                "not given" if r.network_accuracy is None else r.network_accuracy,
                float(r.modularity[0]),
                float(r.modularity[-1]),
            ]
            for r in runs
        ],
    )
    heatmaps = Section("Pairwise similarity side by side (Fig 3/4/5/7)")
    for name in runs[0].similarity:
        panels = [(_network_title(r), r.similarity[name], r.layers) for r in runs]
        label = title_of(name)
        heatmaps.figure(
            f"compare_{name}",
            plots.plot_cka_heatmaps(panels, title=f"{label} between layers", colorbar_label=label),
        )
    depth = Section("Modularity against depth")
    depth.figure(
        "compare_modularity",
        plots.plot_modularity_by_layer(
            {r.name: (r.layers, r.modularity) for r in runs},
            intervals={r.name: r.intervals["modularity_ci"] for r in runs if r.intervals},
        ),
    )
    sections = [table, heatmaps, depth]
    if result.cross:
        sections.append(render_cross(result.cross))
    return sections


def _network_title(run) -> str:
    if run.network_accuracy is None:
        return run.name
    return f"{run.name} (acc {run.network_accuracy:.2f})"


def render_cross(cross) -> Section:
    """The network-against-network section: for each pair, each measure between every layer
    of the first network (rows) and every layer of the other (columns), and each layer's most
    similar layer of the other network by each measure."""
    section = Section("Network against network: layer-by-layer similarity across networks")
    for k, c in enumerate(cross):
        section.figure(
            f"cross_{k + 1}",
            plots.plot_cka_heatmaps(
                [(title_of(name), m, c.layers_a) for name, m in c.similarity.items()],
                title=f"{c.a} (rows) against {c.b} (columns)",
                colorbar_label=_kind(c.similarity),
                col_layers=[c.layers_b] * len(c.similarity),
            ),
            f"Each cell compares a layer of {c.a} with a layer of {c.b} on the same inputs; "
            "a bright diagonal band means the two networks build their representations in "
            "the same order.",
        )
        best = {name: most_alike(name, m) for name, m in c.similarity.items()}
        headers = [f"layer of {c.a}"]
        for name in c.similarity:
            headers += [f"most similar layer of {c.b} ({title_of(name)})", title_of(name)]
            headers += ["interval"] if c.intervals else []
        rows = []
        for i, layer in enumerate(c.layers_a):
            row = [layer]
            for name, m in c.similarity.items():
                j = best[name][i]
                row += [c.layers_b[j], float(m[i, j])]
                row += [interval_text(c.intervals[name + "_ci"][i, j])] if c.intervals else []
            rows.append(row)
        section.table(headers, rows)
    return section


def settings_section(settings: Mapping[str, Mapping], version: str) -> Section:
    """The closing table of every report: the analysis and solver settings used."""
    section = Section("Settings")
    rows = [
        [f"{group}.{k}", setting_text(f"{group}.{k}", v)]
        for group in ("analysis", "solver")
        for k, v in settings[group].items()
    ]
    budget = settings["memory_budget_bytes"]
    rows.append(["memory_budget_bytes", setting_text("memory_budget_bytes", budget)])
    section.table(["setting", "value"], rows, caption="ssc-jax " + version)
    return section
