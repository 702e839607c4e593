"""Trusted-case spatial label correction in nnU-Net training (issue 12): refusal, a round end to end, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import make_trainer

from nnunet_ext.training.correction import CORRECTED_DIR, ROUND_SUMMARY, SpatialCorrectionConfig, trigger_epochs

BLOCK = {"num_epochs": 2, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1, "save_every": 1}


def test_trigger_epochs():
    assert trigger_epochs(100, SpatialCorrectionConfig()) == [49]  # after epoch 50 of 100 (official -le 50)
    assert trigger_epochs(90, SpatialCorrectionConfig(rounds=3, start_fraction=0.5)) == [44, 59, 74]
    with pytest.raises(ValueError, match="do not fit"):
        trigger_epochs(2, SpatialCorrectionConfig(rounds=3))
    with pytest.raises(ValueError, match="start_fraction"):
        SpatialCorrectionConfig(start_fraction=1.0)
    with pytest.raises(ValueError, match="offset_mm"):
        SpatialCorrectionConfig(offset_mm="big")


def test_refused_without_trusted_cases(tiny_lesion_2d):
    with pytest.raises(ValueError, match="nnunet-ext trust"):
        make_trainer(tiny_lesion_2d, "SpatialCorrectionTrainer")


def test_known_offset_needs_no_trusted_cases(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "SpatialCorrectionTrainer", spatial_correction={"offset_mm": 1.6})
    assert trainer.ext_addons[0].trusted_held_out == []


def _seg(folder: Path, case: str) -> np.ndarray:
    import blosc2

    return np.asarray(blosc2.open(urlpath=str(folder / f"{case}_seg.b2nd"), mode="r"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SpatialCorrectionTrainer", "NRDiceAdaptiveMTSpatialCorrectionTrainer"])
def test_correction_round_end_to_end_and_resume(biased_lesion_2d, name):
    ds = biased_lesion_2d
    a = make_trainer(ds, name, **BLOCK)
    sc = next(x for x in a.ext_addons if x.config_key == "spatial_correction")
    assert sc.trusted_held_out == ds.trusted  # the trusted cases are held out by the split
    source = Path(a.preprocessed_dataset_folder)
    checkpoints = {}
    save = a.save_checkpoint

    def keep(filename):
        save(filename)
        checkpoints.setdefault((a.current_epoch, sc.rounds_done), Path(filename).read_bytes())

    a.save_checkpoint = keep
    a.run_training()

    folder = Path(a.output_folder) / CORRECTED_DIR / "round_0"
    summary = json.loads((folder / ROUND_SUMMARY).read_text())
    assert sc.rounds_done == 1 and a.preprocessed_dataset_folder == str(folder)
    tr_keys, _ = a.do_split()
    assert summary["estimated_on"] == ds.trusted and summary["corrected_cases"] == len(tr_keys)
    assert set(summary["offsets_mm"]) == {"1"}
    offset = summary["offsets_mm"]["1"]
    assert offset is None or np.isfinite(offset)
    assert (Path(a.output_folder) / "spatial_correction_round1.png").is_file()
    # the preprocessed dataset is untouched; trusted (validation) cases are linked unchanged, trained ones rewritten
    for case in ds.trusted:
        assert np.array_equal(_seg(folder, case), _seg(source, case))
    for case in tr_keys:
        pkl = folder / f"{case}.pkl"
        assert pkl.is_file() and not (source / f"{case}_seg.b2nd").samefile(folder / f"{case}_seg.b2nd")
    # the loaders read the corrected labels
    loader = a.dataloader_train
    loader = getattr(loader, "data_loader", None) or loader.generator
    assert loader._data.source_folder == str(folder)
    final = torch.load(Path(a.output_folder) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["nnunet_ext_state"]["spatial_correction"]["rounds_done"] == 1

    # --c from the checkpoint written right after the round: continues on the corrected labels, no second round
    after_round = checkpoints[(0, 1)]
    b = make_trainer(ds, name, **BLOCK)
    path = Path(a.output_folder) / "checkpoint_latest.pth"
    path.write_bytes(after_round)
    b.load_checkpoint(str(path))
    sc_b = next(x for x in b.ext_addons if x.config_key == "spatial_correction")
    assert sc_b.rounds_done == 1 and b.preprocessed_dataset_folder == str(folder) and b.current_epoch == 1
    b.run_training()
    assert sc_b.rounds_done == 1 and len(sc_b.offsets) == 1

    # a kill after the corrected labels were written but before the round's checkpoint: --c resumes from an older
    # checkpoint (rounds_done 0), reaches the round again and reuses the finished folder instead of recomputing it
    c = make_trainer(ds, name, **BLOCK)
    c.on_train_start()
    sc_c = next(x for x in c.ext_addons if x.config_key == "spatial_correction")

    def no_recompute(*args, **kwargs):
        raise AssertionError("the finished round was recomputed")

    sc_c._correct = no_recompute
    sc_c.run_round(c)
    assert sc_c.rounds_done == 1 and sc_c.offsets == [summary["offsets_mm"]]
    assert c.preprocessed_dataset_folder == str(folder)
    c.on_train_end()
