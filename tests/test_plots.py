import plotly.graph_objects as go
import pytest
import torch

from sae_lib import random_dictionary
from sae_lib.plots import plot_cosine_panels


def test_cosine_panels_one_heatmap_per_panel_with_one_colour_bar():
    a, b = random_dictionary(5, 3, seed=0), random_dictionary(5, 3, seed=1)
    fig = plot_cosine_panels([("a", a, a), ("b", b, b), ("a vs b", a, b)], title="t", labels=list("vwxyz"))
    heatmaps = [trace for trace in fig.data if isinstance(trace, go.Heatmap)]
    assert len(heatmaps) == 3 and [h.showscale for h in heatmaps] == [False, False, True]
    torch.testing.assert_close(torch.tensor(heatmaps[0].z).diagonal(), torch.ones(5))
    with pytest.raises(ValueError, match="4 labels"):
        plot_cosine_panels([("a", a, a)], title="t", labels=list("wxyz"))
