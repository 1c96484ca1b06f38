"""Figures without pyplot state: every figure of vaebias is a :class:`matplotlib.figure.Figure`
built directly (no backend is selected, no global figure list is touched), so that calling
vaebias from a notebook leaves the notebook's matplotlib as it was."""

from __future__ import annotations

import os
from pathlib import Path

from vaebias._internal.io import atomic_path

__all__ = ["new_figure", "save_figure"]


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True):
    """A new :class:`~matplotlib.figure.Figure` and its axes (``Figure.subplots``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig, out_png: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as a PNG atomically (never a partial file) and return the path."""
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return out_png
