"""Failure behaviour: real kills and resumes, broken checkpoints, NaN losses, write errors, DDP."""

from __future__ import annotations

import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import CIRCLES_STOPS, CONFIGS, ROOT, fit_in, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops import Classifier
from toyloops.engine import cli, loop_cli
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError, NonFiniteLossError
from toyloops.rules.specs import load_checkpoint

CIRCLES = str(CONFIGS / "circles_mlp.yaml")
# circles_mlp: 1200 train samples / 64 = 19 steps an epoch; dropout makes the RNG state matter.
STEPS_PER_EPOCH, EPOCHS = 19, 3
COMMON = list(CIRCLES_STOPS)  # 3 epochs, dropout, a resume point every 4 steps (mid-epoch)
assert f"--trainer.max_epochs={EPOCHS}" in COMMON


KILL_SWITCH = [sys.executable, str(ROOT / "tests/kill_switch.py")]


def _last_ckpt(cwd: Path, engine: str) -> Path | None:
    prefix = "version_" if engine == "lightning" else "loop_version_"
    found = sorted(cwd.glob(f"logs/circles_mlp/{prefix}*/checkpoints/last.ckpt"))
    return found[-1] if found else None


def _killed_at_save(n: int, mode: str, engine: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run an engine that SIGKILLs itself at its n-th checkpoint write (see tests/kill_switch.py)."""
    return subprocess.run([*KILL_SWITCH, str(n), mode, engine, "fit", *args], cwd=cwd, capture_output=True, text=True)


def _final_weights(engine: str, cwd: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(_last_ckpt(cwd, engine))["state_dict"]


@pytest.mark.integration
# Mid-epoch: the resume restores everything an epoch boundary needs (counters, optimizer, scheduler,
# RNG) and the position inside the epoch too. (Epoch-boundary resume points are what the signal tests
# in test_stops.py and the in-process resume test in test_loop.py check.)
@pytest.mark.parametrize("where", ["mid_epoch"])
@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(engine, where, tmp_path, trained):
    args = ["--config", CIRCLES, *COMMON]
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    reference = trained(engine, "circles_mlp", *COMMON).folder  # the uninterrupted run, in-process (same code)

    killed = _killed_at_save(4, "between", engine, args, crashed)  # trained past its 4th write, then killed
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    step = load_checkpoint(_last_ckpt(crashed, engine))["global_step"]
    assert 0 < step < EPOCHS * STEPS_PER_EPOCH  # killed in the middle of the run
    assert (step % STEPS_PER_EPOCH == 0) == (where == "between_epochs")

    fit_in(crashed, engine, *args, "--ckpt_path", "last")  # the resume, in-process: the kill was the process
    assert len(list((crashed / "logs/circles_mlp").iterdir())) == 1  # resumed in the same run folder
    expected, got = _final_weights(engine, reference), _final_weights(engine, crashed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_sigkill_right_after_a_mid_epoch_resume_point_loses_none_of_the_events_logged_before_it(engine, tmp_path):
    killed = _killed_at_save(3, "after", engine, ["--config", CIRCLES, *COMMON], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    last = _last_ckpt(tmp_path, engine)
    assert load_checkpoint(last)["global_step"] == 12  # the 3rd resume point (every 4 steps), mid-epoch
    events = EventAccumulator(str(last.parent.parent)).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [9]  # logged every 10 steps: all before step 12


@pytest.mark.integration
def test_hand_loop_checkpoints_survive_kills_during_saves(tmp_path):
    """Save every step; kill inside a write, resume, kill inside another: last.ckpt always loads."""
    args = ["--config", CIRCLES, *COMMON, "--last_checkpoint.every_n_train_steps=1"]
    steps = []
    for kill in range(3):
        killed = _killed_at_save(5, "inside", "loop", [*args, *(["--ckpt_path", "last"] if kill else [])], tmp_path)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        last = _last_ckpt(tmp_path, "loop")
        torn = list(last.parent.glob(".*.tmp"))  # each kill landed inside a write: half a file there
        assert len(torn) == kill + 1 and all(tmp.stat().st_size > 0 for tmp in torn)
        steps.append(torch.load(last, weights_only=True)["global_step"])
    assert steps == [4, 8, 12]  # each resume went on from the last whole checkpoint
    fit_in(tmp_path, "loop", *args, "--ckpt_path", "last")  # in-process: the kills were the processes
    assert torch.load(_last_ckpt(tmp_path, "loop"), weights_only=True)["global_step"] == EPOCHS * STEPS_PER_EPOCH


_SAVE_STEPS = """
import sys, torch
from toyloops.engine.checkpoints import save_checkpoint
for step in range(1, 10):
    save_checkpoint({"step": step, "w": torch.full((1_000_000,), float(step))}, sys.argv[1])
"""


def test_a_kill_inside_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    target = tmp_path / "last.ckpt"
    script = tmp_path / "save_steps.py"
    script.write_text(_SAVE_STEPS)
    proc = subprocess.run([*KILL_SWITCH, "3", "inside", str(script), str(target)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (torn,) = tmp_path.glob(".*.tmp")
    assert torn.stat().st_size > 0  # half of write 3 is on disk
    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["step"] == 2 and torch.equal(checkpoint["w"], torch.full((1_000_000,), 2.0))


def _write_in_step(path: str, barrier: multiprocessing.Barrier, payload: bytes, rounds: int) -> None:
    try:
        for _ in range(rounds):
            barrier.wait(timeout=60)  # both writers start each round together
            write_atomic(path, payload)
    except BaseException:
        barrier.abort()  # the other writer stops at its next wait instead of waiting for this one
        raise


def test_two_processes_writing_one_path_never_fail_and_leave_one_whole_file(tmp_path):
    fork = multiprocessing.get_context("fork")
    barrier, target = fork.Barrier(2), tmp_path / "report.csv"
    payloads = [bytes([ord("a") + i]) * 4096 for i in range(2)]
    writers = [fork.Process(target=_write_in_step, args=(str(target), barrier, p, 300)) for p in payloads]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert [writer.exitcode for writer in writers] == [0, 0]  # a failed write_atomic exits 1
    assert target.read_bytes() in payloads and list(tmp_path.iterdir()) == [target]  # whole, no temporary left


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_broken_checkpoints_give_one_line_naming_the_file(in_tmp, content):
    bad = in_tmp / "broken.ckpt"
    bad.write_bytes(content)
    for main in (cli.main, loop_cli.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["validate", "--config", CIRCLES, "--ckpt_path", str(bad)])
        assert str(bad) in exit_info.value.code and "\n" not in exit_info.value.code
    with pytest.raises(ConfigError, match="broken.ckpt"):
        Classifier.load_from_checkpoint(bad)


def _user_error(main, args: list[str], capsys) -> str:  # noqa: ANN001
    """``main`` (what ``train.py`` / ``-m toyloops.engine.loop_cli`` run) ends in one line and a non-zero exit."""
    with pytest.raises(SystemExit) as stop, mock.patch.object(sys, "argv", ["prog"]):
        main(args)
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("error: ")  # non-zero, with a message
    assert "\n" not in stop.value.code.strip() and "Traceback" not in capsys.readouterr().err
    return stop.value.code


def test_a_broken_checkpoint_to_resume_from_is_one_line_and_writes_nothing(in_tmp, capsys):
    """train.py's entry point in-process (the real command's exit code and stderr: test_cli.py)."""
    bad = in_tmp / "broken.ckpt"
    bad.write_bytes(b"PK\x03\x04truncated zip")
    message = _user_error(cli.main, ["fit", "--config", CIRCLES, "--ckpt_path", str(bad)], capsys)
    assert message.startswith(f"error: ckpt_path='{bad}' is not a readable")
    assert not (in_tmp / "logs").exists()


class _Evil:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_a_checkpoint_whose_pickle_runs_code_is_refused(tmp_path, in_tmp):
    sentinel, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"net": _Evil(sentinel), "loop": {}, "state_dict": {}}, evil)
    with pytest.raises(ConfigError, match="evil.ckpt.*not a readable checkpoint"):
        run(["validate", "--config", CIRCLES, "--ckpt_path", str(evil)])
    with pytest.raises(ConfigError, match="evil.ckpt"):
        Classifier.load_from_checkpoint(evil)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", "--config", CIRCLES, "--ckpt_path", str(evil)])
    assert "evil.ckpt" in exit_info.value.code and "refused, it needs code to load" in exit_info.value.code
    assert not sentinel.exists()


def test_every_checkpoint_toyloops_writes_loads_as_plain_data(trained):
    folders = [trained(engine, "circles_mlp", *COMMON).folder for engine in ("lightning", "loop")]
    paths = [path for folder in folders for path in folder.rglob("*.ckpt")]
    assert len(paths) == 4  # best + last for each engine
    for path in paths:
        assert isinstance(torch.load(path, weights_only=True), dict)


EXPLODING = ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--model.scheduler=torch.optim.lr_scheduler.ExponentialLR",
             "--model.scheduler.gamma=1e6"]  # epoch 0 trains; epoch 1 runs at lr 1e4 and diverges


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_nan_loss_stops_training_at_that_step_and_the_last_checkpoint_stays_good(engine, in_tmp, capsys):
    main = cli.main if engine == "lightning" else loop_cli.main  # what train.py and -m ...loop_cli run
    message = _user_error(main, ["fit", *EXPLODING, "--trainer.enable_progress_bar=false"], capsys)
    last = next(Path("logs").rglob(f"{'' if engine == 'lightning' else 'loop_'}version_*/checkpoints/last.ckpt"))
    weights = load_checkpoint(last)["state_dict"]
    assert "error: loss is nan at step 21 (epoch 1)" in message  # the same step in both engines
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_loss_check_raises_before_the_update():
    from toyloops.rules.errors import check_finite

    check_finite(torch.tensor(0.5), 3, 0)
    with pytest.raises(NonFiniteLossError, match="inf at step 7"):
        check_finite(torch.tensor(float("inf")), 7, 1)


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_failing_checkpoint_write_stops_the_run(engine, in_tmp, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        if engine == "lightning":
            run_cli("fit", "--config", CIRCLES, "--trainer.max_epochs=2")
        else:
            run(["fit", "--config", CIRCLES, "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])


def test_a_checkpoint_folder_that_cannot_be_made_is_a_loud_error(in_tmp, capsys):
    (in_tmp / "blocker").write_text("a file where a folder should go")
    message = _user_error(cli.main, ["fit", "--config", CIRCLES, "--trainer.max_epochs=1",
                                     "--checkpoint.dirpath", str(in_tmp / "blocker" / "ckpts")], capsys)
    assert "blocker" in message


@pytest.mark.integration
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_batches_and_matches_single_process(tmp_path, monkeypatch):
    """The docs' DDP line, as written (run from a folder laid out as a clone)."""
    from test_docs import DDP_LINE

    config = str(CONFIGS / "blobs_mlp.yaml")
    for name in ("configs", "train.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    python, script, *args = shlex.split(DDP_LINE)
    result = subprocess.run([sys.executable, script, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs/blobs_mlp").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # only rank 0 wrote a run
    last = load_checkpoint(runs[0] / "checkpoints/last.ckpt")
    assert last["global_step"] == 10 * 8  # 900 train samples: 450 a rank, 8 batches of 64 an epoch
    ddp_acc = last["callbacks"][next(k for k in last["callbacks"] if k.startswith("ModelCheckpoint"))][
        "best_model_score"].item()
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")
    single = run_cli("fit", "--config", config).trainer.checkpoint_callback.best_model_score.item()
    assert abs(ddp_acc - single) <= 0.01
