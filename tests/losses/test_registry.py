"""Registry contract: keys, shared options, class declarations, did-you-mean errors, docstring anatomy."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

import nnunet_ext.losses as losses_pkg
from nnunet_ext.losses import LOSSES, NoiseRobustDiceLoss, build_loss, loss_parameters
from nnunet_ext.losses import registry as registry_module

EXPECTED_KEYS = {
    "noise_robust_dice",
    "ce",
    "focal_ce",
    "focal_ce_gamma05",
    "mae",
    "gce",
    "dice",
    "sorensen_dice",
    "focal_dice",
    "ce_dice",
    "mae_dice",
    "region_dice",
}


def test_registry_keys():
    assert set(LOSSES) == EXPECTED_KEYS


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_every_loss_takes_the_shared_options_and_declares_regions(name):
    cls = LOSSES[name]
    # ddp everywhere: the trainer passes ddp=is_ddp whatever the loss (acting only on batch-pooled sums)
    assert {"apply_nonlin", "batch_dice", "reduction", "ddp"} <= set(loss_parameters(name))
    assert build_loss(name).ddp is False and build_loss(name, ddp=True).ddp is True
    assert cls.supports_regions is True
    assert isinstance(cls.supports_label_maps, bool)
    assert cls.__name__.endswith("Loss")
    assert getattr(losses_pkg, cls.__name__) is cls
    functional = name if name != "focal_ce_gamma05" else "focal_ce"
    assert callable(getattr(losses_pkg, functional))
    assert cls.__name__ in registry_module.__doc__ and f"``{name}``" in registry_module.__doc__


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_docstring_anatomy(name):
    doc = inspect.getdoc(LOSSES[name])
    if name == "focal_ce_gamma05":  # documented as a default-only variant of FocalCELoss
        doc = inspect.getdoc(LOSSES["focal_ce"]) + inspect.getdoc(LOSSES[name])
    assert ".. math::" in doc
    assert re.search(r"doi:10\.|arXiv:", doc)
    assert "Identities pinned by tests:" in doc


def test_build_loss_passes_options():
    loss = build_loss("noise_robust_dice", gamma=2.0, denominator="linear", batch_dice=False)
    assert isinstance(loss, NoiseRobustDiceLoss)
    assert (loss.gamma, loss.denominator, loss.batch_dice) == (2.0, "linear", False)
    defaults = build_loss("noise_robust_dice")
    assert (defaults.gamma, defaults.eps, defaults.denominator) == (1.5, 1e-5, "linear")
    assert (defaults.include_background, defaults.batch_dice, defaults.apply_nonlin) == (False, True, "softmax")
    assert build_loss("gce").q == 0.7
    assert build_loss("focal_dice").beta == 0.5
    assert build_loss("focal_ce").gamma == 2.0


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_ddp_must_be_a_bool(name):
    with pytest.raises(ValueError, match=re.escape("ddp must be True or False, got 'True'")):
        build_loss(name, ddp="True")


def test_unknown_name_suggests_a_key():
    with pytest.raises(
        KeyError, match=re.escape("unknown loss 'noise_robust_dise'. Did you mean 'noise_robust_dice'?")
    ):
        build_loss("noise_robust_dise")
    with pytest.raises(KeyError, match=re.escape("Known losses: ['ce', 'ce_dice'")):
        build_loss("zzz")


def test_unknown_option_suggests_a_parameter():
    with pytest.raises(
        ValueError, match=re.escape("loss 'noise_robust_dice' has no option 'gama'. Did you mean 'gamma'?")
    ):
        build_loss("noise_robust_dice", gama=2.0)
    with pytest.raises(ValueError, match=re.escape("loss 'ce' has no option 'include_background'")):
        build_loss("ce", include_background=True)


def test_modules_have_no_parameters_and_repr_shows_options():
    for name in EXPECTED_KEYS:
        loss = build_loss(name, apply_nonlin="sigmoid")
        assert list(loss.parameters()) == []
        assert "reduction='mean'" in repr(loss)
    assert "gamma=1.5" in repr(build_loss("noise_robust_dice"))


def test_region_dice_declares_no_label_map_support_and_others_do():
    assert {k for k, c in LOSSES.items() if not c.supports_label_maps} == {"region_dice"}
    logits, regions = torch.randn(1, 2, 3, 3), torch.ones(1, 2, 3, 3)
    assert build_loss("region_dice")(logits, regions).ndim == 0
