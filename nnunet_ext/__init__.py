"""nnU-Net v2 extension: noise-robust losses, adaptive self-ensembling, COPLE-Net and the BraTS 2020 pipeline.

Kept import-light on purpose: nnU-Net's trainer lookup and the ``.pth`` autoload must not pull in torch.
"""

__version__ = "0.1.0"


def trainer_folder() -> str:
    """Absolute path of the folder nnU-Net must scan (``nnUNet_extTrainer``) to find the plugin's trainers."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")
