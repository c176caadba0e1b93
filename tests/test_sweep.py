"""``toyloops sweep``: real Optuna storages (journal file, PostgreSQL 15), real worker processes,
real SIGKILLs placed by an environment hook (no sleeps), and the one-line errors of a bad space."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_cli
from optuna.trial import TrialState

from toyloops.tools import sweep
from toyloops.tools.space import corners

SMALL = ["--trainer.max_epochs", "2", "--data.init_args.n_samples", "300"]
SPACE = {"model.optimizer.init_args.lr": {"type": "float", "low": 1.0e-3, "high": 0.1, "log": True},
         "model.net.init_args.hidden_sizes": {"type": "categorical", "choices": [[8], [16, 16]]}}


def sweep_cmd(cwd: Path, *args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toyloops", "sweep", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def write_space(folder: Path, space: object = None) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE if space is None else space))
    return path


def journal_study(folder: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / "logs/sweeps" / name / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def check_study(study: optuna.Study, trials: int, folder: Path) -> list[optuna.trial.FrozenTrial]:
    """N finished trials, none duplicated: each finished trial has its own run folder whose recorded
    config holds exactly that trial's parameters; the CSV lists every trial once."""
    all_trials = study.get_trials()
    finished = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == trials, [(t.number, t.state) for t in all_trials]
    assert [t.number for t in all_trials] == list(range(len(all_trials)))
    for t in finished:  # a retry goes on in its first try's folder
        home = t.system_attrs.get("failed_trial", t.number)
        configs = list((folder / "trials" / f"{home:04d}").glob("logs/*/*version_*/config.yaml"))
        assert len(configs) == 1, (t.number, configs)
        config = yaml.safe_load(configs[0].read_text())
        lr = config["model"]["init_args"]["optimizer"]["init_args"]["lr"]
        assert lr == pytest.approx(t.params["model.optimizer.init_args.lr"])
        assert config["model"]["init_args"]["net"]["init_args"]["hidden_sizes"] == yaml.safe_load(
            t.params["model.net.init_args.hidden_sizes"])
        events = list(configs[0].parent.glob("events.out.tfevents.*"))
        # the run's scalars, and its HParams entry beside them (a resumed run adds its own)
        assert len(events) == 2 or t.number != home, events
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in all_trials]
    assert [r["state"] for r in rows] == [t.state.name for t in all_trials]
    return all_trials


@pytest.mark.integration
def test_two_worker_sweep_with_a_killed_worker_and_best_yaml(tmp_path, monkeypatch):
    """2 local workers share the journal file; the worker running trial 1 SIGKILLs itself after
    epoch 0; the other marks that trial failed and reruns its parameters; the study reaches 4
    finished trials, and best.yaml trains to the reported number."""
    space = write_space(tmp_path)
    result = sweep_cmd(tmp_path, "--config", "blobs_mlp", "--space", str(space), "--trials", "4", "--workers", "2",
                       "--name", "two", *SMALL, env={sweep.KILL_ENV: "1:0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker" in result.stderr and "ended with exit code -9" in result.stderr
    folder = tmp_path / "logs/sweeps/two"
    trials = check_study(journal_study(tmp_path, "two"), 4, folder)
    killed = trials[1]
    assert killed.state == TrialState.FAIL and len(killed.intermediate_values) == 1  # died after epoch 0
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state.is_finished()
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert (folder / "history.png").stat().st_size > 10_000 and (folder / "importance.png").stat().st_size > 10_000

    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    header = (folder / "best.yaml").read_text().splitlines()[0]
    assert f"Best trial {best.number} " in header and f"{best.value:.4f}" in header
    assert f"best: trial {best.number}, val/acc (max) {best.value:.4f}" in result.stdout
    monkeypatch.chdir(tmp_path)  # `toyloops fit --config best.yaml`, in-process (torch is imported already)
    cli = run_cli("fit", "--config", str(folder / "best.yaml"))
    reproduced = cli.trainer.checkpoint_callback.best_model_score.item()
    assert reproduced == pytest.approx(best.value, abs=1e-4)  # deterministic on CPU: the same number
    assert (tmp_path / "logs/best/version_0/checkpoints/last.ckpt").is_file()  # a run of its own


@pytest.mark.integration
def test_killed_sweep_command_continues_when_started_again(tmp_path, monkeypatch, capsys):
    """One worker (the command itself) dies by SIGKILL as trial 1 starts, before the trial names
    its worker; the same command started again (here in-process) continues the study: trial 0 is
    kept, the orphaned trial 1 is failed and queued again, 3 trials finish in all."""
    space = write_space(tmp_path)
    args = ["--config", "blobs_mlp", "--space", str(space), "--trials", "3", "--engine", "loop", "--name", "again",
            *SMALL]
    first = sweep_cmd(tmp_path, *args, env={sweep.KILL_ENV: "1:start"})
    assert first.returncode == -9, first.stderr[-2000:]
    before = journal_study(tmp_path, "again").get_trials()
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert "worker" not in before[1].user_attrs
    monkeypatch.chdir(tmp_path)
    out = sweep.run(args)
    assert "trial 1 lost its worker (it died before naming itself)" in capsys.readouterr().err
    trials = check_study(journal_study(tmp_path, "again"), 3, tmp_path / "logs/sweeps/again")
    assert trials[0].value == before[0].value and trials[0].datetime_complete == before[0].datetime_complete
    assert trials[1].state == TrialState.FAIL and trials[2].system_attrs["failed_trial"] == 1
    assert len(trials) == 4 and out["counts"]["complete"] + out["counts"]["pruned"] == 3


@pytest.fixture
def postgres():
    """A real PostgreSQL 15 server in a temporary data folder on a loopback port, as the postgres
    user (it refuses root); stopped and removed at the end."""
    if not shutil.which("pg_ctl") or not shutil.which("initdb"):
        pytest.fail("PostgreSQL 15 (pg_ctl, initdb) must be on PATH for this test (-m 'not integration' leaves it out)")
    folder = Path(tempfile.mkdtemp(prefix="toyloops-pg-"))
    shutil.chown(folder, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_postgres, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run([*as_postgres, "pg_ctl", "-D", str(data), "-w", "-l", str(folder / "server.log"), "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.integration
def test_two_workers_share_a_postgresql_study_and_its_heartbeat_retries_a_killed_trial(tmp_path, postgres):
    """2 workers against a real PostgreSQL; the worker running trial 0 SIGKILLs itself after epoch 0;
    Optuna's heartbeat (1 s, stale after 2 s) marks it failed and the other worker reruns it."""
    space = write_space(tmp_path)
    result = sweep_cmd(tmp_path, "--config", "blobs_mlp", "--space", str(space), "--trials", "2", "--workers", "2",
                       "--storage", postgres, "--name", "pg", "--heartbeat", "1", *SMALL, env={sweep.KILL_ENV: "0:0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ended with exit code -9" in result.stderr
    study = optuna.load_study(study_name="pg", storage=postgres)
    trials = check_study(study, 2, tmp_path / "logs/sweeps/pg")
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].params == trials[0].params and retries[0].state.is_finished()
    assert not (tmp_path / "logs/sweeps/pg/study.journal").exists()  # the database holds the study


@pytest.mark.parametrize(("space", "message"), [
    ("not: [a, mapping", "not valid YAML"),
    ({"model.optimizer.init_args.lr": {"type": "float", "low": 0.1, "high": 0.01}},
     "`low <= high` must hold, but got (low=0.1, high=0.01)"),
    ({"model.optimizer.init_args.lr": {"type": "normal", "low": 0.1}}, "expected {type: float|int|categorical"),
    ({"model.optimizer.init_args.lr": {"type": "float", "low": 0, "high": 1, "log": True}},
     "`low > 0` must hold for `log=True`"),
    ({"model.net.init_args.hidden_sizes": {"type": "categorical", "choices": []}}, "expected a non-empty list"),
    ({"model.optimizer.init_args.lr": {"type": "float", "low": 0.1, "high": 1, "lg": True}}, "unknown field 'lg'"),
    ({"model.optimizer.init_args.lrr": {"type": "float", "low": 0.01, "high": 0.1}}, "lrr"),
    ({"model.net.init_args.hidden_sizes": {"type": "categorical", "choices": [[8], "x"]}}, "hidden_sizes"),
    ({"trainer.default_root_dir": {"type": "categorical", "choices": ["a"]}}, "chooses where the trials write"),
    ({"checkpoint.dirpath": {"type": "categorical", "choices": ["/tmp/x"]}}, "checkpoint.dirpath: chooses where"),
    ({"trainer.logger.init_args.save_dir": {"type": "categorical", "choices": ["x"]}}, "save_dir: chooses where"),
    ({"model.optimizer.init_args.lr": {"type": "float", "low": 0.01, "high": "1.0e300"}},
     "high='1.0e300': YAML reads 1.0e300 as a string (write 1.0e+300)"),
    (b"model.optimizer.init_args.lr: {type: float, low: 0.01, high: 0.1}\n# caf\xe9\n", "not UTF-8 text"),
    ("model.optimizer.init_args.lr: {type: float, low: 0.01, high: 0.1}\n"
     "model.optimizer.init_args.lr: {type: float, low: 0.1, high: 0.2}\n", "appears twice"),
    # 625 bytes that YAML would expand to 9**9 choices
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
                                                 for p, c in zip("abcdefgh", "bcdefghi", strict=True)) +
     "model.net.init_args.hidden_sizes: {type: categorical, choices: *i}\n", "YAML aliases"),
    ({"model.optimizer.init_args.lrr": {"type": "float", "low": 0.01, "high": 0.1}},
     "model.optimizer.init_args.lrr: no such key (model.optimizer.init_args takes: amsgrad, betas"),
    ({"data.init_args.num_foldz": {"type": "int", "low": 2, "high": 3}}, "data.init_args takes: batch_size"),
])
def test_a_bad_space_is_one_line_before_any_trial(in_tmp, space, message):
    path = in_tmp / "space.yaml"
    path.write_bytes(space if isinstance(space, bytes) else (space if isinstance(space, str) else yaml.safe_dump(space))
                     .encode())
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_mlp", "--space", str(path), "--trials", "2", "--name", "bad", *SMALL])
    line = str(stop.value.code)
    assert line.startswith("error: ") and "\n" not in line and message in line, line
    assert not (in_tmp / "logs/sweeps/bad").exists()  # no study, no trial


def test_shipped_spaces_fit_their_configs():
    """Every shipped space parses and each of its corners builds with a config of its family."""
    family = {"mlp": "blobs_mlp", "logistic": "blobs_logistic", "transformer": "majority_transformer",
              "linear": "linear_regression", "rates": "blobs_mlp"}
    shipped = sorted(p.stem for p in (Path(sweep.__file__).parent / "spaces").glob("*.yaml"))
    assert shipped == sorted(family)
    for name, config in family.items():
        space = sweep.read_space(name)
        for params in corners(space):
            sweep.check_args("lightning", ["--config", config, *sweep.as_args(params)])


@pytest.mark.integration
def test_optuna_dashboard_serves_the_sweep_study(tmp_path):
    """optuna-dashboard (a real server on 127.0.0.1) opens the journal file a sweep writes and
    serves its study and trials over HTTP."""
    import json
    import urllib.request

    opts, _ = sweep.parse(["--config", "blobs_mlp", "--space", "mlp", "--name", "dash"])
    folder = tmp_path / "logs/sweeps/dash"
    study = sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))  # as the sweep opens it
    for value in (0.9, 0.95, 0.8):
        trial = study.ask()
        trial.suggest_float("model.optimizer.init_args.lr", 1e-4, 0.1, log=True)
        study.tell(trial, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), str(folder / "study.journal"),
                               "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        def get(path: str) -> object:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return json.loads(response.read())

        for _ in range(600):  # until it listens: a readiness check, not a timed wait
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                try:
                    server.wait(timeout=0.1)  # idle until the next try; returns only if the server ended
                    pytest.fail(server.stdout.read().decode()[-2000:])
                except subprocess.TimeoutExpired:
                    pass
        studies = get("/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        detail = get(f"/api/studies/{studies[0]['study_id']}")
        assert [t["values"] for t in detail["trials"]] == [[0.9], [0.95], [0.8]]
        assert [t["state"] for t in detail["trials"]] == ["Complete"] * 3
        assert detail["trials"][1]["params"][0]["name"] == "model.optimizer.init_args.lr"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_median_pruning_stops_a_trial_in_either_engine(in_tmp, engine):
    """The same pruning rule in both engines: val/acc reported at each epoch end, and a trial below
    the median of earlier trials is stopped at its second epoch (n_warmup_steps=1), its run folder,
    checkpoints and HParams entry kept."""
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    dist = optuna.distributions.FloatDistribution(1e-3, 0.1, log=True)
    study.add_trial(optuna.create_trial(value=1.0, params={"lr": 0.01}, distributions={"lr": dist},
                                        intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))
    trial = study.ask()
    seen = []
    with pytest.raises(optuna.TrialPruned):
        sweep.fit_run(engine, ["--config", "blobs_mlp", *SMALL[:1], "4", *SMALL[2:], *sweep.QUIET,
                               "--trainer.default_root_dir", "t"], trial, lambda epoch, score: seen.append(score))
    frozen = study.get_trials()[1]
    assert sorted(frozen.intermediate_values) == [0, 1]  # reported epochs 0 and 1, pruned at 1 of 4
    assert list(frozen.intermediate_values.values()) == pytest.approx(seen) and max(seen) < 1.0
    run_dir = next((in_tmp / "t/logs/blobs_mlp").glob("*version_0"))
    assert any((run_dir / "checkpoints").glob("*.ckpt"))
    sweep.log_pruned_hparams(in_tmp / "t", engine, seen, sweep.Objective("val/acc", "max"))
    # what a worker does with a pruned trial
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(run_dir))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginRunToTagToContent("hparams")["."]
    best_logged = [e.value for run in events.Runs() if "val/acc_best" in events.Runs()[run]["scalars"]
                   for e in events.Scalars(run, "val/acc_best")]
    assert best_logged == pytest.approx([max(seen)])


def test_trials_whose_loss_goes_nan_fail_and_the_sweep_says_so(in_tmp, capfd):
    """A NaN loss fails its trial (recorded, the sweep goes on); when as many trials failed as were
    asked for, the sweep ends in one line, with the table written."""
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "float", "low": 1e30, "high": 1e35}})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_mlp", "--space", str(space), "--trials", "2", "--engine", "loop",
                    "--name", "nan", *SMALL])
    line = str(stop.value.code)
    assert line.startswith("error: 2 trials failed (the last: loss is nan") and "\n" not in line, line
    rows = list(csv.DictReader((in_tmp / "logs/sweeps/nan/results.csv").open()))
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("sweep: trial 0 failed (logs/sweeps/nan/trials/0000): loss is nan") == 1


def test_a_failed_trial_keeps_its_traceback_under_toyloops_debug(in_tmp, capfd, monkeypatch):
    monkeypatch.setenv("TOYLOOPS_DEBUG", "1")
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "float", "low": 1e30, "high": 1e35}})
    with pytest.raises(sweep.ToyloopsError):
        sweep.main(["--config", "blobs_mlp", "--space", str(space), "--trials", "1", "--engine", "loop",
                    "--name", "nan", *SMALL])
    assert "Traceback" in capfd.readouterr().err


def test_a_regression_sweep_minimises_its_objective_and_its_name_is_bound(in_tmp, capsys):
    """linear_regression keeps its best checkpoint by the lowest val/loss: the study minimises it, and
    every printout, results.csv and best.yaml name it; the name is bound to its config and space."""
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "categorical", "choices": [1e-4, 0.05]}})
    args = ["--config", "linear_regression", "--space", str(space), "--engine", "loop", "--name", "reg", *SMALL]
    sweep.run([*args, "--trials", "3"])
    printed = capsys.readouterr().out
    study = journal_study(in_tmp, "reg")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    best = min(values)
    assert study.best_value == best
    folder = in_tmp / "logs/sweeps/reg"
    assert f"best val/loss (min) {best:.4f}" in (folder / "best.yaml").read_text().splitlines()[0]
    assert f"val/loss (min) {best:.4f}" in printed and "val/acc" not in printed
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert sorted(float(r["val/loss"]) for r in rows) == pytest.approx(sorted(values), abs=1e-6)
    for other, what in ((["--config", "blobs_mlp", *args[2:]], "another config"),
                        ([*args, "--checkpoint.mode", "max"], "another config (checkpoint.mode: 'min' -> 'max')"),
                        ([*args[:2], "--space", str(write_space(in_tmp, {"model.optimizer.init_args.lr": {
                            "type": "float", "low": 1e-3, "high": 0.1}})), *args[4:]], "another space")):
        with pytest.raises(SystemExit) as stop:
            sweep.main([*other, "--trials", "4"])
        line = str(stop.value.code)
        assert line.startswith("error: --name reg: this sweep ran") and what in line and "\n" not in line, line
    assert len(journal_study(in_tmp, "reg").trials) == 3  # nothing mixed in
    write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "categorical", "choices": [1e-4, 0.05]}})
    sweep.run([*args, "--trials", "4"])  # the same config and space: the study goes on
    assert len(journal_study(in_tmp, "reg").trials) == 4


PARTIAL = b'{"op_code":5,"worker_id":"x'


@pytest.mark.parametrize(("content", "message"), [
    (PARTIAL, None),
    (b"garbage\n", "line 1 is not an Optuna journal record"),
    (b"\x00" * 64, "is not an Optuna journal"),
    (b"\xff\xfe\x00binary\n", "line 1 is not an Optuna journal record"),
    ("folder", "is not a file"),
])
def test_a_damaged_journal_is_repaired_or_refused_before_anything_is_appended(in_tmp, capsys, content, message):
    opts, _ = sweep.parse(["--config", "blobs_mlp", "--space", "mlp", "--name", "j"])
    folder = in_tmp / "logs/sweeps/j"
    study = sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))
    for value in (0.9, 0.95):
        trial = study.ask()
        trial.suggest_float("model.optimizer.init_args.lr", 1e-4, 0.1, log=True)
        study.tell(trial, value)
    journal = folder / "study.journal"
    good = journal.read_bytes()
    if content == "folder":
        journal.unlink()
        journal.mkdir()
    else:
        journal.write_bytes(good + content if content == PARTIAL else content)
    before = journal.read_bytes() if journal.is_file() else None
    if message is None:  # a partial last record: cut back to the last complete one, said in one line
        study = sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))
        err = capsys.readouterr().err
        assert f"{journal} ended in a partial record ({len(PARTIAL)} bytes): cut back to its last complete record" \
            in err and err.count("\n") == 1
        assert journal.read_bytes().startswith(good) and PARTIAL not in journal.read_bytes()
        assert not list(folder.glob("study.journal.*"))  # the cut bytes are not kept
        trial = study.ask()
        study.tell(trial, 0.5)
        assert [t.value for t in journal_study(in_tmp, "j").trials] == [0.9, 0.95, 0.5]
        return
    with pytest.raises(sweep.ConfigError) as err:
        sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))
    assert str(journal) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)
    assert (journal.read_bytes() if journal.is_file() else None) == before  # nothing appended


def test_a_whole_last_record_without_its_newline_is_kept(in_tmp, capsys):
    opts, _ = sweep.parse(["--config", "blobs_mlp", "--space", "mlp", "--name", "j"])
    folder = in_tmp / "logs/sweeps/j"
    study = sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))
    trial = study.ask()
    study.tell(trial, 0.9)
    journal = folder / "study.journal"
    good = journal.read_bytes()
    journal.write_bytes(good[:-1])
    study = sweep.open_study(opts, folder, sweep.Objective("val/acc", "max"))
    assert "a whole record, its newline added" in capsys.readouterr().err
    assert journal.read_bytes().startswith(good) and [t.value for t in study.trials] == [0.9]


def test_a_missing_sweep_argument_is_one_line(in_tmp, capsys):
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_mlp"])
    line = "error: --space: required (a search space YAML: a path or linear, logistic, mlp, rates, transformer)"
    assert str(stop.value.code) == line
    assert "usage" not in capsys.readouterr().err


@pytest.mark.integration
def test_sigterm_during_a_sweep_says_how_to_continue_it(tmp_path, monkeypatch, capsys):
    """SIGTERM as the first trial's second checkpoint write starts: the trial stops, and the one line
    names the sweep command that continues the study, not fit's --ckpt_path last; that command
    retries the stopped trial from the resume point its stop saved, in its folder."""
    space = write_space(tmp_path)
    args = ["sweep", "--config", "blobs_mlp", "--space", str(space), "--trials", "2", "--name", "term", *SMALL]
    import toyloops.__main__

    result = subprocess.run([sys.executable, str(Path(__file__).parent / "kill_switch.py"), "1", "TERM",
                             toyloops.__main__.__file__, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 143, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "--ckpt_path" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last.startswith("stopped by SIGTERM") and last.endswith(
        f"to continue the sweep, run the same command again: toyloops {' '.join(args)}"), last
    monkeypatch.chdir(tmp_path)
    sweep.run(args[1:])
    assert "trial 1 retries trial 0 from its last.ckpt" in capsys.readouterr().out
    trials = check_study(journal_study(tmp_path, "term"), 2, tmp_path / "logs/sweeps/term")
    assert trials[0].state == TrialState.FAIL and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params and trials[1].state.is_finished()
