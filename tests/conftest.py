"""Shared helpers: run the CLI in-process on a shipped config inside a temporary folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

# One thread a process: these nets are tiny, and on a shared 2-core machine two OpenMP threads wait
# on each other (the subprocesses the tests start inherit this too). toyloops' own thread policy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOYLOOPS_THREADS", "1")

import pytest  # noqa: E402

from toyloops.config import apply_thread_policy  # noqa: E402

apply_thread_policy()

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RUN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def documented_accuracy(name: str) -> float:
    """The best val/acc (val/loss for a regression) a run config states in its header comment."""
    match = re.search(r"best val/\w+ ([0-9.]+)", (CONFIGS / f"{name}.yaml").read_text())
    assert match, f"configs/{name}.yaml states no 'best val/acc' in its comment"
    return float(match.group(1))


def run_cli(*args: str):
    """``train.py`` in-process (LightningCLI with the template's defaults); returns the CLI."""
    from toyloops.cli import ToyCLI

    with mock.patch.object(sys, "argv", ["train.py"]):  # pytest's own flags are not the CLI's
        return ToyCLI(args=[*args, *QUIET])


def run_train_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python train.py ...`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so ``logs/`` is created there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
