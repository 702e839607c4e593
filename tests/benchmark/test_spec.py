"""BenchmarkSpec: validation with did-you-mean hints, normalisation, JSON round trip, the run matrix."""

from __future__ import annotations

import json

import pytest

from nnunet_ext.benchmark.spec import BenchmarkSpec, TrainingBudget, parse_fold


def make(**kwargs) -> BenchmarkSpec:
    return BenchmarkSpec.from_dict({"trainers": ["NRDiceTrainer"], "datasets": [502], **kwargs})


def test_baseline_added_first_and_values_normalised():
    spec = make(folds=["0", 1], configurations="2d", size_edges_cc=[10, 20])
    assert spec.trainers == ("nnUNetTrainer", "NRDiceTrainer")
    assert spec.datasets == ("502",)
    assert spec.folds == (0, 1)
    assert spec.configurations == ("2d",)
    assert spec.size_edges_cc == (10.0, 20.0)


def test_baseline_already_listed_keeps_order():
    spec = make(trainers=["NRDiceTrainer", "nnUNetTrainer"])
    assert spec.trainers == ("NRDiceTrainer", "nnUNetTrainer")


def test_unknown_key_gets_did_you_mean():
    with pytest.raises(ValueError, match=r"unknown benchmark spec key 'num_epoch'; did you mean 'num_epochs'\?"):
        make(num_epoch=3)


def test_missing_required_keys():
    with pytest.raises(ValueError, match=r"lacks the required key\(s\) \['datasets'\]"):
        BenchmarkSpec.from_dict({"trainers": ["A"]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "gpu"}, r"device must be one of .* got 'gpu'"),
        ({"metrics": ["Dice", "HD95"]}, r"unknown metric 'HD95'; did you mean 'HD95_mm'\?"),
        ({"num_epochs": 0}, r"num_epochs must be an integer >= 1"),
        ({"num_iterations_per_epoch": 2.5}, r"num_iterations_per_epoch must be an integer >= 1"),
        ({"folds": [0, 0]}, r"without repeats"),
        ({"folds": [-1]}, r"folds must be integers >= 0 or 'all'"),
        ({"trainers": ["Bad__Name"]}, r"not a class name"),
        ({"trainers": ["A", "A"]}, r"lists \['A'\] more than once"),
        ({"references": {"503": "/x"}}, r"references names dataset\(s\) \['503'\] that are not in datasets"),
        ({"size_edges_cc": [200, 50]}, r"strictly increasing"),
        ({"tile_step_size": 0}, r"tile_step_size must be in \(0, 1\]"),
        ({"num_processes": -1}, r"num_processes must be an integer >= 0"),
        ({"seed": -2}, r"seed must be an integer >= 0"),
        ({"disable_tta": "yes"}, r"disable_tta must be true or false"),
        ({"trainer_overrides": {"NRDiceTrainr": {}}}, r"names 'NRDiceTrainr'.*did you mean 'NRDiceTrainer'\?"),
        ({"trainer_overrides": {"NRDiceTrainer": 3}}, r"must be a JSON object, got 3"),
    ],
)
def test_bad_values_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_json_round_trip(tmp_path):
    overrides = {"NRDiceTrainer": {"loss": {"gamma": 2.0}}}
    spec = make(folds=[0, "all"], num_epochs=2, references={"502": "/clean/labelsTs"}, trainer_overrides=overrides)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.to_dict()))
    assert BenchmarkSpec.from_json(path) == spec


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{trainers: }")
    with pytest.raises(ValueError, match="spec.json is not valid JSON"):
        BenchmarkSpec.from_json(path)


def test_runs_order_baseline_first_per_fold():
    spec = make(trainers=["A", "B"], baseline="A", datasets=[1, 2], folds=[0, 1])
    keys = [(r.dataset, r.configuration, r.fold, r.trainer) for r in spec.runs()]
    assert keys[:4] == [("1", "2d", 0, "A"), ("1", "2d", 0, "B"), ("1", "2d", 1, "A"), ("1", "2d", 1, "B")]
    assert len(keys) == 8


def test_budget_applies_only_set_values_before_initialize():
    class Fake:
        was_initialized = False
        num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch = 1000, 250, 50

    fake = Fake()
    TrainingBudget(num_epochs=3).apply(fake)
    assert (fake.num_epochs, fake.num_iterations_per_epoch, fake.num_val_iterations_per_epoch) == (3, 250, 50)
    fake.was_initialized = True
    with pytest.raises(RuntimeError, match="before trainer.initialize"):
        TrainingBudget(num_epochs=3).apply(fake)


def test_parse_fold():
    assert parse_fold("all") == "all"
    assert parse_fold("3") == 3
    with pytest.raises(ValueError, match="got '1.5'"):
        parse_fold("1.5")


def test_seeds_default_to_seed_and_order_cells_per_seed():
    assert make(seed=3).seeds == (3,) and not make(seed=3).multi_seed
    spec = make(seeds=[2, 0], folds=[0, 1])
    assert (spec.seed, spec.seeds, spec.multi_seed) == (2, (2, 0), True)
    cells = [(r.fold, r.seed, r.trainer) for r in spec.runs()]
    assert cells[:4] == [
        (0, 2, "nnUNetTrainer"),
        (0, 2, "NRDiceTrainer"),
        (0, 0, "nnUNetTrainer"),
        (0, 0, "NRDiceTrainer"),
    ]
    assert len(cells) == 8 and {r.checkpoint for r in spec.runs()} == {"final"}
    assert BenchmarkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert {r.checkpoint for r in make(checkpoint="best").runs()} == {"best"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": [0, 1, 0]}, r"seeds lists \[0\] more than once; give each seed once"),
        ({"seeds": [-1]}, r"seeds must be an integer >= 0, got -1; give seeds as whole numbers"),
        ({"seeds": ["a"]}, r"got 'a'"),
        ({"seeds": [1.5]}, r"got 1.5"),
        ({"seed": 4, "seeds": [1, 2]}, r"seed 4 and seeds \[1, 2\] disagree; give only one of them"),
        ({"checkpoint": "bset"}, r"checkpoint must be one of \('final', 'best'\), got 'bset'; did you mean 'best'\?"),
    ],
)
def test_bad_seeds_and_checkpoint(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)
