"""All coupling to nnU-Net internals lives here: unwrapping, version guard, and the drift canary hashes.

If nnU-Net changes one of the copied or hooked methods, ``tests/test_nnunet_coupling.py`` fails and names it.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

from torch import nn

SUPPORTED_NNUNET = (">=2.8.1", "<2.9")

# sha256 of inspect.getsource(...) of the upstream methods whose bodies we mirror or whose behaviour we rely on.
# Update only after reading the upstream change and adapting the plugin.
DRIFT_CANARIES: dict[str, str] = {
    "nnUNetTrainer.train_step": "c8993de84c8c419f6471f619f82839931c8e7d1bae0b0eddca42951fcab90819",
    "nnUNetTrainer.save_checkpoint": "de4f196c42e6bcf522641d62c8e30af2c4c094f8c541943e07bbb39b965c3307",
    "nnUNetTrainer.load_checkpoint": "a386bed4eafaa4fab674a479d98323059d26764938ad7fd8ecac35b6db85ee36",
}


def nnunet_version() -> str:
    return version("nnunetv2")


def check_nnunet_version() -> None:
    """Raise if the installed nnunetv2 is outside the supported range (see setup.cfg)."""
    v = tuple(int(x) for x in nnunet_version().split(".")[:3] if x.isdigit())
    if not ((2, 8, 1) <= v < (2, 9, 0)):
        raise RuntimeError(
            f"nnunet_ext supports nnunetv2>=2.8.1,<2.9 but nnunetv2 {nnunet_version()} is installed; "
            "install a supported version: pip install 'nnunetv2>=2.8.1,<2.9'"
        )


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
