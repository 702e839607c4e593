"""``examples/demo.py`` keeps the console short: stage lines, progress bar, table, output paths; nnU-Net's own output
(planner dictionaries, preprocessing, training logs, warnings) goes to the log file it names."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"
MAX_CONSOLE_LINES = 60


def _load_demo():
    spec = importlib.util.spec_from_file_location("nnunet_ext_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_output_to_catches_python_fd_children_warnings_and_logging(tmp_path, capfd, monkeypatch):
    demo = _load_demo()
    monkeypatch.setattr(logging.root, "handlers", [])  # as in the demo's process (pytest adds its own)
    log = tmp_path / "out.log"
    with demo.output_to(log):
        print("python print")
        os.write(1, b"fd 1 write\n")
        os.write(2, b"fd 2 write\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"])
        warnings.warn("a warning", UserWarning, stacklevel=1)
        logging.getLogger("nnunet_ext.somewhere").warning("a logged warning")
    with demo.output_to(log, stderr=False):
        print("second print")
        print("progress bar", file=sys.stderr)
    print("console again")
    captured = capfd.readouterr()
    text = log.read_text()
    for line in ("python print", "fd 1 write", "fd 2 write", "child out", "child err", "a warning", "a logged warning"):
        assert line in text and line not in captured.out + captured.err, line
    assert "second print" in text and "progress bar" in captured.err and "progress bar" not in text
    assert captured.out == "console again\n"


def test_budget_options_default_to_the_settings():
    demo = _load_demo()
    args = demo.parse_args(["--work-dir", "w"])
    assert (args.epochs, args.iterations, args.log_file) == (None, None, None)
    args = demo.parse_args(["--work-dir", "w", "--quick", "--epochs", "1", "--iterations", "2"])
    assert (args.quick, args.epochs, args.iterations) == (True, 1, 2)
    assert (demo.SETTINGS["full"]["epochs"], demo.SETTINGS["full"]["iterations"]) == (30, 25)  # README's numbers
    with pytest.raises(SystemExit):
        demo.parse_args(["--work-dir", "w", "--epochs", "0"])


@pytest.mark.slow  # ~2-4 minutes on 2 shared CPU cores: nnU-Net planning plus three 1-epoch trainings
def test_demo_console_is_short_and_nnunet_output_is_logged(tmp_path):
    work = tmp_path / "demo_work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(PYTHONPATH=str(ROOT), nnUNet_compile="f", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    argv = [sys.executable, str(DEMO), "--work-dir", str(work), "--quick", "--epochs", "1", "--iterations", "2"]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
    assert len(out) + len(err) < MAX_CONSOLE_LINES, proc.stdout + proc.stderr
    log = work / "nnunet_output.log"
    assert out[0] == f"nnU-Net's output (planning, preprocessing, training logs, warnings) goes to {log}"
    for stage in ("== 1/4", "== 2/4", "== 3/4", "== 4/4"):
        assert any(line.startswith(stage) for line in out), stage
    assert any(line.startswith("trainer ") and "Dice" in line for line in out)  # the table
    for label in ("report:", "box plot:", "models:", "nnU-Net:"):
        assert any(line.startswith(label) for line in out), label
    assert "benchmark: 100%" in proc.stderr  # the progress bar
    text = log.read_text()
    # planner dictionaries and nnU-Net's training log are in the log file, not on the console
    for marker in ("2D U-Net configuration:", "This is the configuration used by this training:", "train_loss"):
        assert marker in text and marker not in proc.stdout + proc.stderr, marker
