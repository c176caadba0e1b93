"""A sweep's trials and workers killed for real (SIGKILL, placed by the sweep's test hook, no sleeps): a
killed trial's retry resumes from the trial's own last.ckpt, in its folder, to the weights of a trial that
was never killed; a killed coordinator takes its workers with it, and the restarted sweep writes its report."""

from __future__ import annotations

import csv
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from toyloops.tools import sweep

SPACE = {"model.optimizer.init_args.lr": {"type": "categorical", "choices": [0.02]},
         "model.net.init_args.hidden_sizes": {"type": "categorical", "choices": [[16, 16]]}}
SMALL = ["--data.init_args.n_samples", "300"]


def sweep_cmd(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toyloops", "sweep", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def study_of(folder: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = JournalStorage(JournalFileBackend(str(folder / "logs/sweeps" / name / "study.journal")))
    return optuna.load_study(study_name=name, storage=journal)


def train_loss_steps(run_dir: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "train/loss" in accumulator.Tags()["scalars"]:
            steps += [event.step for event in accumulator.Scalars("train/loss")]
    return steps


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_killed_trial_resumes_from_its_own_last_checkpoint(tmp_path, monkeypatch, capsys, engine):
    """Trial 0 (3 epochs) is SIGKILLed once epoch 1's checkpoints are written; the same command started
    again fails it and retries it: same parameters, same folder and run, from its last.ckpt (the epochs
    done are not trained again: no train/loss step is logged twice), to the weights of a sweep never killed."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    args = ["--config", "blobs_mlp", "--space", "space.yaml", "--trials", "1", "--engine", engine,
            "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1", *SMALL]
    killed = sweep_cmd(tmp_path, *args, "--name", "k", env={sweep.KILL_ENV: "0:1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [t.state for t in study_of(tmp_path, "k").trials] == [TrialState.RUNNING]
    monkeypatch.chdir(tmp_path)
    out = sweep.run([*args, "--name", "k"])
    said = capsys.readouterr().out
    assert f"trial 1 retries trial 0 from its last.ckpt ({Path('logs/sweeps/k/trials/0000')})" in said
    first, retry = study_of(tmp_path, "k").trials
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE and retry.params == first.params
    assert sorted(retry.intermediate_values) == [0, 1, 2]  # epochs 0 and 1 its first try's, 2 its own
    runs = list((tmp_path / "logs/sweeps/k/trials").glob("*/logs/blobs_mlp/*version_*"))
    assert [run.relative_to(tmp_path / "logs/sweeps/k/trials").parts[0] for run in runs] == ["0000"]  # one run

    reference = sweep.run([*args, "--name", "ref"])
    assert out["best"] == reference["best"]
    [reference_run] = (tmp_path / "logs/sweeps/ref/trials").glob("*/logs/blobs_mlp/*version_*")
    weights = [torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"] for run in (runs[0],
                                                                                                      reference_run)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    steps = train_loss_steps(runs[0])
    assert len(steps) == len(set(steps)) and set(steps) <= set(train_loss_steps(reference_run))
    assert max(steps) == max(train_loss_steps(reference_run))


def ends(pid: int) -> bool:
    """Whether the process ends (or has ended) within a minute: its pidfd becomes readable when it exits,
    an event waited for, not a sleep (the minute only bounds a failing test, as a subprocess timeout does)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], 60)[0])
    finally:
        os.close(fd)


@pytest.mark.integration
def test_workers_die_with_a_killed_coordinator_and_the_restarted_sweep_reports(tmp_path):
    """The worker running trial 1 SIGKILLs its coordinator once epoch 0's checkpoints are written: both
    workers end with it (no worker pid survives), the study is left unfinished; the same command started
    again fails their trials, retries the one with a checkpoint from it, and writes results.csv and best.yaml."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({
        "model.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}}))
    args = ["--config", "blobs_mlp", "--space", "space.yaml", "--trials", "3", "--workers", "2", "--name", "c",
            "--trainer.max_epochs", "2", *SMALL]
    first = sweep_cmd(tmp_path, *args, env={sweep.KILL_ENV: "1:0:coordinator"})
    assert first.returncode == -9, first.stderr[-3000:]
    # run() returned once every holder of the output pipes had closed them: the workers are ending too
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", first.stdout)]
    assert len(pids) == 2 and all(ends(pid) for pid in pids), first.stdout[-2000:]
    assert not (tmp_path / "logs/sweeps/c/results.csv").exists()
    before = study_of(tmp_path, "c").trials
    assert sum(t.state.is_finished() for t in before) < 3 and before[1].state == TrialState.RUNNING

    # again as a command of its own: its --workers bound is then its own memory, not this test process's
    again = sweep_cmd(tmp_path, *args, env={})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 1 lost its worker" in again.stderr and "retries trial 1 from its last.ckpt" in again.stdout
    trials = study_of(tmp_path, "c").trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and "== toyloops sweep c ==" in again.stdout  # the report, printed
    rows = list(csv.DictReader((tmp_path / "logs/sweeps/c/results.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert (tmp_path / "logs/sweeps/c/best.yaml").read_text().startswith(f"# Best trial {best.number} ")
