"""The report sections of ``tau-path``: the figure over tau, Table 1 and the solver per tau."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.measures import title_of
from ssc_jax.pipeline.analysis.tau_path import TauPath
from ssc_jax.pipeline.report import plots
from ssc_jax.pipeline.report.html import Section
from ssc_jax.pipeline.report.render import (
    TABLE1_HEADERS,
    curve_intervals,
    interval_heading,
    interval_text,
    overview,
    with_interval_rows,
)
from ssc_jax.pipeline.report.wording import inputs_text, layers_text, model_text, split_columns


def render_tau_path(result: TauPath) -> list[Section]:
    """An overview, the paper's findings per tau, the figure (modularity, each graph
    measure's similarity to the reference tau and sparsity per layer over tau), Table 1 per
    tau, and the solver's work per tau; every number with its interval where computed."""
    taus = [f"{t:g}" for t in result.taus]
    ci = result.intervals
    interval_name = interval_heading(result) if ci else ""
    with_ci = f", each followed by its {interval_name} (docs/statistics.md)" if ci else ""

    def along(key: str, j: int) -> np.ndarray | None:
        return ci[key][:, j] if ci else None

    accuracy = result.table1["network_accuracy"][0]
    head = overview(
        [
            ("model", model_text(result.trained.config)),
            (
                "checkpoint",
                f"epoch {result.epoch} of {result.trained.last_epoch} ({result.run})",
            ),
            ("analysis inputs", inputs_text(result.inputs)),
            ("network accuracy", f"{accuracy:.3f} on these inputs"),
            ("layers", layers_text(result.layers)),
            ("tau", f"{', '.join(taus)}; reference {result.reference:g}"),
        ]
    )
    found = Section("The paper's findings on this checkpoint, at each tau")
    found.table(
        ["finding", *(f"tau {t}" for t in taus)],
        [
            [claim.claim, *(findings.verdict_of(at_tau[i]) for at_tau in result.findings)]
            for i, claim in enumerate(result.findings[0])
        ],
        caption="Whether each finding holds on the graphs solved at that tau"
        + (", decided on the interval of the difference it compares" if ci else "")
        + ".",
    )
    curves = Section("The graphs over tau")
    curves.figure(
        "tau_path",
        plots.plot_tau_path(
            result.taus,
            result.layers,
            result.modularity,
            {title_of(name): values for name, values in result.similarity.items()},
            result.nonzeros,
            reference=result.reference,
            title=f"{Path(result.run).name}, epoch {result.epoch}: each layer's graph over tau",
            intervals=curve_intervals(ci, "modularity_per_tau", "_to_reference_tau"),
        ),
        caption=(
            "A larger tau weighs the data fit more against sparsity, so each input is rebuilt "
            "from more others. A similarity near 1 means the layer's graph, and what is read "
            f"from it, hardly depends on tau around {result.reference:g}."
            + (f" Error bars: each number's {interval_name} (docs/statistics.md)." if ci else "")
        ),
    )
    headers = ["", *(f"tau {t}" for t in taus)]
    tables = {
        "Modularity Q per layer and tau": [
            (f"Q {name}", result.modularity[:, j].tolist(), along("modularity_per_tau_ci", j))
            for j, name in enumerate(result.layers)
        ],
        f"Each measure of a layer's graph against its graph at tau = {result.reference:g}": [
            (
                f"{title_of(name)} {layer}",
                values[:, j].tolist(),
                along(f"{name}_to_reference_tau_ci", j),
            )
            for name, values in result.similarity.items()
            for j, layer in enumerate(result.layers)
        ],
    }
    for caption, quantities in tables.items():
        rows = with_interval_rows(quantities, interval_name)
        for part_headers, part_rows in split_columns(headers, rows):
            curves.table(part_headers, part_rows, caption=caption + with_ci + ".")

    table1 = Section(f"Table 1 on the last analysed layer ({result.layers[-1]}) per tau")
    headers, columns = ["tau"], []
    for name, values in result.table1.items():
        headers.append(TABLE1_HEADERS[name])
        columns.append([float(v) for v in values])
        if ci:
            headers.append(interval_name)
            columns.append([interval_text(c) for c in ci[f"{name}_per_tau_ci"]])
    table1.table(
        headers,
        [[t, *row] for t, *row in zip(taus, *columns, strict=True)],
        caption="SSC label: the class with the largest summed affinity (neighbours' true labels)"
        + with_ci
        + ".",
    )

    work = Section("The solver along the path")
    iterations = result.diagnostics["iterations"]
    work.table(
        ["tau", "iterations (sum over layers)", "largest certified gap", "unconverged layers"],
        [
            [
                t,
                int(iterations[i].sum()),
                float(np.max(result.diagnostics["duality_gap"][i])),
                int(np.sum(~result.diagnostics["converged"][i].astype(bool))),
            ]
            for i, t in enumerate(taus)
        ],
        caption=(
            "The path goes from the smallest tau up, each solve starting from the graphs at "
            "the tau before it (working set: iterations are rounds)."
        ),
    )
    return [head, found, curves, table1, work]
