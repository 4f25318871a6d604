import matplotlib

matplotlib.use("Agg")

import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sae_lib import random_dictionary  # noqa: E402
from sae_lib.plots import plot_cosine_panels, plot_image_caption_rows, plot_modality_histograms  # noqa: E402


def test_cosine_panels_one_heatmap_per_panel_with_one_colour_bar():
    a, b = random_dictionary(5, 3, seed=0), random_dictionary(5, 3, seed=1)
    fig = plot_cosine_panels([("a", a, a), ("b", b, b), ("a vs b", a, b)], title="t", labels=list("vwxyz"))
    heatmaps = [trace for trace in fig.data if isinstance(trace, go.Heatmap)]
    assert len(heatmaps) == 3 and [h.showscale for h in heatmaps] == [False, False, True]
    torch.testing.assert_close(torch.tensor(heatmaps[0].z).diagonal(), torch.ones(5))
    with pytest.raises(ValueError, match="4 labels"):
        plot_cosine_panels([("a", a, a)], title="t", labels=list("wxyz"))


def test_modality_histograms_leave_out_silent_atoms():
    scores = {"topk": torch.tensor([0.0, 1.0, float("nan")]), "mp": torch.tensor([0.5, 0.4, 0.6, 0.45])}
    fig = plot_modality_histograms(scores, title="t")
    assert [len(trace.x) for trace in fig.data] == [2, 4]
    assert "2 alive atoms" in fig.data[0].name and "4 alive atoms" in fig.data[1].name


def test_image_caption_rows_make_one_row_per_entry():
    picture = Image.new("RGB", (16, 16), (200, 0, 0))
    fig = plot_image_caption_rows([("a", [picture, picture], ["one", "two"]), ("b", [], ["three"])])
    assert len(fig.axes) == 2 * 3  # two rows of (two thumbnails + one caption panel)
    assert "three" in fig.axes[-1].texts[0].get_text()


def test_plot_grid_heatmaps_one_panel_per_name_on_one_scale():
    from sae_lib.plots import plot_grid_heatmaps

    fig = plot_grid_heatmaps({"relu": [[0.5, 0.6]], "mp": [[0.0, 0.1]]}, x=[0.1, 0.5], y=[1.5], title="t",
                             x_label="spread", y_label="mean")
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert all(t.zmin == 0 and t.zmax == 1 for t in fig.data) and fig.data[1].z[0][1] == 0.1
    with pytest.raises(ValueError, match="grid"):
        plot_grid_heatmaps({"relu": [[0.5]]}, x=[0.1, 0.5], y=[1.5], title="t", x_label="a", y_label="b")


def test_import_sae_lib_leaves_plotly_alone():
    """Only ``sae_lib.plots`` configures plotly; the library's top level does not even load it."""
    import subprocess
    import sys

    code = "import sys, sae_lib; assert 'plotly' not in sys.modules, 'import sae_lib loaded plotly'"
    subprocess.run([sys.executable, "-c", code], check=True)
