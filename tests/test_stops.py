"""Stops a user meets: SIGTERM/SIGINT, a full disk, runs started together, a resume of a live run.

Real processes and real signals; each stop is placed by counting checkpoint writes
(``tests/kill_switch.py``), never by a timed wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import CIRCLES_STOPS, CONFIGS, QUIET, ROOT, fit_in, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops.engine import runs
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError, NonFiniteLossError
from toyloops.rules.specs import load_checkpoint

CIRCLES = str(CONFIGS / "circles_mlp.yaml")
ARGS = ["--config", CIRCLES, *CIRCLES_STOPS]
KILL_SWITCH = [sys.executable, str(ROOT / "tests/kill_switch.py")]
ENGINES = {"lightning": [sys.executable, str(ROOT / "train.py"), "fit"],
           "loop": [sys.executable, "-m", "toyloops.engine.loop_cli", "fit"]}
PREFIX = {"lightning": "version_", "loop": "loop_version_"}


def _last(cwd: Path, engine: str) -> Path:
    (found,) = cwd.glob(f"logs/circles_mlp/{PREFIX[engine]}*/checkpoints/last.ckpt")
    return found


@pytest.fixture
def uninterrupted(trained) -> dict[str, dict[str, torch.Tensor]]:
    """Final weights of an uninterrupted run, per engine (the session's shared runs)."""
    return {engine: load_checkpoint(trained(engine, "circles_mlp", *CIRCLES_STOPS).last)["state_dict"]
            for engine in ENGINES}


@pytest.mark.integration
# Each engine with one of the two signals: both signals take the same path (StopRequest), and only
# the exit code differs, which each case checks.
@pytest.mark.parametrize(("engine", "sig"), [("lightning", "TERM"), ("loop", "INT")])
def test_a_signal_saves_a_resume_point_exits_non_zero_and_resumes_exactly(engine, sig, uninterrupted, tmp_path):
    stopped = subprocess.run([*KILL_SWITCH, "3", sig, engine, "fit", *ARGS], cwd=tmp_path, capture_output=True,
                             text=True)  # the signal arrives during the 4th checkpoint write (step 16)
    assert stopped.returncode == 128 + getattr(signal, f"SIG{sig}"), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"stopped by SIG{sig} at step 16; resume point {_last(tmp_path, engine).relative_to(tmp_path)}; "
        "to resume, run the same command with --ckpt_path last")
    assert load_checkpoint(_last(tmp_path, engine))["global_step"] == 16  # mid-epoch: 19 steps an epoch
    events = EventAccumulator(str(_last(tmp_path, engine).parent.parent)).Reload()  # flushed before the resume point
    assert [e.step for e in events.Scalars("train/loss")] == [9]  # logged every 10 steps

    fit_in(tmp_path, engine, *ARGS, "--ckpt_path", "last")  # the resume, in-process: the stop was the process
    weights = load_checkpoint(_last(tmp_path, engine))["state_dict"]
    assert all(torch.equal(weights[k], uninterrupted[engine][k]) for k in weights)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 16 MB filesystem (tmpfs), so a full disk is a real ENOSPC."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_full_disk_stops_in_one_line_and_leaves_every_checkpoint_whole(engine, small_disk):
    env = {**os.environ, "BALLAST": str(small_disk / "ballast")}
    full = subprocess.run([*KILL_SWITCH, "3", "fill", engine, "fit", *ARGS], cwd=small_disk, capture_output=True,
                          text=True, env=env)  # the disk fills up just before the 3rd checkpoint write
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert full.stderr.strip().splitlines()[-1].startswith("error: No space left on device")
    checkpoints = list(small_disk.rglob("*.ckpt"))
    assert checkpoints and not list(small_disk.rglob("*.tmp"))  # no torn or temporary file left behind
    assert load_checkpoint(_last(small_disk, engine))["global_step"] == 8  # the 2nd write, whole
    (small_disk / "ballast").unlink()
    fit_in(small_disk, engine, *ARGS, "--ckpt_path", "last")  # room again: the run resumes and finishes


def test_runs_started_together_each_claim_their_own_folder(tmp_path):
    root = tmp_path / "logs/x"
    claimed: list[runs.RunFolder] = []
    threads = [threading.Thread(target=lambda: claimed.append(runs.claim_new_run(root, "version_")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.version for r in claimed) == list(range(8))
@pytest.mark.integration
def test_two_hand_loop_fits_started_together_land_in_two_folders(tmp_path):
    args = ["--config", CIRCLES, "--trainer.max_epochs=1", *QUIET, "--dashboard.boundary_every_n_epochs=0"]
    procs = [subprocess.Popen([*ENGINES["loop"], *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    folders = sorted(tmp_path.glob("logs/circles_mlp/loop_version_*"))
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "config.yaml").exists() and (folder / "checkpoints/last.ckpt").exists()


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_failing_run_removes_only_its_own_folder(engine, in_tmp, monkeypatch):
    """Another run claims a folder while this one is training; this one then fails before its
    first checkpoint: its own folder goes, the other run's stays."""
    other: list[runs.RunFolder] = []

    def another_run_starts_then_loss_is_nan(loss, step, epoch):  # noqa: ANN001, ANN202
        other.append(runs.claim_new_run(Path("logs/circles_mlp"), PREFIX[engine]))
        raise NonFiniteLossError("loss is nan")

    monkeypatch.setattr(f"toyloops.engine.{'callbacks' if engine == 'lightning' else 'loop'}.check_finite",
                        another_run_starts_then_loss_is_nan)
    with pytest.raises(NonFiniteLossError):
        run_cli("fit", *ARGS) if engine == "lightning" else run(["fit", *ARGS])
    assert [p.name for p in Path("logs/circles_mlp").iterdir()] == [other[0].path.name]


def _fit(engine: str, *args: str):  # noqa: ANN202
    return run_cli("fit", *ARGS, *args) if engine == "lightning" else run(["fit", *ARGS, *args])


@pytest.fixture
def one_epoch(trained, in_tmp):
    """``one_epoch(engine)``: the session's one-epoch run of ARGS, copied into this test's folder (as
    ``_fit(engine, "--trainer.max_epochs=1")`` there would leave it), to resume and write into."""
    return lambda engine: trained(engine, "circles_mlp", *ARGS[2:], "--trainer.max_epochs=1").copy_to(in_tmp)


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_resuming_a_run_that_is_still_running_is_refused(engine, one_epoch, in_tmp):
    folder = one_epoch(engine).run_dir
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from toyloops.engine.runs import RunFolder; "
                               "held = RunFolder(Path(sys.argv[1]), False).lock(); "
                               "print('locked', flush=True); sys.stdin.read()", str(folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # the other process holds the run now
        with pytest.raises(ConfigError, match="is in use by another process"):
            run_cli("fit", *ARGS, "--ckpt_path", "last") if engine == "lightning" else \
                run(["fit", *ARGS, "--ckpt_path", "last"])
    finally:
        holder.stdin.close()
        holder.wait()
    (run_cli if engine == "lightning" else lambda *a: run(list(a)))("fit", *ARGS, "--trainer.max_epochs=2",
                                                                     "--ckpt_path", "last")  # free again
    assert load_checkpoint(_last(in_tmp, engine))["epoch"] == 1


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_resume_that_changes_model_or_data_is_refused_and_rewrites_nothing(engine, one_epoch, in_tmp):
    run_dir = one_epoch(engine).run_dir
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ConfigError, match=r"other settings \(data.init_args.n_samples: 2000 -> 900; "
                                          r"model.init_args.net.init_args.hidden_sizes: \[32, 32\] -> \[8\]\)"):
        _fit(engine, "--trainer.max_epochs=2", "--model.net.hidden_sizes=[8]", "--data.n_samples=900",
             "--ckpt_path", "last")
    assert before == {p: p.read_bytes() for p in before}  # nothing in the run was rewritten
    _fit(engine, "--trainer.max_epochs=2", "--ckpt_path", "last")  # max_epochs may change, and is recorded
    assert "max_epochs: 2" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_resuming_from_an_older_checkpoint_forks_a_new_run(engine, one_epoch, in_tmp):
    last = one_epoch(engine).last
    older = last.with_name("after-epoch-0.ckpt")
    older.write_bytes(last.read_bytes())
    _fit(engine, "--trainer.max_epochs=2", "--ckpt_path", "last")
    newest = last.read_bytes()
    _fit(engine, "--trainer.max_epochs=2", "--ckpt_path", str(older))
    assert last.read_bytes() == newest  # the run's newer last.ckpt is untouched
    runs_now = sorted(p.name for p in (in_tmp / "logs/circles_mlp").iterdir())
    assert runs_now == [f"{PREFIX[engine]}0", f"{PREFIX[engine]}1"]
    forked = load_checkpoint(in_tmp / f"logs/circles_mlp/{PREFIX[engine]}1/checkpoints/last.ckpt")
    assert forked["global_step"] == load_checkpoint(last)["global_step"]  # the fork trained the same epochs


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_stray_folders_and_files_beside_the_runs_are_left_alone(engine, in_tmp):
    root = in_tmp / "logs/circles_mlp"
    strays = [root / f"{PREFIX[engine]}old", root / "notes", root / f"{PREFIX[engine]}7.bak"]
    for stray in strays[:2]:
        stray.mkdir(parents=True)
    strays[2].write_text("a user's file")
    _fit(engine, "--trainer.max_epochs=1")
    _fit(engine, "--trainer.max_epochs=2", "--ckpt_path", "last")
    assert load_checkpoint(root / f"{PREFIX[engine]}0/checkpoints/last.ckpt")["epoch"] == 1
    assert all(stray.exists() for stray in strays) and strays[2].read_text() == "a user's file"


def _state(pid: str) -> str | None:
    """A process's state letter (R, S, T stopped, Z dead and not yet reaped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


DDP = ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--config", str(CONFIGS / "presets/ddp_cpu.yaml"), *QUIET]


@pytest.mark.integration
@pytest.mark.parametrize(("how", "says"), [("KILL", "by peer"), ("STOP", "Timed out waiting 10000ms")])
def test_a_ddp_peer_that_dies_or_hangs_stops_the_other_rank_in_one_line(how, says, tmp_path):
    with open(tmp_path / "stderr", "w") as stderr:  # a file: a frozen rank would hold a pipe open
        rank0 = subprocess.Popen([*KILL_SWITCH, "20", f"rank1-{how}", "lightning", "fit", *DDP,
                                  "--trainer.strategy.init_args.timeout=0:00:10"], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        returncode = rank0.wait(timeout=300)  # rank 1 is killed or frozen at its step 20 (epoch 2)
    session = subprocess.run(["pgrep", "-s", str(rank0.pid)], capture_output=True, text=True).stdout.split()
    states = {pid: _state(pid) for pid in session}
    for pid in session:
        os.kill(int(pid), signal.SIGKILL)
    assert all(state in ("Z", None) for state in states.values()), f"rank 0 left a rank alive: {states}"
    errors = (tmp_path / "stderr").read_text()
    assert returncode == 1 and "Traceback" not in errors
    last_line = errors.strip().splitlines()[-1]
    assert last_line.startswith("error: a DDP peer process ended or stopped answering") and says in last_line
    assert load_checkpoint(tmp_path / "logs/blobs_mlp/version_0/checkpoints/last.ckpt")["epoch"] == 1


def test_default_root_dir_moves_the_logs_of_both_engines(in_tmp):
    _fit("lightning", "--trainer.max_epochs=1", "--trainer.default_root_dir=elsewhere")
    _fit("loop", "--trainer.max_epochs=1", "--trainer.default_root_dir=elsewhere")
    assert sorted(p.name for p in (in_tmp / "elsewhere/logs/circles_mlp").iterdir()) == ["loop_version_0", "version_0"]
    assert not (in_tmp / "logs").exists()


def test_without_the_logger_nothing_is_written_into_the_users_folder(one_epoch, in_tmp):
    ckpt = one_epoch("loop").last
    (in_tmp / "config.yaml").write_text("mine")
    (in_tmp / "predictions.csv").write_text("mine too")
    run_cli("predict", *ARGS, "--ckpt_path", str(ckpt), "--trainer.logger", "false")
    assert (in_tmp / "config.yaml").read_text() == "mine" and (in_tmp / "predictions.csv").read_text() == "mine too"
    assert (in_tmp / "logs/circles_mlp/loop_version_0/eval/predict_0/predictions.csv").exists()  # the ckpt's run


@pytest.mark.integration
def test_sigterm_to_rank_0_alone_stops_every_ddp_rank_at_a_resume_point(tmp_path):
    short = ["--trainer.max_epochs=2", "--last_checkpoint.every_n_train_steps=4"]  # 8 steps an epoch a rank
    result = subprocess.run([*KILL_SWITCH, "3", "TERM", "lightning", "fit", *DDP, *short,
                             "--trainer.strategy.init_args.timeout=0:00:30"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # rank 0 alone gets it
    assert result.returncode == 143 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "stopped by SIGTERM at step" in result.stderr.strip().splitlines()[-1]
    resumed = subprocess.run([*ENGINES["lightning"], *DDP, *short, "--ckpt_path", "last"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(tmp_path / "logs/blobs_mlp/version_0/checkpoints/last.ckpt")["global_step"] == 16
