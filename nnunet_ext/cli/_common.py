"""Pieces shared by the subcommands: the error convention, dataset lookup, the device flag, deprecated aliases.

Error convention: a subcommand reports bad input by raising ``ValueError`` / ``FileNotFoundError`` (or another
:data:`USER_ERRORS` class) whose message reads ``"<what is wrong>; <how to fix it>"``; :func:`nnunet_ext.cli.main.main`
prints it as ``nnunet-ext <command>: error: <message>`` on stderr and exits with code 2. Anything else (a bug) keeps
its traceback. Light module: no torch import.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from types import TracebackType

# Exception classes that report bad input. KeyError, TypeError, RuntimeError ... are bugs unless converted where
# they happen (nnU-Net's two dataset-lookup RuntimeErrors are recognised by :func:`user_error_message`).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    NotImplementedError,  # unsupported nnU-Net feature (cascade, ignore label)
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)
_OS_HINTS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "check the path"),
    (NotADirectoryError, "give a folder"),
    (IsADirectoryError, "give a file, not a folder"),
    (FileExistsError, "remove it or choose another path"),
    (PermissionError, "check the permissions or choose another path"),
)
# -device for every subcommand: "auto" is CUDA when available, else the CPU (nnU-Net's own default is cuda).
DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu", "mps")
DEVICE_HELP = "auto (default: CUDA if available, else CPU), cuda, cpu or mps"
_NNUNET_UNSET = re.compile(r"^(nnUNet_\w+) is not defined\.")
_NNUNET_NO_DATASET = re.compile(r"^Could not find a dataset with the ID (\d+)")


def _raised_by_plugin(tb: TracebackType | None) -> bool:
    """True when the innermost Python frame of ``tb`` is code of ``nnunet_ext`` (a deliberate check)."""
    module = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    return module is not None and (module == "nnunet_ext" or module.startswith("nnunet_ext."))


def with_fix(message: str, fix: str) -> str:
    """``message`` unchanged when it already says how to fix the problem (``"...; ..."``), else with ``fix`` added."""
    message = " ".join(str(message).split())  # one line
    if "; " in message:
        return message
    return f"{message.rstrip('.')}; {fix}"


def user_error_message(err: BaseException, command: str) -> str | None:
    """The one-line ``"<what is wrong>; <how to fix it>"`` of a user error, or None for a bug (keep the traceback).

    User errors: a :data:`USER_ERRORS` instance raised by the plugin's own code; any ``OSError`` of those classes
    (a path problem wherever it surfaced); a malformed JSON file; nnU-Net's "dataset not found" and "path variable
    not defined" errors. A ``ValueError`` raised inside numpy, torch or nnU-Net keeps its traceback.
    """
    help_hint = f"see 'nnunet-ext {command} -h'"
    if isinstance(err, RuntimeError) and not isinstance(err, NotImplementedError):
        text = str(err)
        unset = _NNUNET_UNSET.match(text)
        if unset:
            return f"{unset[1]} is not set; {_export_hint(unset[1])}"
        missing = _NNUNET_NO_DATASET.match(text)
        if missing:
            return missing_dataset_message(missing[1])
        return None
    if not isinstance(err, USER_ERRORS):
        return None
    if isinstance(err, OSError):
        fix = next(hint for kind, hint in _OS_HINTS if isinstance(err, kind))
        return with_fix(str(err), fix)
    if isinstance(err, json.JSONDecodeError):
        return with_fix(f"malformed JSON ({err})", "fix the file or the argument")
    if not _raised_by_plugin(err.__traceback__):
        return None
    return with_fix(str(err), help_hint)


def _export_hint(variable: str) -> str:
    return f"export {variable}=/path/to/{variable} (nnU-Net's documentation/setting_up_paths.md)"


def _roots() -> str:
    return ", ".join(f"{key}={os.environ.get(key) or '<unset>'}" for key in _ROOT_VARS.values())


_ROOT_VARS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}
_FIX_MISSING = {
    "raw": "check -d and nnUNet_raw",
    "preprocessed": "run nnUNetv2_plan_and_preprocess -d {id} first, or check -d and nnUNet_preprocessed",
    "results": "train it first (nnUNetv2_train), or check -d and nnUNet_results",
}


def missing_dataset_message(dataset: str | int, flag: str = "-d") -> str:
    """Worded as :func:`nnunet_ext.benchmark.datasets.dataset_name` words it."""
    fix = f"check {flag}, or point those variables at the folders that hold it"
    return f"dataset {str(dataset)!r} not found in {_roots()}; {fix}"


def dataset_name(dataset: str | int, flag: str = "-d", need: str | None = None) -> str:
    """``DatasetXXX_Name`` of a dataset id or name, with one-line errors that name ``flag`` and the fix.

    Args:
        dataset: id (``502``, ``"502"``) or name (``"Dataset502_X"``).
        flag: the option the user gave it with, for the message.
        need: ``"raw"``, ``"preprocessed"`` or ``"results"``: also require the dataset's folder there.

    Raises:
        ValueError: neither an id nor a name; the id names several datasets; ``nnUNet_<need>`` is not set.
        FileNotFoundError: no dataset with this id, or not in ``nnUNet_<need>``.
    """
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    text = str(dataset).strip()
    if text.startswith("Dataset"):
        name = text
    else:
        try:
            dataset_id = int(text)
        except ValueError:
            raise ValueError(
                f"{flag} {dataset!r} is neither a dataset id nor a dataset name; give an id such as 502 or a name "
                "such as Dataset502_Lesions"
            ) from None
        candidates = [str(c) for c in find_candidate_datasets(dataset_id)]
        if not candidates:
            raise FileNotFoundError(missing_dataset_message(dataset_id, flag))
        if len(candidates) > 1:
            raise ValueError(
                f"dataset id {dataset_id} names several datasets: {candidates}; remove or renumber all but one, or "
                f"pass the full name with {flag}"
            )
        name = candidates[0]
    if need is not None:
        var = _ROOT_VARS[need]
        root = os.environ.get(var)
        if not root:
            raise ValueError(f"{var} is not set; {_export_hint(var)}")
        if not os.path.isdir(os.path.join(root, name)):
            fix = _FIX_MISSING[need].format(id=text if not text.startswith("Dataset") else name)
            raise FileNotFoundError(f"dataset {name} is not in {var}={root}; {fix}")
    return name


def add_device_argument(parser: argparse.ArgumentParser, old_spelling: bool = False) -> None:
    """``-device`` (nnU-Net's spelling), :data:`DEVICES`, default ``auto``; ``old_spelling`` keeps ``--device``
    accepted, hidden (for subcommands that had it)."""
    parser.add_argument("-device", dest="device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    if old_spelling:
        add_deprecated_alias(parser, "--device", "device", choices=DEVICES)


def add_deprecated_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """A hidden old spelling of an option: same ``dest``, no default of its own, not shown by ``-h``."""
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def resolve_device(device: str):
    """The ``torch.device`` of a ``-device`` value; ``cuda`` / ``mps`` without the hardware is a user error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda requested but CUDA is not available; use -device cpu or -device auto")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("-device mps requested but MPS is not available; use -device cpu or -device auto")
    return torch.device(device)
