"""Paper-style figures of layers: modularity curves, training dynamics, tau paths, CKA heatmaps.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so it works on
any backend (Agg on a server, inline in a notebook), and writes nothing; ``encode_figure``
turns one into PNG or PDF bytes, and ``pipeline.publish`` writes them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_HEATMAP_CMAP = "magma"
PNG_DPI = 130
MAX_WIDTH_IN = 12.0
"""The widest figure, in inches: the report shows figures at their size (96 CSS pixels an
inch) on a page about 1,170 pixels wide, so no figure is shrunk there and a point of type
stays 4/3 of a pixel."""
TEXT_PT = 9.0
"""The smallest type in a figure: tick labels, legends and captions (12 pixels on the page)."""
_CKA_STEP = 0.05


def encode_figure(fig: Figure, fmt: str) -> bytes:
    """``fig`` as ``"png"`` (``PNG_DPI`` dots per inch, so its size in inches times that in
    pixels) or ``"pdf"`` bytes, made in memory. The figures lay themselves out (constrained
    layout), so the page is the figure as it is."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=PNG_DPI)
    return buffer.getvalue()


def _layer_ticks(n_layers: int, room_in: float = 4.0) -> np.ndarray:
    """Indices of the layers that get a tick label along an axis ``room_in`` inches long: every
    layer, or every k-th one when their ``TEXT_PT`` labels would otherwise touch."""
    fits = max(2, int(room_in * 72.0 / (1.3 * TEXT_PT)))
    step = max(1, int(np.ceil(n_layers / fits)))
    return np.arange(0, n_layers, step)


def tick_name(layer: str) -> str:
    """A layer's name as a tick label: without a trailing ``.conv``, which every conv tap has."""
    return layer.removesuffix(".conv")


def cka_limits(matrices: Sequence[np.ndarray]) -> tuple[float, float]:
    """One colour range for CKA matrices shown side by side: their smallest and largest
    finite values, rounded out to steps of 0.05 inside [0, 1] (at least one step wide)."""
    values = np.concatenate([np.asarray(m, dtype=float).ravel() for m in matrices])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low = float(np.clip(np.floor(values.min() / _CKA_STEP) * _CKA_STEP, 0.0, 1.0 - _CKA_STEP))
    high = float(np.clip(np.ceil(values.max() / _CKA_STEP) * _CKA_STEP, low + _CKA_STEP, 1.0))
    return round(low, 2), round(high, 2)


def _depth_colours(n: int) -> list:
    """One colour per layer, shallow (dark) to deep (bright)."""
    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def plot_modularity_by_layer(
    curves: Mapping[str, tuple[Sequence[str], Sequence[float]]],
    *,
    title: str = "Modularity of each layer's SSC graph",
    intervals: Mapping[str, np.ndarray] | None = None,
) -> Figure:
    """Modularity (y) against layer depth (x), one line per entry of ``curves``.

    ``curves`` maps a label (a run, an epoch) to ``(layer_names, modularity)`` with one value
    per layer. With one curve the x ticks are the layer names; with several, whose depths may
    differ, x is the layer's relative depth (0 = first analysed layer, 1 = last). ``intervals``
    maps a label of ``curves`` to its (L, 2) intervals (low, high), drawn as error bars.
    """
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    single = len(curves) == 1
    intervals = intervals or {}
    for label, (layers, values) in curves.items():
        values = np.asarray(values, dtype=float)
        n = len(values)
        x = np.arange(1, n + 1) if single else np.linspace(0.0, 1.0, n)
        (line,) = ax.plot(x, values, marker="o", markersize=3.5, label=label)
        if label in intervals:
            ci = np.asarray(intervals[label], dtype=float)
            bars = np.stack([values - ci[:, 0], ci[:, 1] - values])
            ax.errorbar(x, values, yerr=bars, fmt="none", ecolor=line.get_color(), capsize=2)
        if single:
            ticks = _layer_ticks(n, room_in=6.0)
            ax.set_xticks(ticks + 1, [layers[i] for i in ticks], rotation=60, ha="right")
    ax.set_xlabel("layer" if single else "relative depth (first → last analysed layer)")
    ax.set_ylabel("modularity Q")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if not single:
        ax.legend(fontsize=TEXT_PT)
    return fig


def _layer_lines(
    ax, x, values, layers, ylabel: str, title: str, xlabel: str = "epoch", intervals=None
) -> None:
    """One Fig 1/2 style panel: a line per layer over ``x`` (epochs, or taus on a log
    scale), coloured shallow → deep; ``intervals`` (len(x), L, 2), when given, as error bars."""
    values = np.asarray(values, dtype=float)
    shifts = _dodge(x, values.shape[1], log=xlabel != "epoch") if intervals is not None else None
    for j, colour in enumerate(_depth_colours(values.shape[1])):
        at = x if shifts is None else shifts[j]
        ax.plot(at, values[:, j], color=colour, marker="o", markersize=3, label=layers[j])
        if intervals is not None:
            ci = np.asarray(intervals, dtype=float)[:, j]
            bars = np.stack([values[:, j] - ci[:, 0], ci[:, 1] - values[:, j]])
            ax.errorbar(at, values[:, j], yerr=bars, fmt="none", ecolor=colour, capsize=2)
    ax.set_xlabel(xlabel)
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{t:g}" for t in x])
        ax.minorticks_off()
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _dodge(x, n_lines: int, *, log: bool, share: float = 0.2) -> np.ndarray:
    """(n_lines, len(x)) positions that spread ``n_lines`` lines' points at each of ``x``
    over ``share`` of the narrowest gap between the ``x`` (a ratio on a log axis), so that
    their error bars do not hide each other."""
    x = np.asarray(x, dtype=float)
    axis = np.log(x) if log else x
    gap = np.min(np.diff(np.sort(axis))) if len(x) > 1 else 1.0
    offsets = share * gap * (np.linspace(-0.5, 0.5, n_lines) if n_lines > 1 else np.zeros(1))
    moved = axis[None, :] + offsets[:, None]
    return np.exp(moved) if log else moved


def _layer_legend(fig: Figure, ax, n_layers: int) -> None:
    """The layers' legend of a figure of ``_layer_lines`` panels, outside on the right."""
    handles, labels = ax.get_legend_handles_labels()
    shown = _layer_ticks(n_layers, room_in=3.4)
    fig.legend(
        [handles[i] for i in shown],
        [labels[i] for i in shown],
        loc="outside right center",
        fontsize=TEXT_PT,
        title="layer",
        title_fontsize=TEXT_PT,
    )


def plot_dynamics(
    epochs: Sequence[int],
    layers: Sequence[str],
    modularity: np.ndarray,
    to_final: Mapping[str, np.ndarray],
    *,
    title: str = "",
    intervals: Mapping[str, np.ndarray] | None = None,
) -> Figure:
    """Fig 1/2: per-epoch modularity, then for each measure (by its title in ``to_final``)
    each layer's similarity to its final state. Each array has shape (n_epochs, n_layers);
    the legend names the layers. ``intervals`` maps ``"modularity"`` and titles of
    ``to_final`` to their (n_epochs, n_layers, 2) intervals, drawn as error bars."""
    intervals = intervals or {}
    fig = Figure(figsize=(MAX_WIDTH_IN, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 1 + len(to_final)))
    _layer_lines(
        axes[0],
        epochs,
        modularity,
        layers,
        "modularity Q",
        "(a) SSC graph modularity",
        intervals=intervals.get("modularity"),
    )
    for letter, ax, (name, values) in zip("bcdefghij", axes[1:], to_final.items(), strict=False):
        _layer_lines(
            ax,
            epochs,
            values,
            layers,
            f"{name} to final epoch",
            f"({letter}) {name} vs. final",
            intervals=intervals.get(name),
        )
        _unit_range(ax, values)
    _layer_legend(fig, axes[0], len(layers))
    if title:
        fig.suptitle(title)
    return fig


def _unit_range(ax, values: np.ndarray) -> None:
    """Fix the y range to [0, 1] (with a margin) for values that lie in it, as CKA does."""
    values = np.asarray(values, dtype=float)
    if np.all((values >= 0) & (values <= 1)):
        ax.set_ylim(-0.02, 1.02)


def plot_tau_path(
    taus: Sequence[float],
    layers: Sequence[str],
    modularity: np.ndarray,
    similarity: Mapping[str, np.ndarray],
    nonzeros: np.ndarray,
    *,
    reference: float,
    title: str = "",
    intervals: Mapping[str, np.ndarray] | None = None,
) -> Figure:
    """One checkpoint over tau: per-layer modularity, for each measure of the graphs (by its
    title in ``similarity``) the similarity to the graph at ``reference``, and the mean
    nonzeros per row of C. Each array has shape (n_taus, n_layers). ``intervals`` maps
    ``"modularity"`` and titles of ``similarity`` to their (n_taus, n_layers, 2) intervals,
    drawn as error bars."""
    intervals = intervals or {}
    fig = Figure(figsize=(MAX_WIDTH_IN, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 + len(similarity)))
    _layer_lines(
        axes[0],
        taus,
        modularity,
        layers,
        "modularity Q",
        "(a) SSC graph modularity",
        "tau",
        intervals=intervals.get("modularity"),
    )
    letters = iter("bcdefghij")
    for ax, (name, values) in zip(axes[1:], similarity.items(), strict=False):
        ylabel = f"{name} to tau = {reference:g}"
        _layer_lines(
            ax,
            taus,
            values,
            layers,
            ylabel,
            f"({next(letters)}) {name} vs. the reference tau",
            "tau",
            intervals=intervals.get(name),
        )
        _unit_range(ax, values)
    _layer_lines(
        axes[-1],
        taus,
        nonzeros,
        layers,
        "nonzeros per row of C",
        f"({next(letters)}) sparsity of C",
        "tau",
    )
    _layer_legend(fig, axes[0], len(layers))
    if title:
        fig.suptitle(title)
    return fig


def _label_inches(names: Sequence[str]) -> float:
    """About how long the longest of ``names`` runs as a ``TEXT_PT`` label, in inches."""
    return max(map(len, names), default=0) * 0.6 * TEXT_PT / 72.0


def _heatmap(ax, matrix, rows: Sequence[str], cols: Sequence[str], title: str, side_in: float):
    """Draw one (L1, L2) CKA heatmap on ``ax``, about ``side_in`` inches square, with
    layer-name ticks; return the image (its colour limits are set by the caller)."""
    image = ax.imshow(matrix, cmap=_HEATMAP_CMAP, origin="lower", interpolation="nearest")
    row_ticks = _layer_ticks(len(rows), side_in)
    ax.set_yticks(row_ticks, [tick_name(rows[i]) for i in row_ticks], fontsize=TEXT_PT)
    col_ticks = _layer_ticks(len(cols), side_in)
    ax.set_xticks(col_ticks, [tick_name(cols[i]) for i in col_ticks], rotation=90, fontsize=TEXT_PT)
    ax.set_title(title)
    return image


def plot_cka_heatmaps(
    panels: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    *,
    title: str = "",
    colorbar_label: str = "SSC-CKA",
    col_layers: Sequence[Sequence[str]] | None = None,
    limits: tuple[float, float] | None = None,
) -> Figure:
    """Pairwise CKA heatmaps side by side (Fig 3-7), up to 3 a row, with one shared colour bar.

    ``panels`` holds ``(panel_title, matrix (L, L) or (L1, L2), row_layer_names)``;
    ``col_layers`` gives the column names of each panel where they differ from its rows.
    Every panel shares the colour range ``limits``, by default ``cka_limits`` of all the
    matrices, so that equal colours are equal values across the panels.
    """
    k = len(panels)
    cols = -(-k // -(-k // 3))
    rows = -(-k // cols)
    names = [
        list(p[2]) + list(p[2] if col_layers is None else col_layers[i])
        for i, p in enumerate(panels)
    ]
    labels_in = _label_inches([tick_name(n) for group in names for n in group])
    width = min(MAX_WIDTH_IN, 1.2 + cols * (3.6 + labels_in))
    side = (width - 1.2) / cols - labels_in
    height = rows * (side + labels_in + 0.35) + (0.35 if title else 0.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[k:]:
        ax.set_axis_off()
    matrices = [np.asarray(p[1], dtype=float) for p in panels]
    vmin, vmax = cka_limits(matrices) if limits is None else limits
    for i, (ax, (panel_title, _, layers)) in enumerate(zip(axes, panels, strict=False)):
        cols_i = layers if col_layers is None else col_layers[i]
        image = _heatmap(ax, matrices[i], layers, cols_i, panel_title, side)
        image.set_clim(vmin, vmax)
    fig.colorbar(image, ax=axes[:k].tolist(), shrink=0.85, label=colorbar_label)
    if title:
        fig.suptitle(title, fontsize="large")
    return fig
