"""Figures the chapters share. Plotly where hovering helps (curves, frontiers, heatmaps).

Importing this module also tells plotly how to show figures in Jupyter and in the rendered book, so
a chapter that draws with plotly imports it; ``import sae_lib`` alone does not load plotly."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots
from torch import Tensor

from .metrics import cosine_matrix
from .training import History


def _configure_plotly() -> None:
    """Inside a Jupyter kernel (but not Colab, which plotly detects itself), emit figures as
    self-contained HTML with plotly.js embedded once per notebook: it shows in Jupyter, and the
    rendered book can show it offline."""
    if "ipykernel" in sys.modules and "google.colab" not in sys.modules:
        pio.renderers.default = "notebook"


_configure_plotly()

FAMILY_COLORS = {"relu": "#1f77b4", "topk": "#ff7f0e", "mp": "#2ca02c", "e2e": "#d62728", "e2e+ds": "#9467bd",
                 "batchtopk": "#8c564b", "matryoshka": "#e377c2"}


def plot_histories(histories: Mapping[str, History], key: str = "loss", *, title: str | None = None) -> go.Figure:
    """Training curves (log scale) of one quantity, one line per named run."""
    fig = go.Figure()
    for name, history in histories.items():
        values = history.loss if key == "loss" else history.terms[key]
        fig.add_trace(go.Scatter(y=values, mode="lines", name=name))
    fig.update_layout(
        title=title or f"training {key}", xaxis_title="step", yaxis_title=key, yaxis_type="log", height=380
    )
    return fig


def plot_frontier(
    points: Sequence[Mapping], *, x: str = "l0", y: str = "fvu", group: str = "family", label: str | None = None,
    title: str = "sparsity vs reconstruction", log_y: bool = True,
) -> go.Figure:
    """A Pareto plot: one line per ``group`` through points given as dicts (e.g. from ``evaluate``)."""
    fig = go.Figure()
    for name in dict.fromkeys(p[group] for p in points):
        members = sorted((p for p in points if p[group] == name), key=lambda p: p[x])
        fig.add_trace(
            go.Scatter(
                x=[p[x] for p in members], y=[p[y] for p in members], mode="lines+markers", name=str(name),
                text=[str(p[label]) for p in members] if label else None,
                marker_color=FAMILY_COLORS.get(str(name)), line_color=FAMILY_COLORS.get(str(name)),
                hovertemplate=f"{x}=%{{x:.3g}}<br>{y}=%{{y:.3g}}" + ("<br>%{text}" if label else "") + "<extra></extra>",
            )
        )
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=420)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _cosine_heatmap(a: Tensor, b: Tensor, **options) -> go.Heatmap:
    """The cosines between the rows of ``a`` and of ``b``, on the diverging scale every cosine plot shares."""
    return go.Heatmap(z=cosine_matrix(a, b).cpu().numpy(), zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                      **options)


def plot_cosines(a: Tensor, b: Tensor, *, title: str, a_label: str = "rows", b_label: str = "columns") -> go.Figure:
    """Heatmap of the cosine similarity between every row of ``a`` and every row of ``b``
    (pass the same matrix twice for a Gram matrix)."""
    fig = go.Figure(_cosine_heatmap(a, b))
    fig.update_layout(
        title=title, xaxis_title=b_label, yaxis_title=a_label, yaxis_autorange="reversed", height=420, width=480
    )
    return fig


def plot_cosine_panels(
    panels: Sequence[tuple[str, Tensor, Tensor]], *, title: str, labels: Sequence[str] | None = None,
    panel_size: int = 300,
) -> go.Figure:
    """A row of cosine heatmaps sharing one colour scale, one per ``(subtitle, a, b)``: rows of ``a``
    against rows of ``b``, e.g. a true and a learned Gram matrix side by side. ``labels`` name the rows
    and columns (all panels must then have that many)."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _, _ in panels],
                        horizontal_spacing=0.03)
    for col, (_, a, b) in enumerate(panels, start=1):
        if labels is not None and (len(a) != len(labels) or len(b) != len(labels)):
            raise ValueError(f"{len(labels)} labels for a panel of shape {len(a)} × {len(b)}")
        fig.add_trace(_cosine_heatmap(a, b, x=labels, y=labels, showscale=col == len(panels), colorbar=dict(title="cos"),
                                      hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=1, col=col)
    fig.update_layout(title=title, height=panel_size + 110, width=panel_size * len(panels) + 140)
    return fig


def plot_modality_histograms(scores: Mapping[str, Tensor], *, title: str, bins: int = 20) -> go.Figure:
    """Histogram of the modality score (0 = text only, 1 = image only) of each family's alive atoms, as
    a share of those atoms; latents that never fired (NaN scores) are left out."""
    fig = go.Figure()
    for name, score in scores.items():
        alive = score[~score.isnan()].cpu().numpy()
        fig.add_trace(go.Histogram(
            x=alive, name=f"{name} ({len(alive)} alive atoms)", histnorm="probability", opacity=0.65,
            xbins=dict(start=0, end=1 + 1e-9, size=1 / bins), marker_color=FAMILY_COLORS.get(name),
        ))
    fig.update_layout(barmode="overlay", bargap=0.02, title=title, height=380,
                      xaxis_title="modality score (0 = text only, 1 = image only)", yaxis_title="share of alive atoms")
    fig.update_xaxes(range=[0, 1])
    return fig


def plot_image_caption_rows(rows: Sequence[tuple[str, Sequence, Sequence[str]]], *, thumb: float = 1.5):
    """One row per entry ``(title, images, captions)``: the images as thumbnails, then the captions.
    For a glance at a data set, or at the images and captions that most activate an atom."""
    import matplotlib.pyplot as plt

    n_images = max(1, max(len(images) for _, images, _ in rows))
    fig, axes = plt.subplots(len(rows), n_images + 1, squeeze=False, figsize=(thumb * (n_images + 3), thumb * len(rows)),
                             gridspec_kw={"width_ratios": [1] * n_images + [3]})
    for (title, images, captions), row in zip(rows, axes):
        for ax in row:
            ax.axis("off")
        for ax, image in zip(row, images):
            ax.imshow(image)
        row[-1].text(0, 0.5, title + "\n" + "\n".join(f"• {c}" for c in captions), va="center", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig


def plot_grid_heatmaps(
    grids: Mapping[str, Sequence[Sequence[float]]], *, x: Sequence, y: Sequence, title: str, x_label: str,
    y_label: str, zmin: float = 0.0, zmax: float = 1.0, colorscale: str = "Viridis", panel_size: int = 240,
) -> go.Figure:
    """One annotated heatmap per name, all on one colour scale: ``grids[name][i][j]`` is the value at
    ``(y[i], x[j])``, e.g. a score over a grid of data settings, one panel per SAE family."""
    fig = make_subplots(rows=1, cols=len(grids), subplot_titles=list(grids), horizontal_spacing=0.04)
    labels_x, labels_y = [str(v) for v in x], [str(v) for v in y]
    for col, (name, grid) in enumerate(grids.items(), start=1):
        values = [[float(v) for v in row] for row in grid]
        if len(values) != len(y) or any(len(row) != len(x) for row in values):
            raise ValueError(f"panel {name!r} is not a {len(y)} × {len(x)} grid")
        fig.add_trace(go.Heatmap(z=values, x=labels_x, y=labels_y, zmin=zmin, zmax=zmax, colorscale=colorscale,
                                 showscale=col == len(grids), text=[[f"{v:.2f}" for v in row] for row in values],
                                 texttemplate="%{text}", hovertemplate=f"{name}<br>{x_label} %{{x}}<br>{y_label} %{{y}}"
                                 "<br>%{z:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=x_label, type="category", row=1, col=col)
        fig.update_yaxes(type="category", showticklabels=col == 1, row=1, col=col)
    fig.update_yaxes(title_text=y_label, row=1, col=1)
    fig.update_layout(title=title, height=panel_size + 140, width=panel_size * len(grids) + 160)
    return fig
