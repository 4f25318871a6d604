import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sae_lib.plots import plot_image_caption_rows, plot_modality_histograms  # noqa: E402


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
