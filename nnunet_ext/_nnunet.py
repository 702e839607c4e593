"""All coupling to nnU-Net internals lives here: unwrapping, version guard, drift canaries and the accessors of
nnU-Net trainer attributes that are not public API.

If nnU-Net changes one of the copied or hooked methods, ``tests/test_nnunet_coupling.py`` fails and names it; a
plugin trainer also checks the installed version when it is built (:func:`check_nnunet_version`) and warns when the
hooked methods differ from the tested ones (:func:`drifted_methods`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

from torch import nn

SUPPORTED_NNUNET = (">=2.8.1", "<2.9")

# sha256 of inspect.getsource(...) of the upstream methods whose bodies we mirror or whose behaviour we rely on.
# Update only after reading the upstream change and adapting the plugin.
# - train_step: mirrored (no after-step hook upstream); the one copied method body.
# - save_checkpoint / load_checkpoint: the plugin writes through super() to a temporary file and serves the loaded
#   checkpoint to super()'s torch.load (:func:`serve_loaded_checkpoint`).
# - set_deep_supervision_enabled: replaced (DDP-safe for the swapped-in teacher / SWA average).
# - perform_actual_validation / on_validation_epoch_end: the exported module is swapped into ``self.network``.
# - on_train_epoch_end: receives the step outputs (non-finite steps are filtered before it).
# - _do_i_compile / _get_deep_supervision_scales: private methods read through the accessors below.
DRIFT_CANARIES: dict[str, str] = {
    "nnUNetTrainer.train_step": "c8993de84c8c419f6471f619f82839931c8e7d1bae0b0eddca42951fcab90819",
    "nnUNetTrainer.save_checkpoint": "de4f196c42e6bcf522641d62c8e30af2c4c094f8c541943e07bbb39b965c3307",
    "nnUNetTrainer.load_checkpoint": "a386bed4eafaa4fab674a479d98323059d26764938ad7fd8ecac35b6db85ee36",
    "nnUNetTrainer.set_deep_supervision_enabled": "cbae38bd3fd9c240cffd0c7c2ef458d41a9284cefbae70dd7ddfe9785a214c46",
    "nnUNetTrainer.perform_actual_validation": "2bd52ada76cd3185a9b5a35060e35e136131027cadad568b0682620bcfd4aedb",
    "nnUNetTrainer.on_validation_epoch_end": "9a59ad7e54148668e9f409bba6d590e980224dd913461554485ecc2a11396a17",
    "nnUNetTrainer.on_train_epoch_end": "137869f87e19e8416fb4d5b98bb3a9c510ddc01ff0cb7ef81025798944abf612",
    "nnUNetTrainer._do_i_compile": "37eb59cc2ddbddd2e0bf7af72c134791263c69ddfa3fba67586d31aef6c8234f",
    "nnUNetTrainer._get_deep_supervision_scales": "1980e0000db0797a3155b06ad1f90755c8772f0bc3bca1a9e2fcd96cb28b4b29",
}
TESTED_RANGE = "nnunetv2>=2.8.1,<2.9"


def nnunet_version() -> str:
    return version("nnunetv2")


def check_nnunet_version(installed: str | None = None) -> None:
    """Raise if the installed nnunetv2 is outside the tested range (see setup.cfg); called when a plugin trainer is
    built. ``installed`` overrides the looked-up version (tests)."""
    installed = installed or nnunet_version()
    v = tuple(int(x) for x in installed.split(".")[:3] if x.isdigit())
    if not ((2, 8, 1) <= v < (2, 9, 0)):
        raise RuntimeError(
            f"nnunet_ext is tested with {TESTED_RANGE} but nnunetv2 {installed} is installed; its trainers copy and "
            f"hook nnU-Net methods of that range. Install a tested version: pip install '{TESTED_RANGE}'"
        )


def drifted_methods() -> list[str]:
    """Names of hooked nnU-Net methods whose source differs from the tested one (empty when all match)."""
    current = current_hashes()
    return sorted(name for name, digest in DRIFT_CANARIES.items() if current.get(name) != digest)


_checked = False


def check_nnunet() -> None:
    """Version guard (raises) and drift warning, once per process."""
    global _checked
    if _checked:
        return
    check_nnunet_version()
    drifted = drifted_methods()
    if drifted:
        warnings.warn(
            f"nnunetv2 {nnunet_version()} differs from the tested 2.8.1 release in {', '.join(drifted)}; nnunet_ext's "
            f"trainers may misbehave. Install the release: pip install '{TESTED_RANGE}'",
            RuntimeWarning,
            stacklevel=3,
        )
    _checked = True


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module behind DDP and ``torch.compile`` wrappers (what nnU-Net saves as ``network_weights``)."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    mod = network
    if isinstance(mod, DistributedDataParallel):
        mod = mod.module
    if isinstance(mod, OptimizedModule):
        mod = mod._orig_mod
    return mod


def source_hash(obj) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def current_hashes() -> dict[str, str]:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return {name: source_hash(getattr(nnUNetTrainer, name.split(".")[1])) for name in DRIFT_CANARIES}


# --- accessors of nnU-Net trainer internals (attributes and private methods, not public API) ---------------------


def compiles(trainer) -> bool:
    """Whether nnU-Net compiles this trainer's network (``nnUNet_compile``; CUDA default)."""
    return bool(trainer._do_i_compile())


def deep_supervision_scales(trainer) -> list:
    """nnU-Net's deep-supervision scales of the trainer's configuration."""
    return trainer._get_deep_supervision_scales()


def log_store(trainer) -> dict[str, list]:
    """The logger's per-key lists (MetaLogger's local logger); replaced by nnU-Net when a checkpoint is loaded."""
    return trainer.logger.local_logger.my_fantastic_logging


def train_loader(trainer):
    """The training data loader (None before ``on_train_start``)."""
    return getattr(trainer, "dataloader_train", None)


def set_optimizer(trainer, optimizer, lr_scheduler=None) -> None:
    """Replace the optimizer (and scheduler) nnU-Net steps, checkpoints and restores."""
    trainer.optimizer = optimizer
    if lr_scheduler is not None:
        trainer.lr_scheduler = lr_scheduler


def lr_scheduler_of(trainer):
    return trainer.lr_scheduler


@contextlib.contextmanager
def serve_loaded_checkpoint(path: str, checkpoint: dict[str, Any]) -> Iterator[None]:
    """During the block, nnU-Net's trainer module gets ``checkpoint`` when it ``torch.load``s ``path``.

    nnU-Net 2.8.1's ``load_checkpoint`` accepts only a path (a dict raises ``UnboundLocalError``) and loads it itself;
    the plugin needs the same dict for its own keys. Serving it avoids reading a large checkpoint twice. Only the
    ``torch`` name inside ``nnunetv2.training.nnUNetTrainer.nnUNetTrainer`` is replaced, by a proxy whose ``load``
    answers for that one path and forwards everything else to torch.
    """
    import torch
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as module

    target = os.path.abspath(path)

    class _TorchProxy:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def load(f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)) and os.path.abspath(f) == target:
                return checkpoint
            return torch.load(f, *args, **kwargs)

    original = module.torch
    module.torch = _TorchProxy()
    try:
        yield
    finally:
        module.torch = original


def rebuild_dataloaders(trainer) -> None:
    """Shut down the trainer's data loaders and build new ones on ``trainer.preprocessed_dataset_folder``."""
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

    for loader in (getattr(trainer, "dataloader_train", None), getattr(trainer, "dataloader_val", None)):
        if isinstance(loader, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
            loader._finish()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()


def sample_foreground_locations(seg, classes) -> dict:
    """nnU-Net's per-class foreground locations of a preprocessed seg (what its patch sampler oversamples from)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    return DefaultPreprocessor._sample_foreground_locations(seg, classes, seed=1234, verbose=False)
