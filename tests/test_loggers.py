"""``--trainer.logger`` means the same to both engines' command lines: CSV, Weights & Biases offline, and MLflow
against a real tracking server started here; each run's logger holds the same metrics at the same steps."""

import contextlib
import csv
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, fit_in

ENGINES = {"lightning": "version_0", "loop": "loop_version_0"}  # each engine's first run folder
SHORT = ("--config", str(CONFIGS / "blobs_logistic.yaml"), "--trainer.max_epochs=2", "--data.n_samples=300",
         "--trainer.log_every_n_steps=2", "--dashboard.boundary_every_n_epochs=0")


def fit_both(tmp_path: Path, *args: str) -> dict[str, Path]:
    """``fit`` by each engine in a folder of its own; each one's run folder."""
    folders = {}
    for engine, version in ENGINES.items():
        (tmp_path / engine).mkdir()
        fit_in(tmp_path / engine, engine, *SHORT, *args)
        folders[engine] = tmp_path / engine / "logs/blobs_logistic" / version
    return folders


def test_a_csv_logger_on_the_command_line_writes_the_same_rows_in_both_engines(tmp_path):
    folders = fit_both(tmp_path, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger")
    rows = {engine: list(csv.DictReader((folder / "metrics.csv").open())) for engine, folder in folders.items()}
    assert len(rows["loop"]) > 5 and {"train/loss", "val/acc", "lr-SGD", "baseline/bayes"} <= set(rows["loop"][0])
    assert [(r["step"], sorted(k for k, v in r.items() if v)) for r in rows["loop"]] == \
        [(r["step"], sorted(k for k, v in r.items() if v)) for r in rows["lightning"]]  # same tags at the same steps
    for ours, theirs in zip(rows["loop"], rows["lightning"], strict=True):
        assert {k: float(v) for k, v in ours.items() if v} == pytest.approx({k: float(v) for k, v in theirs.items()
                                                                             if v}, rel=1e-6)
    hparams = {engine: yaml.safe_load((folder / "hparams.yaml").read_text()) for engine, folder in folders.items()}
    assert hparams["loop"] == hparams["lightning"] and hparams["loop"]["n_samples"] == 300  # log_hyperparams
    for folder in folders.values():  # the rest of the run beside the logger's file, as with TensorBoard
        assert (folder / "config.yaml").is_file() and (folder / "checkpoints/last.ckpt").is_file()
        assert not list(folder.glob("events.out.tfevents.*"))


def wandb_history(path: Path) -> list[dict]:
    """The rows a W&B run logged, read from its ``.wandb`` file as ``wandb sync`` reads it: a LevelDB-format log
    (a 7-byte file header, then 32 KiB blocks of records, each a 7-byte header and a piece of one ``Record``)."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, data, rows = path.read_bytes(), 7, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])  # checksum, length, full/first/middle/last
        data, pos = (b"" if kind in (1, 2) else data) + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                rows.append({key: json.loads(value) for key, value in items.items()
                             if key not in ("_timestamp", "_runtime")})
    return rows


@pytest.mark.integration  # W&B starts its own service process
def test_a_wandb_logger_offline_holds_the_same_metrics_in_both_engines(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    histories = {}
    for engine, version in ENGINES.items():
        (tmp_path / engine).mkdir()
        fit_in(tmp_path / engine, engine, *SHORT, "--trainer.logger", "lightning.pytorch.loggers.WandbLogger")
        wandb.finish()  # the run's file complete, as at the end of a process
        folder = tmp_path / engine / "logs/blobs_logistic" / version
        assert (folder / "config.yaml").is_file() and (folder / "checkpoints/last.ckpt").is_file()
        (run,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")  # W&B's files: in the run folder
        config = yaml.safe_load((folder / "config.yaml").read_text())  # which, run again, makes a run folder anew
        assert config["trainer"]["logger"]["init_args"]["save_dir"] == "logs"
        histories[engine] = wandb_history(run)
    loop, lightning = histories["loop"], histories["lightning"]
    assert len(loop) > 10 and {"train/loss", "val/acc", "lr-SGD"} <= {key for row in loop for key in row}
    assert [sorted(row) for row in loop] == [sorted(row) for row in lightning]  # the same tags, row by row
    for row, theirs in zip(loop, lightning, strict=True):
        assert row == pytest.approx(theirs, rel=1e-6)
    assert [row for row in loop if "val/acc" in row][-1]["trainer/global_step"] == 2 * 6 - 1  # 180 samples / 32


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on loopback (SQLite store), ready when its health endpoint answers."""
    pytest.importorskip("mlflow")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while True:  # poll the condition; the deadline only bounds a server that never comes up
            assert server.poll() is None, f"mlflow server ended: {server.stderr.read().decode()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=0.2)  # the poll's interval, ended at once by a server that dies
        yield uri
    finally:  # the server and the workers it started: its own process group, made for it above
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.integration
def test_an_mlflow_server_shows_a_run_of_each_engine_with_the_same_metrics_and_params(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    for engine, version in ENGINES.items():
        (tmp_path / engine).mkdir()
        fit_in(tmp_path / engine, engine, *SHORT, "--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger",
               "--trainer.logger.tracking_uri", mlflow_server, "--trainer.logger.experiment_name", "toyloops",
               "--trainer.logger.run_name", engine)
        folder = tmp_path / engine / "logs/blobs_logistic" / version  # config and checkpoints: in the run folder
        assert (folder / "config.yaml").is_file() and (folder / "checkpoints/last.ckpt").is_file()
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("toyloops")
    found = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == ["lightning", "loop"]
    assert all(run.info.status == "FINISHED" for run in found.values())
    keys = {engine: set(run.data.metrics) for engine, run in found.items()}
    assert keys["loop"] == keys["lightning"] and {"train/loss", "val/acc", "lr-SGD"} <= keys["loop"]
    for key in keys["loop"]:
        history = {engine: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                                key=lambda m: (m.step, m.timestamp))]
                   for engine, run in found.items()}
        assert [s for s, _ in history["loop"]] == [s for s, _ in history["lightning"]], key  # the same steps
        assert [v for _, v in history["loop"]] == pytest.approx([v for _, v in history["lightning"]], rel=1e-6), key
    params = {engine: run.data.params for engine, run in found.items()}
    assert params["loop"] == params["lightning"] and params["loop"]["n_samples"] == "300"


def test_a_sweeps_best_config_keeps_a_non_folder_loggers_arguments():
    """best.yaml re-points TensorBoard and CSV at a new run folder; MLflow's arguments (it has no name or
    version) are left as the trial had them, so the config still parses."""
    from toyloops.tools.sweep_results import best_config

    def logger_of(class_path, **init_args):
        text = yaml.safe_dump({"trainer": {"logger": {"class_path": class_path, "init_args": init_args}}})
        return yaml.safe_load(best_config(text))["trainer"]["logger"]["init_args"]

    mlflow = logger_of("lightning.pytorch.loggers.MLFlowLogger", experiment_name="toy", tracking_uri="http://h:1")
    assert mlflow == {"experiment_name": "toy", "tracking_uri": "http://h:1"}
    tensorboard = logger_of("toyloops.engine.loggers.TensorBoardLogger", save_dir="logs/s/trial_0003", name="x",
                            version=3)
    assert tensorboard == {"save_dir": "logs", "name": None, "version": None}
