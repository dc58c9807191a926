"""Writing an analysis out: the one place where an output folder's files are made.

An output folder holds ``metrics.json``, ``figures/`` (each figure as PNG and PDF),
``graphs/`` (the SSC graph files) and ``report.html``. ``publish`` writes it atomically;
``write_outputs`` fills a folder that an enclosing ``atomic_output_dir`` owns (the offline
default trains its run inside the output folder first).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ssc_jax._version import __version__
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings, settings_record
from ssc_jax.pipeline.analysis.layer_graphs import GraphSource
from ssc_jax.pipeline.report.html import Report
from ssc_jax.pipeline.report.plots import encode_figure
from ssc_jax.pipeline.report.render import settings_section
from ssc_jax.pipeline.store.graph_store import save_graphs
from ssc_jax.pipeline.store.outputs import atomic_output_dir, write_json

FIGURES = "figures"


def write_graph(source: GraphSource, target: Path) -> Path:
    """Write a graph file at ``target``: a copy of the cached file, or the graphs saved."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        shutil.copyfile(source, target)
        return target
    return save_graphs(target, source.layers, source.coef, source.diagnostics, source.settings)


def write_outputs(
    folder: str | Path,
    *,
    command: str,
    report: Report,
    metrics: Mapping,
    exports: Mapping[str, GraphSource],
    analysis: AnalysisSet | None,
    solver: SolverSettings,
) -> Path:
    """Write one analysis into ``folder``: its graph files (``exports`` maps a path relative
    to ``folder`` to its source), the report's figures, ``metrics.json`` (``metrics`` with the
    command, the settings and the version around it) and ``report.html``, which ends with the
    settings."""
    folder = Path(folder)
    for name, source in exports.items():
        write_graph(source, folder / name)
    settings = settings_record(analysis, solver)
    report = Report(report.title, [*report.sections, settings_section(settings, __version__)])
    figures = folder / FIGURES
    png = {}
    for stem, figure in report.figures().items():
        figures.mkdir(exist_ok=True)
        png[stem] = encode_figure(figure, "png")
        (figures / f"{stem}.png").write_bytes(png[stem])
        (figures / f"{stem}.pdf").write_bytes(encode_figure(figure, "pdf"))
    document = {"command": command, **metrics, "settings": settings, "version": __version__}
    write_json(folder / "metrics.json", document)
    (folder / "report.html").write_text(report.render(png), encoding="utf-8")
    return folder


def publish(
    out: str | Path,
    *,
    command: str,
    inputs: Iterable[str | Path | None] = (),
    report: Report,
    metrics: Mapping,
    exports: Mapping[str, GraphSource],
    analysis: AnalysisSet | None,
    solver: SolverSettings,
) -> Path:
    """``write_outputs`` into the output folder ``out``, all or nothing, replacing only a
    previous output of ``command`` that holds none of ``inputs`` (see
    ``outputs.atomic_output_dir``); return ``out``."""
    with atomic_output_dir(out, kind=command, inputs=inputs) as folder:
        write_outputs(
            folder,
            command=command,
            report=report,
            metrics=metrics,
            exports=exports,
            analysis=analysis,
            solver=solver,
        )
    return Path(out)
