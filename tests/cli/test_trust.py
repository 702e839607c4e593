"""``nnunet-ext trust`` and :mod:`nnunet_ext.trusted` on a tiny raw dataset (no preprocessing needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_ext import trusted as tr
from nnunet_ext.cli.main import main
from nnunet_ext.synthetic import make_lesion_dataset

DATASET = "Dataset781_Trust"
CASES = [f"trust_{i:03d}" for i in range(12)]
TRUSTED = ["trust_002", "trust_005", "trust_011"]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """``nnUNet_raw/Dataset781_Trust`` with 12 training cases; ``nnUNet_preprocessed`` empty (not yet planned)."""
    raw, pre = tmp_path / "raw", tmp_path / "preprocessed"
    pre.mkdir()
    make_lesion_dataset(raw, 781, "Trust", num_train=12, num_test=1, shape=(2, 16, 16))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.delenv("nnUNet_results", raising=False)
    return raw, pre


def _trust(*args: str) -> int:
    return main(["trust", "-d", "781", *args])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext trust: error: ") and "Traceback" not in err
    return err


def test_add_list_clear_round_trip(dirs, capsys):
    _, pre = dirs
    path = pre / DATASET / "trusted_cases.json"
    assert _trust("trust_005", "trust_002") == 0
    out = capsys.readouterr().out
    assert f"2 trusted cases of {DATASET} (2 added) in {path} (created {pre / DATASET})" in out
    assert "held-out trusted cases per fold (nnU-Net's default split" in out
    content = json.loads(path.read_text())
    assert content["schema_version"] == 1 and content["dataset"] == DATASET
    assert content["cases"] == ["trust_002", "trust_005"] and content["updated"].endswith("+00:00")
    assert not list(path.parent.glob(".*"))  # no temp file left behind

    assert main(["trust", "-d", DATASET, "trust_002"]) == 0  # by name; idempotent
    assert "already trusted" in capsys.readouterr().out
    assert json.loads(path.read_text())["cases"] == ["trust_002", "trust_005"]

    assert _trust("trust_011", "trust_002", "--list") == 0  # merges with the recorded list
    out = capsys.readouterr().out
    assert "3 trusted cases" in out and "(1 added)" in out
    assert out.splitlines()[-3:] == TRUSTED
    assert tr.load_trusted(781) == TRUSTED

    assert _trust("--list") == 0
    assert capsys.readouterr().out.splitlines() == TRUSTED  # --list alone prints only the ids

    assert _trust("--clear") == 0
    assert "cleared 3 trusted cases" in capsys.readouterr().out
    assert not path.exists() and tr.load_trusted(DATASET) == []
    assert _trust("--list") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no trusted cases recorded" in captured.err

    assert _trust("--clear", "trust_001") == 0  # --clear then add: replaces the list
    assert tr.load_trusted(DATASET) == ["trust_001"]


def test_unknown_case_id_names_it_with_a_hint(dirs, capsys):
    assert _trust("trust_002", "trust_02", "trust_003_0000", "zzz") == 2
    err = _error(capsys)
    assert "3 of 4 case ids are not training cases of Dataset781_Trust" in err
    assert "'trust_02' (did you mean 'trust_002'" in err and "'trust_003_0000' (did you mean 'trust_003'" in err
    assert "'zzz'" in err and "; give nnU-Net case ids" in err
    assert not (dirs[1] / DATASET / "trusted_cases.json").exists()

    assert _trust("trust_012") == 2  # the test case is not a training case
    assert "'trust_012'" in _error(capsys)


def test_console_script_exits_2_without_traceback(dirs):
    code = "import sys; from nnunet_ext.cli.main import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", code, "trust", "-d", "781", "nope"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("nnunet-ext trust: error:") and "Traceback" not in proc.stderr


def test_from_file_with_comments(dirs, capsys, tmp_path):
    listing = tmp_path / "trusted.txt"
    listing.write_text("# checked by Dr. X, 2024-05\ntrust_011\n\n  trust_002   # re-checked\n#trust_003\ntrust_005\n")
    assert _trust("--from-file", str(listing), "trust_001") == 0
    assert "4 trusted cases" in capsys.readouterr().out
    assert tr.load_trusted(DATASET) == ["trust_001", *TRUSTED]

    assert _trust("--from-file", str(tmp_path / "missing.txt")) == 2
    assert "cannot read --from-file" in _error(capsys)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert _trust("--from-file", str(tmp_path / "empty.txt")) == 2
    assert "holds no case id" in _error(capsys)


def test_as_validation_split(dirs, capsys):
    _, pre = dirs
    assert _trust(*TRUSTED, "--as-validation") == 0
    out = capsys.readouterr().out
    assert "5 folds, the 3 trusted cases in every fold's validation sets (never trained on)" in out
    assert "held-out trusted cases per fold (splits_final.json): 0: 3, 1: 3, 2: 3, 3: 3, 4: 3" in out
    splits = json.loads((pre / DATASET / "splits_final.json").read_text())
    untrusted = [c for c in CASES if c not in TRUSTED]
    reference = generate_crossval_split(untrusted, seed=12345, n_splits=5)  # nnU-Net's rule on the untrusted cases
    assert len(splits) == 5
    for fold, ref in zip(splits, reference):
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
        assert set(TRUSTED) <= set(fold["val"]) and not set(TRUSTED) & set(fold["train"])
        assert fold["train"] == list(ref["train"])
        assert sorted(set(fold["val"]) - set(TRUSTED)) == list(ref["val"])
        assert sorted(fold["train"] + fold["val"]) == CASES
    for k in range(5):
        assert tr.held_out_trusted(781, k) == TRUSTED
        assert tr.require_held_out_trusted(DATASET, k) == TRUSTED
    assert tr.held_out_trusted(781, "all") == []

    assert _trust("--as-validation") == 0  # same split again: nothing written
    assert "already holds this split" in capsys.readouterr().out


def test_as_validation_spread(dirs, capsys):
    _, pre = dirs
    trusted = CASES[:5]
    assert _trust(*trusted, "--as-validation", "--spread") == 0
    assert "spread over validation sets" in capsys.readouterr().out
    splits = json.loads((pre / DATASET / "splits_final.json").read_text())
    reference = generate_crossval_split(trusted, seed=12345, n_splits=5)
    for k, (fold, ref) in enumerate(zip(splits, reference)):
        held = tr.held_out_trusted(DATASET, k)
        assert held == list(ref["val"]) and len(held) == 1
        assert sorted(set(trusted) - set(held)) == sorted(set(trusted) & set(fold["train"]))
    assert _trust("--spread") == 2
    assert "--spread only applies to --as-validation" in _error(capsys)


def test_refuses_to_overwrite_a_different_split(dirs, capsys):
    _, pre = dirs
    split_path = pre / DATASET / "splits_final.json"
    split_path.parent.mkdir()
    default = tr.nnunet_split(CASES)  # what nnU-Net's do_split writes
    split_path.write_text(json.dumps(default))
    before = split_path.read_text()

    assert _trust(*TRUSTED) == 0
    out = capsys.readouterr().out
    assert "held-out trusted cases per fold (splits_final.json):" in out
    held = [tr.held_out_trusted(DATASET, k) for k in range(5)]
    assert sorted(c for h in held for c in h) == TRUSTED  # each trusted case is held out by exactly one fold
    for k, h in enumerate(held):
        assert h == sorted(set(TRUSTED) & set(default[k]["val"]))
    empty = [k for k, h in enumerate(held) if not h]
    assert empty and "--as-validation --overwrite" in out
    with pytest.raises(ValueError, match=rf"fold {empty[0]} holds out none of the 3 trusted cases.*--as-validation"):
        tr.require_held_out_trusted(DATASET, empty[0])

    trusted_before = (pre / DATASET / "trusted_cases.json").read_text()
    assert _trust("trust_000", "--as-validation") == 2
    err = _error(capsys)
    assert "exists with a different 5-fold split; pass --overwrite" in err
    assert split_path.read_text() == before
    assert (pre / DATASET / "trusted_cases.json").read_text() == trusted_before  # refused: nothing written
    assert _trust("--as-validation", "--overwrite") == 0
    assert tr.load_splits(DATASET) == tr.trusted_split(CASES, TRUSTED)


def test_require_held_out_trusted_without_trusted_cases(dirs):
    with pytest.raises(ValueError, match="no trusted cases recorded for Dataset781_Trust.*nnunet-ext trust -d"):
        tr.require_held_out_trusted(781, 0)
    tr.save_trusted(781, TRUSTED)
    with pytest.raises(ValueError, match="fold 'all' trains on every case"):
        tr.require_held_out_trusted(781, "all")
    with pytest.raises(ValueError, match="fold 5 is not in the 1-fold split"):
        tr.held_out_trusted(781, 5, splits=[{"train": CASES[3:], "val": CASES[:3]}])


def test_preprocessed_only_dataset(dirs, monkeypatch, capsys):
    """Without the raw dataset the case ids come from the preprocessed configuration folders."""
    _, pre = dirs
    monkeypatch.setenv("nnUNet_raw", str(dirs[0].parent / "elsewhere"))
    config = pre / DATASET / "nnUNetPlans_2d"
    config.mkdir(parents=True)
    for case in CASES:
        (config / f"{case}.pkl").write_bytes(b"")
        (config / f"{case}.b2nd").write_bytes(b"")
    assert tr.training_case_ids(DATASET) == CASES
    assert _trust("trust_003") == 0
    assert tr.load_trusted(DATASET) == ["trust_003"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "nothing to do; give case ids"),
        (["-d", "782", "x"], "dataset '782' not found in nnUNet_raw="),
        (["-d", "Dataset782_Nope", "--list"], "neither in nnUNet_preprocessed"),
        (["-d", "abc", "x"], "-d 'abc' is neither a dataset id nor a dataset name; give an id"),
        (["-d", "781", "--clear", "--as-validation"], "no trusted cases recorded for Dataset781_Trust; add some"),
    ],
)
def test_refusals(dirs, capsys, argv, match):
    assert main(["trust", *(argv if argv[:1] == ["-d"] else ["-d", "781", *argv])]) == 2
    assert match in _error(capsys)


def test_bad_environment_and_files(dirs, capsys, monkeypatch):
    _, pre = dirs
    (pre / DATASET).mkdir()
    (pre / DATASET / "trusted_cases.json").write_text('["trust_001"]')
    assert _trust("--list") == 2
    err = _error(capsys)
    assert "is not a trusted-cases file" in err and "--clear" in err
    assert _trust("--clear") == 0  # the fix the error names
    assert "cleared the unreadable trusted-cases file" in capsys.readouterr().out
    assert not (pre / DATASET / "trusted_cases.json").exists()
    monkeypatch.delenv("nnUNet_preprocessed")
    assert main(["trust", "-d", DATASET, "--list"]) == 2
    assert "nnUNet_preprocessed is not set; export nnUNet_preprocessed=" in _error(capsys)


def test_trusted_split_refusals():
    with pytest.raises(ValueError, match="not among the dataset's cases"):
        tr.trusted_split(CASES, ["other"])
    with pytest.raises(ValueError, match="only 4 untrusted cases"):
        tr.trusted_split(CASES[:7], CASES[:3])
    with pytest.raises(ValueError, match="leaves a fold without one"):
        tr.trusted_split(CASES, TRUSTED, spread=True)
