"""A wrongly typed value in the plans' "nnunet_ext" block is refused with its entry and key named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pytest
from trainer_helpers import make_trainer

from nnunet_ext.training.block_types import check_types, describe, matches, type_hints
from nnunet_ext.training.consistency import MeanTeacherConfig
from nnunet_ext.training.correction import SpatialCorrectionConfig


@pytest.mark.parametrize(
    ("value", "hint", "ok"),
    [
        (1, float, True),
        (0.5, float, True),
        (True, float, False),  # JSON true is not a number
        ("0.5", float, False),
        (3, int, True),
        (3.0, int, False),
        (False, int, False),
        (True, bool, True),
        (1, bool, False),
        ("prose", Literal["prose", "eq7"], True),
        ("Prose", Literal["prose", "eq7"], False),
        (None, float | None, True),
        ([1, 2.5], tuple[float, ...], True),
        ([1, "a"], tuple[float, ...], False),
        ([1, 2], tuple[int, int], True),
        ([1, 2, 3], tuple[int, int], False),
        ({"1": 0.5}, float | Mapping[str, float] | None, True),
        ({"1": "0.5"}, float | Mapping[str, float] | None, False),
        ("anything", object, True),  # no rule: not checked
    ],
)
def test_matches(value, hint, ok):
    assert matches(value, hint) is ok


def test_describe_in_json_words():
    assert describe(float) == "a number" and describe(int) == "a whole number" and describe(bool) == "true or false"
    assert describe(Literal["prose", "eq7"]) == "one of 'prose', 'eq7'"
    assert describe(float | Mapping[str, float] | None) == "a number or an object of numbers or null"


def test_config_dataclass_hints_resolve():
    hints = type_hints(MeanTeacherConfig)
    assert hints["ema_late"] is float and hints["gate_window"] is int and hints["adaptive_teacher"] is bool
    assert matches({"1": 1.5}, type_hints(SpatialCorrectionConfig)["offset_mm"])
    check_types("'mean_teacher' entry", {"ema_late": 0.99, "gate_window": 10}, hints)  # fine: no error
    with pytest.raises(ValueError) as err:
        check_types("'mean_teacher' entry", {"ema_late": "0.99"}, hints)
    assert str(err.value) == (
        "the plans' \"nnunet_ext\" 'mean_teacher' entry: 'ema_late' must be a number, got '0.99' (a string); "
        "write it as a number in the plans file"
    )


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"num_epochs": "300"}, "block: 'num_epochs' must be a whole number, got '300' (a string)"),
        ({"num_epochs": 2.5}, "block: 'num_epochs' must be a whole number, got 2.5"),
        ({"initial_lr": True}, "block: 'initial_lr' must be a number, got True (true/false)"),
        ({"loss": {"gamma": "2"}}, "'loss' entry: 'gamma' must be a number, got '2' (a string)"),
        ({"loss": {"gama": 2.0}}, "unknown key 'gama' in the plans' \"nnunet_ext\" 'loss' entry; did you mean 'gamma'"),
        ({"mean_teacher": {"adaptive_teacher": 1}}, "'mean_teacher' entry: 'adaptive_teacher' must be true or false"),
        ({"mean_teacher": {"adas_rule": "Eq7"}}, "'adas_rule' must be one of 'prose', 'eq7', got 'Eq7'"),
        ({"mean_teacher": 0.99}, "\"nnunet_ext\" 'mean_teacher' entry must be a JSON object"),
    ],
)
def test_trainer_names_the_wrongly_typed_key(tiny_lesion_2d, block, message):
    with pytest.raises(ValueError) as err:
        make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", **block)
    assert message in str(err.value) and "; " in str(err.value)


def test_well_typed_values_still_apply(tiny_lesion_2d):
    trainer = make_trainer(
        tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", initial_lr=1, num_epochs=3, mean_teacher={"ema_late": 1}
    )
    assert trainer.initial_lr == 1.0 and isinstance(trainer.initial_lr, float) and trainer.num_epochs == 3
    assert trainer.ext_addons[0].config.ema_late == 1
