"""Every ``nnunet-ext`` subcommand answers bad input with one error line and exit code 2, never a traceback.

The convention (``nnunet_ext.cli.main``): ``nnunet-ext <command>: error: <what is wrong>; <how to fix it>`` on stderr.
Each subcommand runs in a subprocess the way the console script runs it (the ``console_scripts`` entry of setup.cfg,
imported from this working tree), against empty nnU-Net folders.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_ext.cli import _common
from nnunet_ext.cli.main import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]
MISSING = "dataset '999' not found in nnUNet_raw="
CHECK_D = "check -d"

# command -> (arguments with {tmp} for a scratch folder, parts of the problem, parts of the fix). One bad input per
# subcommand, refused before any model, training or data work.
BAD_INPUT: dict[str, tuple[list[str], tuple[str, ...], tuple[str, ...]]] = {
    "env": (["--shell", "bash"], ("argument --shell: invalid choice: 'bash'",), ("see 'nnunet-ext env -h'",)),
    "add-config": (["-d", "999", "--arch", "coplenet"], (MISSING,), (CHECK_D,)),
    "predict": (["-i", "{tmp}", "-o", "{tmp}/out", "-d", "999", "-c", "2d", "-device", "cpu"], (MISSING,), (CHECK_D,)),
    "merge-labels": (["{tmp}/A", "{tmp}/B", "{tmp}/out"], ("folder {tmp}/A does not exist",), ("check the path",)),
    "simulate-noise": (["-d", "999", "--out-id", "998", "--level", "mild", "--seed", "0"], (MISSING,), (CHECK_D,)),
    "evaluate": (["-ref", "{tmp}/ref", "-pred", "{tmp}"], ("-ref {tmp}/ref is not a folder",), ("give the folder",)),
    "benchmark": (["-d", "999", "-tr", "NRDiceTrainer", "-o", "{tmp}/b", "--dry-run"], (MISSING,), (CHECK_D,)),
    "label-update": (["-d", "999", "--out-id", "998", "-o", "{tmp}/lu", "--dry-run"], (MISSING,), (CHECK_D,)),
    "speed": (["-d", "999", "-tr", "NRDiceTrainer"], (MISSING,), (CHECK_D,)),
    "trust": (["-d", "999", "case_000"], (MISSING,), (CHECK_D,)),
    "calibrate": (["-d", "999", "-c", "2d", "-device", "cpu"], (MISSING,), (CHECK_D,)),
    "audit": (["-d", "999", "-c", "2d", "--no-loss"], (MISSING,), (CHECK_D,)),
    "prune": (["-d", "999", "--audit", "{tmp}/audit.csv", "--cases", "x", "--out-id", "998"], (MISSING,), (CHECK_D,)),
}


def _console_script() -> list[str]:
    """``python -c`` running the ``nnunet-ext`` entry point of setup.cfg, as the installed script does."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in cfg["options.entry_points"]["console_scripts"].splitlines())
        if k.strip()
    )
    module, func = entries["nnunet-ext"].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def _run(argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    for key in ("raw", "preprocessed", "results"):
        (tmp / key).mkdir(exist_ok=True)
        env[f"nnUNet_{key}"] = str(tmp / key)
    env.update(PYTHONPATH=str(ROOT), nnUNet_compile="f", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([*_console_script(), *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def test_every_subcommand_has_a_bad_input_case():
    assert sorted(SUBCOMMANDS) == sorted(BAD_INPUT), "add a bad input for each new subcommand to BAD_INPUT"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_bad_input_gives_one_error_line_and_exit_2(command, tmp_path):
    args, problem, fix = BAD_INPUT[command]
    tmp = str(tmp_path)
    proc = _run([command, *(a.format(tmp=tmp) for a in args)], tmp_path)
    err = proc.stderr
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    assert err.startswith(f"nnunet-ext {command}: error: "), err
    line = err.splitlines()[0]
    what, sep, how = line.partition("; ")
    assert sep and how.strip(), f"no fix after '; ': {line}"
    for part in problem:
        assert part.format(tmp=tmp) in what, line
    for part in fix:
        assert part.format(tmp=tmp) in how, line


def test_unknown_command_and_missing_flag_follow_the_convention(tmp_path):
    proc = _run(["frobnicate"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("nnunet-ext: error: argument COMMAND: invalid choice")
    assert "see 'nnunet-ext -h'" in proc.stderr.splitlines()[0]
    proc = _run(["trust"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("nnunet-ext trust: error: the following arguments are required: -d; see ")


# --- the rule that tells user errors from bugs (in process, no subprocess) ----------------------------------------


def _raise_in_plugin(exc: BaseException) -> BaseException:
    """``exc`` raised by code whose module is in the ``nnunet_ext`` package (as a plugin check raises it)."""
    try:
        exec(compile("raise exc", "<plugin check>", "exec"), {"__name__": "nnunet_ext.some_module", "exc": exc})
    except BaseException as err:  # noqa: BLE001 - captured to inspect its traceback
        return err
    raise AssertionError("not raised")


def test_user_errors_are_one_line_with_a_fix_and_bugs_keep_their_traceback():
    # plugin ValueError: kept as is when it names a fix, else the command's help is the fix
    assert _common.user_error_message(_raise_in_plugin(ValueError("x is bad; use y")), "speed") == "x is bad; use y"
    plain = _common.user_error_message(_raise_in_plugin(ValueError("x is bad,\n  really.")), "speed")
    assert plain == "x is bad, really; see 'nnunet-ext speed -h'"
    # the same ValueError raised outside the plugin (a library) is a bug
    try:
        raise ValueError("x is bad; use y")
    except ValueError as err:
        assert _common.user_error_message(err, "speed") is None
    # path errors from anywhere (here: the OS) are user errors
    try:
        open(os.path.join(os.sep, "no", "such", "file.json"))
    except FileNotFoundError as err:
        assert _common.user_error_message(err, "evaluate").endswith("file.json'; check the path")
    # nnU-Net's multi-line "dataset not found" RuntimeError becomes the one-line message
    nnunet_missing = RuntimeError("Could not find a dataset with the ID 42. Make sure ...\nnnUNet_raw=...")
    assert _common.user_error_message(nnunet_missing, "x").startswith("dataset '42' not found in nnUNet_raw=")
    assert _common.user_error_message(RuntimeError("nnUNet_results is not defined. ..."), "x").startswith(
        "nnUNet_results is not set; export nnUNet_results="
    )
    # bugs: other exception types, and a ValueError raised inside a library (numpy), keep the traceback
    import numpy as np

    assert _common.user_error_message(_raise_in_plugin(KeyError("k")), "x") is None
    assert _common.user_error_message(_raise_in_plugin(TypeError("t")), "x") is None
    assert _common.user_error_message(RuntimeError("CUDA out of memory"), "x") is None
    try:
        np.zeros(2) + np.zeros(3)
    except ValueError as err:
        assert _common.user_error_message(err, "x") is None


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from nnunet_ext.cli import env, main

    def broken(args):
        return {}["missing"]

    monkeypatch.setattr(env, "run", broken)
    with pytest.raises(KeyError):
        main.main(["env"])
