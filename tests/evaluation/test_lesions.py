from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_ext.evaluation.lesions import group_intervals, group_names, size_group, volume_cc


@pytest.mark.parametrize(
    ("volume", "group"),
    [(0.0, "A"), (49.999, "A"), (50.0, "B"), (120.0, "B"), (199.999, "B"), (200.0, "C"), (1e6, "C")],
)
def test_default_groups_pin_boundaries(volume, group):
    assert size_group(volume) == group


def test_custom_edges_and_intervals():
    assert size_group(10.0, (5.0, 10.0, 20.0)) == "C"
    assert group_names((5.0, 10.0, 20.0)) == ("A", "B", "C", "D")
    assert group_intervals() == {"A": "[0, 50) cc", "B": "[50, 200) cc", "C": "[200, inf) cc"}


def test_volume_cc():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:5, :4, :2] = True  # 40 voxels of 2.5 * 0.8 * 0.8 = 1.6 mm^3 -> 64 mm^3
    assert volume_cc(mask, (2.5, 0.8, 0.8)) == pytest.approx(0.064)


@pytest.mark.parametrize("edges", [(), (200.0, 50.0), (50.0, 50.0), (-1.0,), (math.inf,)])
def test_bad_edges(edges):
    with pytest.raises(ValueError, match="edges"):
        size_group(1.0, edges)


def test_bad_volume():
    with pytest.raises(ValueError, match="volume"):
        size_group(math.nan)
    with pytest.raises(ValueError, match="volume"):
        size_group(-1.0)
