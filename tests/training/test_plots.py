"""``progress_nnunet_ext.png`` is legible at its saved size: balanced fonts, nothing cut, sane dimensions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from matplotlib.text import Text
from trainer_helpers import make_trainer

from nnunet_ext._nnunet import log_store
from nnunet_ext.training.plots import DPI, grid_shape, panel_title, plot_addon_progress

MT_KEYS = (
    "ext_teacher_update_fraction",
    "ext_mean_lambda",
    "ext_student_seg_loss",
    "ext_teacher_seg_loss",
    "ext_consistency_loss",
)


def _title(ax) -> Text:
    return next(c for c in ax.get_children() if isinstance(c, Text) and c.get_text() == ax.get_title(loc="left"))


def _check_png(path, max_width=1400, max_height=1000) -> np.ndarray:
    image = imread(path)
    height, width = image.shape[:2]
    assert 400 <= width <= max_width and 250 <= height <= max_height, (width, height)
    assert 0.5 <= width / height <= 3.0, (width, height)
    assert image[..., :3].std() > 0.05  # not blank
    return image


def test_grid_and_titles():
    assert [grid_shape(n) for n in (1, 3, 4, 5, 7)] == [(1, 1), (3, 1), (2, 2), (3, 2), (4, 2)]
    assert panel_title("ext_teacher_update_fraction") == "teacher_update_fraction"


def test_fonts_are_balanced_and_no_title_outgrows_its_panel(tmp_path):
    logged = {k: [0.1 * e + j for e in range(12)] for j, k in enumerate(MT_KEYS)}
    logged["ext_consistency_loss"][:3] = [math.nan] * 3  # add-on registered after a resume: NaN-padded
    path = tmp_path / "progress_nnunet_ext.png"
    fig = plot_addon_progress(logged, MT_KEYS, path, title="NRDiceAdaptiveMTTrainer: add-on logs")
    _check_png(path)
    canvas = FigureCanvasAgg(fig)  # the saved layout, drawn again to measure it
    canvas.draw()
    renderer = canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title(loc="left") for ax in panels] == [panel_title(k) for k in MT_KEYS]
    texts = [t for ax in panels for t in (_title(ax), ax.xaxis.label, ax.yaxis.label)]
    texts += [t for ax in panels for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_visible()]
    sizes = {round(t.get_fontsize(), 1) for t in texts if t.get_text()}
    assert min(sizes) >= 9 and max(sizes) / min(sizes) <= 1.15, sizes  # e.g. not 8 pt labels next to 10 pt ticks
    for ax in panels:
        title = _title(ax).get_window_extent(renderer)
        box = ax.get_window_extent(renderer)
        assert title.width <= box.width, ax.get_title(loc="left")
        assert ax.xaxis.label.get_text() in ("", "epoch")
    bottoms = [ax for ax in panels if ax.xaxis.label.get_text() == "epoch"]
    assert len(bottoms) == 2  # the lowest panel of each column is labelled
    assert fig.get_dpi() == DPI


def test_one_epoch_and_missing_values(tmp_path):
    path = tmp_path / "p.png"
    fig = plot_addon_progress({"ext_reweight_kept_fraction": [1.0]}, ["ext_reweight_kept_fraction", "x"], path)
    _check_png(path)
    ticks = [t for t in fig.axes[-1].get_xticks() if fig.axes[-1].get_xlim()[0] <= t <= fig.axes[-1].get_xlim()[1]]
    assert ticks == [0.0, 1.0]  # whole epochs only
    assert any(t.get_text() == "no values yet" for t in fig.axes[1].texts)
    with pytest.raises(ValueError, match="no log keys"):
        plot_addon_progress({}, [], path)


def test_written_by_a_real_trainer(tiny_lesion_2d, tmp_path):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    trainer.output_folder = str(tmp_path)
    logged = log_store(trainer)
    for epoch in range(2):
        for j, key in enumerate(MT_KEYS):
            logged[key].append(0.5 + 0.1 * epoch + 0.01 * j)
    trainer._ext_plot_progress()
    _check_png(tmp_path / "progress_nnunet_ext.png")
