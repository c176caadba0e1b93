"""Shared helpers: run the CLI in-process on a shipped config inside a temporary folder, and
``trained``, one short training run per (engine, config, arguments) for the whole test session."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

# One thread a process: these nets are tiny, and on a shared 2-core machine two OpenMP threads wait
# on each other (the subprocesses the tests start inherit this too). toyloops' own thread policy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOYLOOPS_THREADS", "1")

import pytest  # noqa: E402

from toyloops.engine.defaults import apply_thread_policy  # noqa: E402

apply_thread_policy()

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RUN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# The short blobs_mlp run most checkpoint tests share (``trained(engine, "blobs_mlp", *BLOBS_SHORT)``):
# 600 samples (not the config's 1500), so a loader that fell back to defaults shows.
BLOBS_SHORT = ("--trainer.max_epochs=2", "--data.n_samples=600", "--trainer.enable_progress_bar=false",
               "--dashboard.boundary_every_n_epochs=0")
# The uninterrupted circles_mlp run the stop/kill/resume tests compare against (test_stops.py,
# test_reliability.py): 3 epochs of 19 steps, dropout (so the RNG state matters on resume), a
# resume point every 4 steps (4 never divides a multiple of 19 below 76: mid-epoch).
CIRCLES_STOPS = ("--trainer.max_epochs=3", "--model.net.dropout=0.2", *QUIET, "--last_checkpoint.every_n_train_steps=4",
                 "--dashboard.boundary_every_n_epochs=0")


def documented_accuracy(name: str) -> float:
    """The best val/acc (val/loss for a regression) a run config states in its header comment."""
    match = re.search(r"best val/\w+ ([0-9.]+)", (CONFIGS / f"{name}.yaml").read_text())
    assert match, f"configs/{name}.yaml states no 'best val/acc' in its comment"
    return float(match.group(1))


def run_cli(*args: str):
    """``train.py`` in-process (LightningCLI with the template's defaults); returns the CLI."""
    from toyloops.engine.cli import ToyCLI

    with mock.patch.object(sys, "argv", ["train.py"]):  # pytest's own flags are not the CLI's
        return ToyCLI(args=[*args, *QUIET])


def fit_in(cwd: Path, engine: str, *args: str):
    """``fit`` in-process in the folder ``cwd`` by either engine: ``train.py``'s LightningCLI ("lightning",
    returns the CLI) or the hand loop ("loop", returns its results). Where a test needs a real process
    for a kill or a signal, the run before or after it needs none: the same code, without seconds of
    importing torch and Lightning again."""
    from toyloops.engine.loop_cli import run

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return run_cli("fit", *args) if engine == "lightning" else run(["fit", *args])


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


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished short run: ``folder`` is where it was started (its ``logs/`` are there).

    The folder is shared by every test in the session (and every xdist worker): read it, never
    write into it. A test that writes into a run (resume, validate/test/predict writing ``eval/``)
    works on its own copy: ``trained(...).copy_to(tmp_path)``.
    """

    folder: Path
    engine: str  # "lightning" (LightningCLI in-process), "loop" (hand loop in-process), "train.py" (a real process)
    name: str  # the config's name, the run's folder under logs/
    metrics: dict  # the run's final numbers: callback metrics and "best" (in-process engines)
    stdout: str = ""  # what a real ``python train.py`` printed
    stderr: str = ""

    @property
    def run_dir(self) -> Path:
        prefix = "loop_version_" if self.engine == "loop" else "version_"
        return self.folder / "logs" / self.name / f"{prefix}0"

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints/last.ckpt"

    def copy_to(self, destination: Path) -> TrainedRun:
        """This run copied into ``destination`` (a test's own folder), to write into."""
        shutil.copytree(self.folder, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".lock", _DONE))
        return dataclasses.replace(self, folder=destination)


_DONE = "trained.json"


def _train(engine: str, config: str, args: tuple[str, ...], folder: Path) -> dict:
    """Train in ``folder``; return what TrainedRun records besides the folder."""
    path = str(CONFIGS / f"{config}.yaml")
    if engine == "train.py":
        result = run_train_py("fit", "--config", path, *args, cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]
        return {"metrics": {}, "stdout": result.stdout, "stderr": result.stderr}
    done = fit_in(folder, engine, "--config", path, *args)
    if engine == "lightning":
        metrics = {key: value.item() for key, value in done.trainer.callback_metrics.items()}
        metrics["best"] = done.trainer.checkpoint_callback.best_model_score.item()
    else:
        metrics = {key: float(value) for key, value in done.items() if not isinstance(value, Path)}
    return {"metrics": metrics}


def session_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every xdist worker of this session shares (pytest-xdist's documented pattern for session
    fixtures: guard what goes in it with a file lock)."""
    base = tmp_path_factory.getbasetemp()
    # xdist workers each have their own basetemp inside the session's; without xdist (also under
    # -p no:xdist, where there is no worker_id fixture) the session's own folder is the one.
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def executed_tour(tmp_path_factory) -> Path:
    """``tour.ipynb``: the notebook tour executed once a session, by ``toyloops tour`` as the docs write it
    (in a folder every worker shares; the first to ask runs it, the others wait and read it)."""
    from filelock import FileLock

    from toyloops.__main__ import main

    folder = session_folder(tmp_path_factory, "tour")
    notebook = folder / "tour.ipynb"  # toyloops tour writes it whole, at the end, or not at all
    with FileLock(str(folder / ".lock")):
        if not notebook.exists():
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                main(["tour"])
    return notebook


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Callable[..., TrainedRun]:
    """``trained(engine, config, *args)``: a short run, trained once per test session.

    Under pytest-xdist the workers share one folder per run (under the session's common temp
    folder) and a file lock: the first worker to ask trains, the others wait for it and reuse the
    result (pytest-xdist's documented pattern for session fixtures). ``engine`` is "lightning" or
    "loop" (in-process, as the tests' ``run_cli`` and ``loop.run``), or "train.py" (a real
    ``python train.py fit`` process, for tests about the command itself).
    """
    from filelock import FileLock

    root = session_folder(tmp_path_factory, "trained")
    here: dict[str, TrainedRun] = {}

    def get(engine: str, config: str, *args: str) -> TrainedRun:
        assert engine in ("lightning", "loop", "train.py"), engine
        key = f"{engine}-{config}-{hashlib.sha1(json.dumps(args).encode()).hexdigest()[:12]}"
        if key not in here:
            folder = root / key
            with FileLock(str(root / f"{key}.lock")):
                done = folder / _DONE
                if not done.exists():
                    shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                    folder.mkdir()
                    record = _train(engine, config, args, folder)
                    (folder / f"{_DONE}.tmp").write_text(json.dumps(record))
                    os.replace(folder / f"{_DONE}.tmp", done)
                here[key] = TrainedRun(folder, engine, config, **json.loads(done.read_text()))
        return here[key]

    return get


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the wheel-and-venv test (about two minutes), then the other integration tests,
    then the rest in file order. pytest-xdist hands tests out in this order, so on 2 workers the long
    ones overlap the many short ones instead of leaving one worker idle at the end. (A stable sort on
    markers only: every worker collects the same order, as xdist requires.)"""
    def rank(item: pytest.Item) -> int:
        if item.path.name == "test_foreign.py":
            return 0
        return 1 if item.get_closest_marker("integration") else 2

    items.sort(key=rank)
