"""``nnunet-ext speed`` on a tiny dataset: table format, reference row, ratio, f and floor columns, per-trainer
configuration."""

from __future__ import annotations

import json

import pytest

from nnunet_ext.cli.main import build_parser, main

DATASET = "Dataset701_TinyBench"


@pytest.fixture(scope="module")
def tiny_bench(nnunet_dirs):
    """Dataset 701 (shared with the other CLI tests; built once), plus the 2d_coplenet configuration."""
    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.synthetic import make_lesion_dataset

    if not (nnunet_dirs.preprocessed / DATASET / "nnUNetPlans.json").is_file():
        make_lesion_dataset(nnunet_dirs.raw, 701, "TinyBench", num_train=5, num_test=2, shape=(6, 48, 48))
        plan_and_preprocess(701, ("2d",), verify_integrity=False)
        shrink_plans(701, "2d", batch_size=2, max_features=16)
    assert main(["add-config", "-d", "701", "--arch", "coplenet"]) == 0
    return nnunet_dirs


@pytest.mark.slow
def test_speed_table(tiny_bench, tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = "speed -d 701 -c 2d -tr NRDiceAdaptiveMTTrainer NRDiceTrainer:2d_coplenet --iterations 2 --warmup 1"
    argv = [*argv.split(), "-device", "cpu", "--inference", "--disable_tta", "--json", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("trainer:configuration"))
    header, rule, *rows = lines[start : start + 5]
    for column in ("ms/iteration (median)", "ratio to nnUNetTrainer", "f", "floor (1+f)", "ms/case inference (median)"):
        assert column in header
    assert set(rule.replace(" ", "")) == {"-"}
    names = [row.split()[0] for row in rows]
    assert names == ["nnUNetTrainer:2d", "NRDiceAdaptiveMTTrainer:2d", "NRDiceTrainer:2d_coplenet"]
    ratio_col = header.index("ratio to nnUNetTrainer")
    assert rows[0][ratio_col:].split()[0] == "1.00"
    for row in rows[1:]:
        assert float(row[ratio_col:].split()[0]) > 0
    for row in rows:  # f and floor follow the ratio
        f, floor = (float(x) for x in row[ratio_col:].split()[1:3])
        assert f > 0 and floor > 1
    payload = json.loads(out.read_text())
    assert [len(r["iteration_ms"]) for r in payload["results"]] == [2, 2, 2]
    assert [len(r["forward_ms"]) for r in payload["results"]] == [2, 2, 2]
    ref, flagship, coplenet = payload["results"]
    for r in (ref, flagship):
        assert r["f"] == pytest.approx(r["forward_median_ms"] / ref["median_ms"])
        assert r["floor"] == pytest.approx(1 + r["f"]) and r["floor_base"] == "nnUNetTrainer:2d"
    assert coplenet["floor_base"] == "nnUNetTrainer:2d"  # no stock 2d_coplenet row: the reference stands in
    assert [len(r["inference_ms"]) for r in payload["results"]] == [2, 2, 2]  # 2 test cases
    assert payload["results"][0]["ratio"] == 1.0


def test_flags_follow_nnunet_spelling_old_ones_hidden():
    parser = build_parser("speed")
    base = ["speed", "-d", "701", "-tr", "NRDiceTrainer"]
    new = parser.parse_args([*base, "-device", "cpu", "--disable_tta"])
    old = parser.parse_args([*base, "--device", "cpu", "--disable-tta"])
    assert (new.device, new.disable_tta) == (old.device, old.disable_tta) == ("cpu", True)
    default = parser.parse_args(base)
    assert (default.device, default.disable_tta) == ("auto", False)
    sub = next(a for a in parser._actions if a.dest == "command").choices["speed"]
    shown = sub.format_help()
    assert "-device" in shown and "--disable_tta" in shown
    assert "--device" not in shown and "--disable-tta" not in shown


def test_bad_input_is_refused_before_training(nnunet_dirs, capsys):
    assert main(["speed", "-d", "799", "-tr", "NRDiceTrainer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext speed: error: dataset '799' not found in ") and "check -d" in err
    assert main(["speed", "-d", "701", "-tr", "NRDiceTrainer", "--iterations", "0"]) == 2
    assert "--iterations must be >= 1" in capsys.readouterr().err
