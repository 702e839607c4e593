"""Fixtures of the architecture tests: a hand-made nnU-Net 2.8.1 plans dict and DDP-safe deep-supervision weights."""

from __future__ import annotations

import copy

import pytest


def _architecture(dim: int, n_stages: int, strides: list) -> dict:
    conv = "torch.nn.modules.conv.Conv2d" if dim == 2 else "torch.nn.modules.conv.Conv3d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [min(32 * 2**i, 512 if dim == 2 else 320) for i in range(n_stages)],
            "conv_op": conv,
            "kernel_sizes": [[3] * dim for _ in range(n_stages)],
            "strides": strides,
            "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(identifier: str, batch_size: int, patch_size: list, spacing: list, architecture: dict) -> dict:
    return {
        "data_identifier": identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": patch_size,
        "median_image_size_in_voxels": [float(p) for p in patch_size],
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": architecture,
        "batch_dice": True,
    }


NNUNET_PLANS = {
    "dataset_name": "Dataset777_Lesion",
    "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [2.5, 0.8, 0.8],
    "original_median_shape_after_transp": [48, 400, 400],
    "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {
        "2d": _configuration(
            "nnUNetPlans_2d", 12, [448, 448], [0.8, 0.8], _architecture(2, 7, [[1, 1]] + [[2, 2]] * 6)
        ),
        "3d_lowres": {
            **_configuration(
                "nnUNetPlans_3d_lowres",
                2,
                [40, 160, 160],
                [2.5, 1.6, 1.6],
                _architecture(3, 6, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]),
            ),
            "batch_dice": False,
            "next_stage": "3d_cascade_fullres",
        },
        "3d_fullres": _configuration(
            "nnUNetPlans_3d_fullres",
            2,
            [40, 192, 160],
            [2.5, 0.8, 0.8],
            _architecture(3, 6, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]),
        ),
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    },
    "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        "0": {
            "max": 1200.0,
            "mean": -300.0,
            "median": -350.0,
            "min": -1024.0,
            "percentile_00_5": -900.0,
            "percentile_99_5": 200.0,
            "std": 250.0,
        }
    },
}


@pytest.fixture
def nnunet_plans() -> dict:
    """A plans dict shaped like nnU-Net 2.8.1's ``nnUNetPlans.json`` (2d, 3d_lowres, 3d_fullres, cascade)."""
    return copy.deepcopy(NNUNET_PLANS)


@pytest.fixture
def ddp_ds_weights():
    """``n -> weights``: nnU-Net's deep-supervision weights with the DDP rule (last 1e-6), normalised."""
    from nnunet_ext.losses.deep_supervision import deep_supervision_weights

    return lambda n: [float(w) for w in deep_supervision_weights(n, ddp=True)]
