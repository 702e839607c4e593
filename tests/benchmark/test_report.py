"""Report pieces on synthetic result tables (no training): fold averaging, groups, paired tests, files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nnunet_ext.benchmark import report
from nnunet_ext.evaluation.metrics import METRIC_KEYS

CASES = [f"c{i}" for i in range(6)]
GROUPS = {"c0": "A", "c1": "A", "c2": "A", "c3": "B", "c4": "B", "c5": "B"}


def row(trainer, fold, case, dice, hd95=1.0, label="1", dataset="Dataset702_X", configuration="2d"):
    r = {
        "dataset": dataset,
        "configuration": configuration,
        "trainer": trainer,
        "fold": str(fold),
        "case": case,
        "label_or_region": label,
        "size_group": GROUPS[case],
        "volume_ref_cc": 10.0,
    }
    r.update({m: 0.0 for m in METRIC_KEYS})
    r.update({"Dice": dice, "HD95_mm": hd95, "RVE": 0.1})
    return r


@pytest.fixture()
def rows():
    rng = np.random.default_rng(0)
    out = []
    for fold in (0, 1):
        for i, case in enumerate(CASES):
            base = 0.6 + 0.05 * i + 0.01 * fold
            out.append(row("nnUNetTrainer", fold, case, base, hd95=5.0 + i))
            hd = math.nan if (case == "c5" and fold == 1) else 4.0 + i + rng.uniform(0, 0.5)
            out.append(row("NRDiceTrainer", fold, case, base + 0.02 + 0.01 * rng.uniform(), hd95=hd))
    return out


def test_case_values_average_folds_and_propagate_nan(rows):
    panel = ("Dataset702_X", "2d", "1")
    dice = report.case_values(rows, panel, "nnUNetTrainer", "Dice")
    assert dice["c0"] == pytest.approx(0.605)  # mean of 0.600 and 0.610
    hd = report.case_values(rows, panel, "NRDiceTrainer", "HD95_mm")
    assert math.isnan(hd["c5"]) and not math.isnan(hd["c4"])


def test_describe_ignores_and_counts_nan():
    d = report.describe([1.0, 2.0, math.nan, 3.0])
    assert (d.n, d.n_nan, d.mean) == (4, 1, 2.0)
    assert d.sd == pytest.approx(1.0)  # ddof=1
    assert math.isnan(report.describe([1.0]).sd)


def test_paired_tests_match_scipy_on_fold_means(rows):
    comparisons = report.compare(rows, "nnUNetTrainer", ["Dice", "HD95_mm"])
    by_key = {(c.group, c.metric): c.result for c in comparisons}
    assert {g for g, _ in by_key} == {"all", "A", "B"}
    panel = ("Dataset702_X", "2d", "1")
    a = report.case_values(rows, panel, "NRDiceTrainer", "Dice")
    b = report.case_values(rows, panel, "nnUNetTrainer", "Dice")
    xa, xb = np.array([a[c] for c in CASES]), np.array([b[c] for c in CASES])
    dice_all = by_key[("all", "Dice")]
    assert dice_all.n_pairs == 6 and dice_all.n_dropped_nan == 0
    assert dice_all.t_pvalue == pytest.approx(stats.ttest_rel(xa, xb).pvalue)
    assert dice_all.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(xa, xb).pvalue)
    hd_all = by_key[("all", "HD95_mm")]
    assert (hd_all.n_pairs, hd_all.n_dropped_nan) == (5, 1)  # c5 has a NaN fold
    assert by_key[("A", "Dice")].n_pairs == 3
    assert (by_key[("B", "HD95_mm")].n_pairs, by_key[("B", "HD95_mm")].n_dropped_nan) == (2, 1)


def test_unpaired_cases_are_counted(rows):
    partial = [r for r in rows if not (r["trainer"] == "NRDiceTrainer" and r["case"] == "c0")]
    res = next(c.result for c in report.compare(partial, "nnUNetTrainer", ["Dice"]) if c.group == "all")
    assert (res.n_pairs, res.n_unpaired) == (5, 1)


def test_inconsistent_size_groups_raise(rows):
    rows[0] = {**rows[0], "size_group": "C"}
    with pytest.raises(ValueError, match="different references"):
        report.compare(rows, "nnUNetTrainer", ["Dice"])


def test_csv_round_trip(rows, tmp_path):
    path = report.write_results_csv(rows, tmp_path / "results.csv")
    back = report.read_results_csv(path)
    assert len(back) == len(rows)
    for got, want in zip(back, rows):
        assert got["case"] == want["case"] and got["fold"] == want["fold"]
        np.testing.assert_equal(got["HD95_mm"], want["HD95_mm"])  # NaN survives


def test_markdown_and_console_tables(rows):
    md = report.render_markdown(rows, "nnUNetTrainer", ["Dice", "HD95_mm"], (50.0, 200.0))
    dice = report.describe(report.case_values(rows, ("Dataset702_X", "2d", "1"), "nnUNetTrainer", "Dice").values())
    assert f"| all | nnUNetTrainer (baseline) | 6 | {dice.mean:.4f} ± {dice.sd:.4f} |" in md
    assert "(1 NaN)" in md  # the NaN HD95 case of NRDiceTrainer
    assert "| all | NRDiceTrainer | HD95_mm | 5 | 1 | 0 |" in md
    assert "A [0, 50) cc" in md
    table = report.console_table(rows, "nnUNetTrainer", ["Dice", "HD95_mm"])
    header, baseline_line, other_line = table.splitlines()[1:4]
    assert header.split()[:3] == ["trainer", "Dice", "HD95_mm"] and "p Dice (t / W)" in header
    assert baseline_line.startswith("nnUNetTrainer (baseline)") and baseline_line.rstrip().endswith("-")
    assert "*" in other_line  # NRDiceTrainer is better on every case: significant t-test


def test_write_report_files(rows, tmp_path):
    two_panels = rows + [{**r, "label_or_region": "2"} for r in rows]
    files = report.write_report(two_panels, tmp_path, "nnUNetTrainer", ["Dice", "HD95_mm", "RVE"], (50.0, 200.0))
    assert files.results_csv.is_file() and files.report_md.is_file()
    assert len(files.box_plots) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in files.box_plots)
    with pytest.raises(ValueError, match="no result rows"):
        report.write_report([], tmp_path, "nnUNetTrainer", ["Dice"], (50.0,))


def _summary_2d(area_ref_mm2=2827.4):
    """A ``summary.json`` of 2-D data as ``evaluate_folders`` writes it (areas, no volumes)."""
    from nnunet_ext.evaluation.metrics import METRIC_KEYS_2D

    metrics = {m: 0.5 for m in METRIC_KEYS_2D}
    metrics.update({"area_ref_mm2": area_ref_mm2, "area_pred_mm2": 2500.0})
    return {"metric_per_case": [{"case": "s0", "metrics": {"1": metrics}, "size_group": {"1": "B"}}]}


def test_2d_rows_carry_areas_and_the_report_labels_area_groups(rows, tmp_path):
    rows_2d = []
    for trainer, dice in (("nnUNetTrainer", 0.7), ("NRDiceTrainer", 0.8)):
        for r in report.rows_from_summary(_summary_2d(), "Dataset801_JSRT", "2d", trainer, 0):
            rows_2d.append({**r, "Dice": dice})
    r0 = rows_2d[0]
    assert r0["area_ref_mm2"] == pytest.approx(2827.4) and r0["area_pred_mm2"] == 2500.0
    assert math.isnan(r0["volume_ref_cc"]) and math.isnan(r0["volume_ref_mm3"])
    assert report.is_2d_panel(rows_2d, ("Dataset801_JSRT", "2d", "1"))
    assert not report.is_2d_panel(rows, ("Dataset702_X", "2d", "1"))
    md = report.render_markdown(rows + rows_2d, "nnUNetTrainer", ["Dice"], (50.0, 200.0))
    assert "Size groups by reference volume: A [0, 50) cc" in md
    assert "Size groups of 2-D data (single slices) by reference area: A [0, 1600) mm², B [1600, 4000) mm²" in md
    assert "| B [1600, 4000) mm² | nnUNetTrainer (baseline) | 1 |" in md
    assert "| A [0, 50) cc | nnUNetTrainer (baseline) |" in md
    only_2d = report.render_markdown(rows_2d, "nnUNetTrainer", ["Dice"], (50.0, 200.0), size_edges_mm2=(100.0,))
    assert "reference volume" not in only_2d and "| B [100, inf) mm² |" in only_2d
    back = report.read_results_csv(report.write_results_csv(rows + rows_2d, tmp_path / "results.csv"))
    assert back[-1]["area_ref_mm2"] == pytest.approx(2827.4) and math.isnan(back[-1]["volume_ref_cc"])
    assert math.isnan(back[0]["area_ref_mm2"]) and back[0]["volume_ref_cc"] == 10.0


def seeded_rows():
    """2 trainers x 2 seeds x 3 cases; seed 1 has two folds (0.05 apart) to check fold-then-seed averaging."""
    base = {0: [0.5, 0.6, 0.7], 1: [0.7, 0.8, 0.9]}
    out = []
    for trainer, shift in (("nnUNetTrainer", 0.0), ("NRDiceTrainer", 0.1)):
        for seed, values in base.items():
            for fold in (0, 1) if seed == 1 else (0,):
                for case, dice in zip(CASES[:3], values):
                    r = row(trainer, fold, case, dice + shift + (0.05 if fold == 1 else -0.05 * (seed == 1)))
                    out.append({**r, "seed": seed, "Dice": round(r["Dice"], 10)})
    return out


def test_seed_summary_is_mean_and_sd_of_per_seed_means():
    rows = seeded_rows()
    panel = ("Dataset702_X", "2d", "1")
    assert (
        report.seeds_of(rows) == [0, 1] and report.seeds_of([{k: v for k, v in rows[0].items() if k != "seed"}]) == []
    )
    d = report.seed_summary(rows, panel, "nnUNetTrainer", "Dice")
    # seed 0: mean(0.5, 0.6, 0.7) = 0.6; seed 1: folds -0.05/+0.05 average out, mean(0.7, 0.8, 0.9) = 0.8
    assert (d.n, d.n_nan) == (2, 0)
    assert d.mean == pytest.approx(0.7) and d.sd == pytest.approx(math.sqrt(2 * 0.1**2))
    assert report.seed_summary(rows, panel, "NRDiceTrainer", "Dice").mean == pytest.approx(0.8)
    one = report.seed_summary([r for r in rows if r["seed"] == 0], panel, "nnUNetTrainer", "Dice")
    assert one.n == 1 and one.mean == pytest.approx(0.6) and math.isnan(one.sd)


def test_paired_tests_use_case_values_averaged_over_seeds():
    rows = seeded_rows()
    panel = ("Dataset702_X", "2d", "1")
    b = report.case_values(rows, panel, "nnUNetTrainer", "Dice")
    assert b == pytest.approx({"c0": 0.6, "c1": 0.7, "c2": 0.8})  # (0.5 + 0.7) / 2, ...: seeds weigh equally
    res = next(c.result for c in report.compare(rows, "nnUNetTrainer", ["Dice"]) if c.group == "all")
    assert res.n_pairs == 3 and res.mean_difference == pytest.approx(0.1)


def test_seed_column_and_seed_table_only_with_seeds(rows, tmp_path):
    one_seed = report.write_results_csv(rows, tmp_path / "one.csv").read_text().splitlines()[0]
    assert one_seed.split(",") == list(report.CSV_COLUMNS)  # files of benchmarks without seeds are unchanged
    seeded = seeded_rows()
    path = report.write_results_csv(seeded, tmp_path / "seeds.csv")
    assert path.read_text().startswith("dataset,configuration,trainer,fold,seed,case,")
    back = report.read_results_csv(path)
    assert [r["seed"] for r in back] == [r["seed"] for r in seeded]
    assert "seed" not in report.read_results_csv(tmp_path / "one.csv")[0]
    md = report.render_markdown(seeded, "nnUNetTrainer", ["Dice"], (50.0, 200.0))
    assert "metrics are averaged over the folds and seeds" in md
    assert "Over seeds 0, 1 (all cases): mean ± seed-to-seed SD of the per-seed mean over cases:" in md
    assert (
        "| nnUNetTrainer (baseline) | 2 | 0.7000 ± 0.1414 |" in md and "| NRDiceTrainer | 2 | 0.8000 ± 0.1414 |" in md
    )
    plain = report.render_markdown(rows, "nnUNetTrainer", ["Dice"], (50.0, 200.0))
    assert "Over seeds" not in plain and "averaged over the folds." in plain
    assert "Dice over seeds" in report.console_table(seeded, "nnUNetTrainer", ["Dice"])
    assert "over seeds" not in report.console_table(rows, "nnUNetTrainer", ["Dice"])


def test_box_plot_is_readable_at_its_saved_size(rows, tmp_path):
    long_name = "NRDiceAdaptiveMTSWATrainer"
    rows = rows + [{**r, "trainer": long_name} for r in rows if r["trainer"] == "NRDiceTrainer"]
    metrics = ["Dice", "HD95_mm", "RVE"]
    panel = ("Dataset702_X", "2d", "1")
    fig = report.box_plot_figure(rows, panel, "nnUNetTrainer", metrics)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first = fig.axes[0]
    labels = [t.get_text() for t in first.get_yticklabels()]
    assert labels == ["nnUNetTrainer (baseline)", "NRDiceTrainer", long_name]  # horizontal, baseline on top
    assert (
        first.get_yticklabels()[0].get_window_extent(renderer).y0
        > first.get_yticklabels()[2].get_window_extent(renderer).y0
    )
    texts = [*fig.texts, *(ax.title for ax in fig.axes)]  # fig.texts holds the suptitle
    for ax in fig.axes:  # the drawn ticks (matplotlib also keeps labels for locations outside the view)
        lo, hi = sorted(ax.get_xlim())
        texts += [t.label1 for t in ax.xaxis.get_major_ticks() if lo <= t.get_loc() <= hi and t.label1.get_text()]
        texts += [t for t in ax.get_yticklabels() if t.get_text()]
    for text in texts:  # nothing cut: every label inside the canvas, at a readable size
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, text.get_text()
        assert text.get_fontsize() >= 9
    import matplotlib.pyplot as plt

    plt.close(fig)
    (path,) = report.box_plots(rows, "nnUNetTrainer", metrics, tmp_path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert 1000 <= width <= 2400 and 350 <= height <= 900, (width, height)  # ~10.7 x 3.3 in at 150 dpi, tight
