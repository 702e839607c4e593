from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_ext.evaluation.lesions import (
    DEFAULT_SIZE_EDGES_CC,
    DEFAULT_SIZE_EDGES_MM2,
    area_mm2,
    group_intervals,
    group_names,
    size_group,
    volume_cc,
)


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


@pytest.mark.parametrize(
    ("area", "group"),
    [(0.0, "A"), (1599.9, "A"), (1600.0, "B"), (3999.9, "B"), (4000.0, "C"), (27_000.0, "C")],
)
def test_default_area_groups_pin_boundaries(area, group):
    assert DEFAULT_SIZE_EDGES_MM2 == (1600.0, 4000.0)
    assert size_group(area, DEFAULT_SIZE_EDGES_MM2) == group


def test_area_edges_are_the_sphere_cross_sections_of_the_volume_edges_rounded_down():
    for edge_cc, edge_mm2 in zip(DEFAULT_SIZE_EDGES_CC, DEFAULT_SIZE_EDGES_MM2):
        radius_mm = (3 * edge_cc * 1000.0 / (4 * math.pi)) ** (1 / 3)
        cross_section = math.pi * radius_mm**2  # 1640.9 and 4134.7 mm^2
        assert edge_mm2 <= cross_section < 1.05 * edge_mm2
    assert group_intervals(DEFAULT_SIZE_EDGES_MM2, "mm²") == {
        "A": "[0, 1600) mm²",
        "B": "[1600, 4000) mm²",
        "C": "[4000, inf) mm²",
    }


def test_area_mm2_of_a_disc():
    # Radius 60 px at 0.5 mm = 30 mm: pi * 900 = 2827.4 mm^2; the pixelised disc has 11289 pixels (-0.18 %), the test
    # allows 0.5 % (the lattice bound pi (R -+ 1/sqrt(2))^2 would allow 2.4 %).
    yy, xx = np.ogrid[:140, :140]
    disc = (yy - 70) ** 2 + (xx - 70) ** 2 <= 60**2
    assert area_mm2(disc, (0.5, 0.5)) == pytest.approx(math.pi * 30.0**2, rel=0.005)
    assert area_mm2(disc, (0.5, 0.5)) == np.count_nonzero(disc) * 0.25
    with pytest.raises(ValueError, match="2-D mask"):
        area_mm2(disc[None], (999.0, 0.5, 0.5))
