"""Shared matplotlib figures. Experiment results draw their own figures with these primitives.

Every function returns the ``matplotlib.figure.Figure`` it drew, so a chapter can show it and the
CLI can save it.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_display(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` NumPy array for ``imshow``."""
    img = image.detach().cpu().float().clamp(0, 1)
    if img.ndim == 3 and img.shape[0] == 1:
        return img[0].numpy()
    if img.ndim == 3:
        return img.permute(1, 2, 0).numpy()
    return img.numpy()


def image_rows(rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
               titles: Sequence[str] | None = None, size: float = 1.3):
    """A grid with one row per tensor ``(N, C, H, W)`` (e.g. originals, then recoveries).

    ``titles`` (length N) go above the columns of the first row; ``row_labels`` at the left.
    """
    n_rows = len(rows)
    n_cols = max(int(r.shape[0]) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 0.8, size * n_rows + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < row.shape[0]:
                ax.imshow(to_display(row[j]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if i == 0 and titles is not None and j < len(titles):
                ax.set_title(titles[j], fontsize=8)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    fig.tight_layout()
    return fig


def class_bars(values: Sequence[float], labels: Sequence[str] | None = None, highlight: Sequence[int] = (),
               ylabel: str = "", title: str = "", ax=None):
    """Bar chart of one value per class, bars in ``highlight`` drawn in a second colour."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3))
    values = np.asarray(values, dtype=float)
    colors = ["tab:red" if i in set(highlight) else "tab:blue" for i in range(len(values))]
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels if labels is not None else [str(i) for i in range(len(values))])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def tabular_rows(rows: Sequence[torch.Tensor], row_labels: Sequence[str], feature_names: Sequence[str] | None = None):
    """Line plot of feature vectors ``(D,)`` in [0, 1], one line per row (Fig. 14 style)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    for r, label in zip(rows, row_labels):
        ax.plot(np.asarray(r.detach().cpu().reshape(-1)), marker="o", markersize=3, label=label)
    if feature_names is not None:
        ax.set_xticks(range(len(feature_names)))
        ax.set_xticklabels(feature_names, rotation=90, fontsize=6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("feature value (scaled to [0, 1])")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
