"""Paper-style figures of the inputs: spectral embeddings coloured by class (Fig 8) and a
confidently wrong input beside its neighbours (Fig 9). Like ``plots``, each returns a
``matplotlib.figure.Figure`` built without pyplot and writes nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ssc_jax.pipeline.report.plots import MAX_WIDTH_IN, TEXT_PT


def _class_colours(n_classes: int) -> list:
    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n_classes)]


def plot_spectral_embeddings(
    embeddings: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "Spectral embeddings of the SSC graphs, coloured by class",
) -> Figure:
    """Fig 8: one 2-D scatter per layer; ``embeddings`` holds ``(layer_name, (n, 2))``."""
    k = len(embeddings)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig = Figure(figsize=(3.4 * cols + 1.6, 3.3 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[k:]:
        ax.set_axis_off()
    labels = np.asarray(labels)
    colours = _class_colours(len(class_names))
    for ax, (layer, points) in zip(axes, embeddings, strict=False):
        points = np.asarray(points)
        for c, name in enumerate(class_names):
            sel = labels == c
            ax.scatter(points[sel, 0], points[sel, 1], s=6, color=colours[c], label=name)
        ax.set_title(layer, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("eigenvector 1")
        ax.set_ylabel("eigenvector 2")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=TEXT_PT, markerscale=2.5)
    fig.suptitle(title)
    return fig


def _show_image(ax, image: np.ndarray, caption: str) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray_r", interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(caption, fontsize=TEXT_PT)


def plot_wrong_input(
    image: np.ndarray,
    caption: str,
    class_scores: np.ndarray,
    class_names: Sequence[str],
    neighbour_images: np.ndarray,
    neighbour_captions: Sequence[str],
    *,
    highlight: Sequence[int] = (),
) -> Figure:
    """Fig 9: a confidently wrong input, its class-affinity distribution and top neighbours.

    ``image`` is (H, W, C) uint8; ``class_scores`` (n_classes,) is the input's summed affinity
    per class, shown normalised to sum 1; ``neighbour_images`` is (k, H, W, C), strongest
    first. ``highlight`` holds class ids (true, predicted) whose bars are outlined.
    """
    k = len(neighbour_images)
    cols = max(1, (k + 1) // 2)
    fig = Figure(figsize=(min(MAX_WIDTH_IN, 5.6 + 1.5 * cols), 3.8), layout="constrained")
    grid = fig.add_gridspec(2, 2 + cols, width_ratios=[1.6, 2.0] + [1.0] * cols)
    _show_image(fig.add_subplot(grid[:, 0]), image, caption)

    ax = fig.add_subplot(grid[:, 1])
    scores = np.asarray(class_scores, dtype=float)
    total = scores.sum()
    share = scores / total if total > 0 else scores
    bars = ax.barh(np.arange(len(share)), share, color=_class_colours(len(share)))
    for c in highlight:
        bars[c].set_edgecolor("black")
        bars[c].set_linewidth(1.8)
    ax.set_yticks(np.arange(len(share)), list(class_names), fontsize=TEXT_PT)
    ax.invert_yaxis()
    ax.set_xlabel("share of SSC affinity")
    ax.set_title("class affinity", fontsize=TEXT_PT)

    for j in range(k):
        ax = fig.add_subplot(grid[j // cols, 2 + j % cols])
        _show_image(ax, neighbour_images[j], neighbour_captions[j])
    return fig
