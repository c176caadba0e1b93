"""TensorBoard as a person sees it: a real server over both engines' runs, images, hparams, CSV."""

import csv
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BLOBS_SHORT, CONFIGS, run_cli

from toyloops import MLP, Classifier, PointsDataModule, probabilities
from toyloops.engine.dashboard import confusion_matrix_image, decision_boundary, flat_hparams
from toyloops.engine.loop_cli import run

MLP_CONFIG = str(CONFIGS / "blobs_mlp.yaml")
SHORT = ["--config", MLP_CONFIG, "--trainer.max_epochs=2", "--dashboard.boundary_every_n_epochs=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.integration
def test_a_real_tensorboard_server_shows_both_engines(in_tmp):
    run_cli("fit", *SHORT)
    run(["fit", *SHORT, "--trainer.enable_progress_bar=false"])
    # Each resumed for a third epoch: the HParams tab must show the effective config, not the first leg's.
    run_cli("fit", *SHORT, "--trainer.max_epochs=3", "--ckpt_path", "logs/blobs_mlp/version_0/checkpoints/last.ckpt")
    run(["fit", *SHORT, "--trainer.max_epochs=3", "--ckpt_path", "logs/blobs_mlp/loop_version_0/checkpoints/last.ckpt",
         "--trainer.enable_progress_bar=false"])
    port = _free_port()
    # --reload_task blocking: the runs are loaded before the server starts, which it announces on stderr
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", "logs", "--host", "127.0.0.1",
                               "--port", str(port), "--reload_task", "blocking", "--reload_interval", "0",
                               "--load_fast", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        while not any(f"http://127.0.0.1:{port}" in line for line in said):
            line = server.stderr.readline()
            assert line or server.poll() is None, "".join(said)  # it ended without serving
            said.append(line)
        runs = _get(port, "/data/runs")
        assert sorted(runs) == ["blobs_mlp/loop_version_0", "blobs_mlp/version_0"]
        scalars, images = _get(port, "/data/plugin/scalars/tags"), _get(port, "/data/plugin/images/tags")
        graphs = _get(port, "/data/plugin/graphs/info")
        groups = _get(port, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        sessions = {group["name"]: group for group in groups["sessionGroups"]}
        for name in runs:
            assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr-AdamW", "val/acc_best"} <= set(scalars[name])
            assert {"val/decision_boundary", "val/confusion_matrix"} <= set(images[name])
            assert graphs[name]["run_graph"]
            hparams = sessions[name]["hparams"]
            assert hparams["model.net"] == "MLP" and hparams["model.optimizer.lr"] == 0.01
            assert hparams["trainer.max_epochs"] == 3  # the resumed leg's
            assert hparams["run"] == name and hparams["engine"] == ("loop" if "loop_" in name else "lightning")
            assert {"trainer.precision", "trainer.devices", "trainer.strategy"} <= set(hparams)
            metrics = {m["name"]["tag"]: m["value"] for m in sessions[name]["metricValues"]}
            assert metrics["val/acc_best"] > 0.95
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_boundary_images_follow_the_interval_and_switch_off(in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(["fit", "--config", MLP_CONFIG, "--trainer.max_epochs=5", "--dashboard.boundary_every_n_epochs=2",
         "--trainer.enable_progress_bar=false"])
    run(["fit", "--config", MLP_CONFIG, "--trainer.max_epochs=2", "--dashboard.boundary_every_n_epochs=0",
         "--dashboard.confusion_matrix=false", "--dashboard.graph=false", "--trainer.enable_progress_bar=false"])
    on, off = (EventAccumulator(f"logs/blobs_mlp/loop_version_{i}").Reload() for i in (0, 1))
    steps_per_epoch = 15
    assert [e.step for e in on.Images("val/decision_boundary")] == [
        2 * steps_per_epoch - 1, 4 * steps_per_epoch - 1, 5 * steps_per_epoch - 1]  # epochs 2, 4, last
    assert off.Tags()["images"] == [] and not off.Tags()["graph"]


def test_decision_boundary_colours_each_blob_with_its_class():
    dm = PointsDataModule("blobs", n_samples=600, centers=[[-3, 0], [3, 0]], seed=0)
    x, y = dm.splits["train"]
    net = MLP(2, 2, hidden_sizes=[8])
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    image = decision_boundary(net, x, y, resolution=64).astype(int)
    assert image.shape == (64, 64, 3) and image.dtype == np.int64
    left, right = image[32, 2], image[32, -3]  # far left is class 0 (blue), far right class 1 (red)
    assert left[2] > left[0] and right[0] > right[2]


def test_confusion_matrix_image_has_one_cell_per_class_pair():
    net = MLP(2, 3)
    image = confusion_matrix_image(net, torch.randn(30, 2), torch.randint(0, 3, (30,)), 3, cell=40)
    assert image.shape == (160, 160, 3)


def test_hparams_are_the_configs_scalars():
    flat = flat_hparams((CONFIGS / "blobs_mlp.yaml").read_text())
    assert flat["model.net"] == "MLP" and flat["model.net.hidden_sizes"] == "[32, 32]"
    assert flat["model.optimizer.lr"] == 0.01 and flat["data.dataset"] == "blobs"
    assert flat["trainer.max_epochs"] == 10 and flat["seed_everything"] == 0


def test_predict_writes_a_csv_that_matches_the_model(in_tmp, trained, capsys):
    models = Path("models")  # a user's folder, with a file of the user's beside the checkpoint
    models.mkdir()
    (models / "predictions.csv").write_text("mine")
    ckpt = models / "mine.ckpt"
    ckpt.write_bytes(trained("lightning", "blobs_mlp", *BLOBS_SHORT).last.read_bytes())
    cli = run_cli("predict", "--config", MLP_CONFIG, "--data.n_samples=600", "--ckpt_path", str(ckpt))
    path = Path("logs/blobs_mlp/eval/predict_0/predictions.csv")  # a checkpoint from elsewhere: the config's eval
    assert f"predictions: {path} (120 rows)" in capsys.readouterr().out  # the test split of 600 samples
    assert (models / "predictions.csv").read_text() == "mine"
    rows = list(csv.DictReader(path.open()))
    x_test, y_test = cli.datamodule.splits["test"]
    model = Classifier.load_from_checkpoint(ckpt).eval()  # eval: the MLP has dropout
    with torch.no_grad():
        expected = probabilities(model(x_test))
    assert len(rows) == len(x_test) == 120
    for i, row in enumerate(rows):
        assert int(row["index"]) == i and int(row["target"]) == int(y_test[i])
        probs = torch.tensor([float(row[f"p_{c}"]) for c in range(3)])
        assert torch.allclose(probs, expected[i], atol=1e-6)
        assert int(row["predicted"]) == int(expected[i].argmax())


def _scalars(folder: Path) -> list[tuple[str, int, float, float]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(value.tag, event.step, value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0],
             event.wall_time)
            for path in sorted(folder.glob("events.out.tfevents.*"))
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value]


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_events_reach_the_file_at_flush_and_close_with_the_wall_time_they_were_logged_at(engine, tmp_path):
    import time

    from toyloops.engine.dashboard import FLUSH_SECS
    from toyloops.engine.loggers import TensorBoardLogger

    # the writer each engine logs through: the template logger's experiment (the hand trainer's
    # logger as its command line builds it: into the run folder itself)
    logger = TensorBoardLogger(str(tmp_path), name="") if engine == "lightning" else \
        TensorBoardLogger(str(tmp_path.parent), name="", version=tmp_path.name, default_hp_metric=False)
    writer = logger.experiment
    assert writer.flush_secs == FLUSH_SECS  # its thread writes out what it holds at least this often
    before = time.time()
    writer.add_scalar("train/loss", 0.5, 9)
    writer.add_scalar("train/loss", 0.25, 19, walltime=1001.0)
    after = time.time()
    writer.flush()  # returns once the writer's thread has written out every event handed to it
    (first, second) = _scalars(Path(writer.log_dir))
    assert first[:3] == ("train/loss", 9, 0.5) and before <= first[3] <= after  # stamped when logged
    assert second == ("train/loss", 19, 0.25, 1001.0)
    writer.add_scalar("epoch", 1.0, 19, walltime=1002.0)
    writer.close()
    assert _scalars(Path(writer.log_dir))[-1] == ("epoch", 19, 1.0, 1002.0)


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_an_epochs_events_are_in_the_file_when_the_next_epoch_starts(engine, in_tmp):
    """What each engine logged in epoch 0 (train/loss at step 9, the epoch's metrics at its last
    step, 14) is in the event file at the boundary: a callback's on_train_epoch_start runs after the
    template's flush, in either engine."""
    import lightning as L

    from toyloops.engine.cli import ToyCLI

    seen: list[dict[str, list[int]]] = []

    def probe(run_dir: Path) -> None:
        steps: dict[str, list[int]] = {}
        for tag, step, _, _ in _scalars(run_dir):
            steps.setdefault(tag, []).append(step)
        seen.append(steps)

    class Probe(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch == 1:
                probe(Path(trainer.logger.log_dir))

    args = ["--config", MLP_CONFIG, "--trainer.max_epochs=2", "--dashboard.boundary_every_n_epochs=0",
            "--dashboard.graph=false", "--trainer.enable_progress_bar=false"]
    if engine == "lightning":
        cli = ToyCLI(args=args, run=False)
        cli.trainer.callbacks.append(Probe())
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        cli.run_folder.release(failed=False)
    else:
        run(["fit", *args], callbacks=(Probe(),))
    (steps,) = seen
    assert steps["train/loss"] == [9]  # logged every 10 steps; 15 steps an epoch
    assert steps["train/acc"] == steps["val/acc"] == [14]


def test_the_template_logger_keeps_logging_after_fit_closed_it(tmp_path):
    # trainer.fit closes the logger's writer (finalize); trainer.test on the same trainer logs on,
    # as with Lightning's own TensorBoardLogger, whose SummaryWriter opens a new file.
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from toyloops.engine.loggers import TensorBoardLogger

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            loss = self.net(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def test_step(self, batch, _):
            self.log("test/loss", self.net(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8)
    trainer = L.Trainer(max_epochs=1, logger=TensorBoardLogger(str(tmp_path), name=""), log_every_n_steps=1,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Tiny(), data)
    tested = trainer.test(trainer.lightning_module, data, verbose=False)[0]["test/loss"]
    trainer.logger.experiment.close()
    scalars = {tag: value for tag, _, value, _ in _scalars(Path(trainer.logger.log_dir))}
    assert "train/loss" in scalars
    assert scalars["test/loss"] == pytest.approx(tested)
