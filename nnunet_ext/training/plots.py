"""``progress_nnunet_ext.png``: the add-ons' per-epoch log values, one panel per key, next to nnU-Net's progress.png.

Pure plotting (a dict of lists in, a PNG out), so that it can be tested and re-drawn from a checkpoint's
``logging`` entry without a trainer. Layout rules for legibility at the saved size: one font size for titles, labels
and ticks (10 pt, ticks 9 pt), each key as its panel's title (not a rotated y label that outgrows a short panel),
two columns from four keys on so that the figure stays near 4:3, constrained layout plus a tight bounding box so that
nothing is cut. Uses :class:`matplotlib.figure.Figure` directly: no pyplot state, no backend switch, safe in a
training process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

PANEL_WIDTH_IN = 5.0
PANEL_HEIGHT_IN = 2.4
DPI = 110
FONT_PT = 10.0
TICK_PT = 9.0


def panel_title(key: str) -> str:
    """The title of a log key's panel: the key without the plugin's ``ext_`` prefix."""
    return key.removeprefix("ext_")


def grid_shape(num_keys: int) -> tuple[int, int]:
    """``(rows, columns)``: one column up to three panels, two from four on."""
    columns = 1 if num_keys <= 3 else 2
    return math.ceil(num_keys / columns), columns


def plot_addon_progress(
    logged: Mapping[str, Sequence[float]],
    keys: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
):
    """Draw ``logged[key]`` against the epoch for every key and save the figure as a PNG at ``path``.

    Args:
        logged: Per-key lists of one value per epoch (nnU-Net's logger dict); a missing key draws an empty panel.
        keys: The keys to draw, in panel order.
        path: The PNG to write.
        title: Optional figure title (e.g. the trainer's name).

    Returns:
        The :class:`matplotlib.figure.Figure` (already saved), for inspection.

    Raises:
        ValueError: ``keys`` is empty.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not keys:
        raise ValueError("no log keys to plot; pass the add-ons' log_keys")
    rows, columns = grid_shape(len(keys))
    style = {
        "font.size": FONT_PT,
        "axes.titlesize": FONT_PT,
        "axes.labelsize": FONT_PT,
        "xtick.labelsize": TICK_PT,
        "ytick.labelsize": TICK_PT,
        "figure.titlesize": FONT_PT + 1,
    }
    import matplotlib

    with matplotlib.rc_context(style):
        fig = Figure(figsize=(PANEL_WIDTH_IN * columns, PANEL_HEIGHT_IN * rows), dpi=DPI, layout="constrained")
        axes = fig.subplots(rows, columns, sharex=True, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index >= len(keys):
                ax.set_axis_off()
                continue
            key = keys[index]
            values = [float(v) for v in logged.get(key, [])]
            ax.set_title(panel_title(key), loc="left")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if any(math.isfinite(v) for v in values):
                ax.plot(range(len(values)), values, marker=".", markersize=5, linewidth=1.2)
            else:
                ax.text(0.5, 0.5, "no values yet", transform=ax.transAxes, ha="center", va="center", color="0.5")
            if index + columns >= len(keys):  # the lowest panel of its column
                ax.set_xlabel("epoch")
                ax.xaxis.set_tick_params(labelbottom=True)
        epochs = max(len(logged.get(key, [])) for key in keys)
        axes.flat[0].set_xlim(-0.5, max(epochs - 1, 1) + 0.5)  # shared; whole epochs even for one logged epoch
        if title:
            fig.suptitle(title)
        fig.savefig(os.fspath(path), dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return fig
