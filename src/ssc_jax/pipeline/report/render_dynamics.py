"""The report sections of ``dynamics``: findings over training, Fig 1/2 with its tables and
Fig 6, every number with its interval where computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.dynamics import Dynamics
from ssc_jax.pipeline.analysis.measures import title_of
from ssc_jax.pipeline.report import plots
from ssc_jax.pipeline.report.html import Section
from ssc_jax.pipeline.report.render import (
    FINDING_HEADERS,
    curve_intervals,
    interval_heading,
    overview,
    with_interval_rows,
)
from ssc_jax.pipeline.report.wording import inputs_text, layers_text, model_text, split_columns


def _per_epoch_tables(section: Section, result: Dynamics) -> None:
    """Network accuracy and modularity per layer and epoch, then each measure of a layer to
    its final state per epoch, every number followed by its interval where computed, as
    tables a page wide: epochs as rows when they are more than the rows of numbers, else as
    columns."""
    ci = result.intervals
    interval_name = interval_heading(result) if ci else ""

    def along(key: str, j: int) -> np.ndarray | None:
        return ci[key][:, j] if ci else None

    accuracy = [("network accuracy", result.network_accuracy.tolist(), None)]
    tables = {
        "Network accuracy on the analysis inputs and modularity Q per layer and epoch": accuracy
        + [
            (f"Q {name}", result.modularity[:, j].tolist(), along("modularity_per_epoch_ci", j))
            for j, name in enumerate(result.layers)
        ]
    }
    if len(result.epochs) > 1:
        tables["Each measure of a layer against the same layer at the final epoch"] = [
            (f"{title_of(name)} {layer}", values[:, j].tolist(), along(f"{name}_to_final_ci", j))
            for name, values in result.to_final.items()
            for j, layer in enumerate(result.layers)
        ]
    for caption, quantities in tables.items():
        rows = with_interval_rows(quantities, interval_name)
        if len(result.epochs) > len(rows):
            headers = ["epoch", *(row[0] for row in rows)]
            rows = [list(r) for r in zip(result.epochs, *(row[1:] for row in rows), strict=True)]
        else:
            headers = ["", *(f"epoch {e}" for e in result.epochs)]
        if ci:
            caption += f", each followed by its {interval_name} (docs/statistics.md)"
        for part_headers, part_rows in split_columns(headers, rows):
            section.table(part_headers, part_rows, caption=caption + ".")


def render_dynamics(result: Dynamics, *, opening: bool = True) -> list[Section]:
    """The sections of ``dynamics``: an overview (unless ``opening`` is off, for a report
    that already has one), findings, Fig 1/2 with its table, and Fig 6."""
    layers = result.layers
    first, last = result.network_accuracy[0], result.network_accuracy[-1]
    sections = []
    if opening:
        e0, e1 = result.epochs[0], result.epochs[-1]
        sections.append(
            overview(
                [
                    ("model", model_text(result.trained.config)),
                    (
                        "epochs",
                        f"{len(result.epochs)} checkpoints, epochs {e0} to {e1} ({result.run})",
                    ),
                    ("analysis inputs", inputs_text(result.inputs)),
                    ("network accuracy", f"{first:.3f} at epoch {e0}, {last:.3f} at epoch {e1}"),
                    ("layers", layers_text(layers)),
                ]
            )
        )
    if result.findings:
        found = Section("The paper's findings on this run's training")
        found.table(FINDING_HEADERS, findings.as_rows(result.findings))
        sections.append(found)

    curves = Section("Training dynamics (Fig 1/2)")
    curves.figure(
        "dynamics",
        plots.plot_dynamics(
            result.epochs,
            layers,
            result.modularity,
            {title_of(name): values for name, values in result.to_final.items()},
            title=f"{Path(result.run).name}: each layer over training, against its final state",
            intervals=curve_intervals(result.intervals, "modularity_per_epoch", "_to_final"),
        ),
        (
            f"Error bars: each number's {interval_heading(result)} (docs/statistics.md)."
            if result.intervals
            else ""
        ),
    )
    _per_epoch_tables(curves, result)
    if len(result.epochs) > 1:
        curves.table(
            ["layer", *(title_of(name) for name in result.to_final)],
            [
                [layer, *(float(np.mean(v[:-1, i])) for v in result.to_final.values())]
                for i, layer in enumerate(layers)
            ],
            caption="Each layer's similarity to its final state, averaged over the epochs "
            "before the last: the lower, the later the layer settles.",
        )

    heatmaps = Section("Pairwise similarity at chosen epochs (Fig 6)")
    for name in result.to_final:
        panels = [
            (
                f"epoch {e} (acc {result.network_accuracy[result.epochs.index(e)]:.2f})",
                m[name],
                layers,
            )
            for e, m in result.heatmaps.items()
        ]
        title = title_of(name)
        heatmaps.figure(
            f"epoch_heatmaps_{name}",
            plots.plot_cka_heatmaps(panels, title=f"{title} between layers", colorbar_label=title),
        )
    iterations = result.diagnostics["iterations"]
    not_converged = int(np.sum(~result.diagnostics["converged"].astype(bool)))
    heatmaps.text(
        f"Solver: {result.modularity.size} problems, {not_converged} did not converge; "
        f"iterations {int(iterations.min())}-{int(iterations.max())}.",
        note=True,
    )
    return [*sections, curves, heatmaps]
