"""train.py end to end: shipped configs reach their accuracy, logs/checkpoints land, errors are clean."""

import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import CONFIGS, RUN_CONFIGS, documented_accuracy, run_cli, run_train_py
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops import Classifier, probabilities
from toyloops.engine import cli

TARGETS = {"blobs": 0.98, "circles": 0.97, "majority": 0.95, "spirals": 0.99}


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_reaches_its_documented_accuracy(name, in_tmp):
    cli = run_cli("fit", "--config", str(CONFIGS / f"{name}.yaml"))
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert best == pytest.approx(documented_accuracy(name), abs=0.0051)
    task = name.split("_")[0]
    if task == "parity":  # the seeds' Transformer does not learn parity: it must stay at chance
        assert best < 0.56
    elif task == "linear":  # val MSE: near the noise's own 0.01, far below the mean predictor's 12
        assert best < 0.0105
    else:
        assert best >= TARGETS[task]


@pytest.fixture
def trained_run(trained):
    """One real ``python train.py fit`` run (a process), shared by the session."""
    return trained("train.py", "blobs_logistic", "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false")


def test_fit_writes_tensorboard_scalars_checkpoints_config_and_a_summary(trained_run):
    result, run_dir = trained_run, trained_run.run_dir
    events = EventAccumulator(str(run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr-SGD", "epoch", "baseline/bayes"} <= tags
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("baseline/bayes")] == [(0, 0.9939)]
    assert len(events.Scalars("val/acc")) == 3
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch=") for n in ckpts)
    assert "class_path: toyloops.LogisticRegression" in (run_dir / "config.yaml").read_text()
    assert "(chance 0.5000, majority 0.5550, Bayes 0.9939)" in result.stdout  # two blobs 2.6 sigma apart
    assert "best val/acc: 0.99" in result.stdout and "tensorboard --logdir logs/blobs_logistic" in result.stdout
    assert "Tip" not in result.stdout + result.stderr


def test_fit_without_the_logger_trains_into_its_run_folder_and_says_there_is_no_tensorboard(in_tmp, capsys):
    cli = run_cli("fit", "--config", str(CONFIGS / "blobs_logistic.yaml"), "--trainer.logger=false",
                  "--trainer.max_epochs=2")  # the template's LR monitor goes with the logger
    assert cli.trainer.current_epoch == 2 and not cli.trainer.loggers
    run_dir = in_tmp / "logs/blobs_logistic/version_0"
    assert (run_dir / "checkpoints/last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    assert not list(in_tmp.rglob("events.out.tfevents.*"))
    out = capsys.readouterr().out
    assert "logs: logs/blobs_logistic/version_0\n(no TensorBoard events: trainer.logger is off)" in out


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_validate_and_test_from_a_checkpoint(trained_run, stage, tmp_path, monkeypatch, capsys):
    """``train.py``'s own entry point (``cli.main``) in-process: the real command's exit code and one-line
    errors are what the subprocess tests here check."""
    run = trained_run.copy_to(tmp_path)  # the results are written into the checkpoint's run
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli.main([stage, "--config", str(CONFIGS / "blobs_logistic.yaml"), "--ckpt_path", str(run.last),
              "--trainer.enable_progress_bar=false"])
    stdout = capsys.readouterr().out
    run_dir = run.run_dir
    prefix = "val" if stage == "validate" else "test"
    accuracy = float(re.search(rf"{prefix}/acc\W+([0-9.]+)", stdout).group(1))
    if stage == "validate":  # the last checkpoint scores what the last epoch logged
        logged = EventAccumulator(str(run_dir)).Reload().Scalars("val/acc")[-1].value
        assert accuracy == pytest.approx(logged, abs=1e-4)
    else:
        assert accuracy >= 0.93
    # Results go into the checkpoint's own run, in one summary, not into a new version_N.
    record = yaml.safe_load((run_dir / f"eval/{stage}_0/metrics.yaml").read_text())
    assert record["metrics"][f"{prefix}/acc"] == pytest.approx(accuracy, abs=1e-4)
    assert f"results: {run_dir}/eval/{stage}_0\n" in stdout
    assert [p.name for p in run_dir.parent.iterdir()] == ["version_0"]
    assert "DataLoader 0" not in stdout  # Lightning's own table: the summary is the one


def test_predict_returns_the_models_class_probabilities(trained_run, in_tmp):
    config = str(CONFIGS / "blobs_logistic.yaml")
    ckpt = trained_run.copy_to(in_tmp).last  # predict writes into the checkpoint's run
    cli = run_cli("predict", "--config", config, "--ckpt_path", str(ckpt))
    probs = torch.cat(cli.trainer.predict_loop.predictions)
    x_test, y_test = cli.datamodule.splits["test"]
    model = Classifier.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        assert torch.allclose(probs, probabilities(model(x_test)))
    assert probs.shape == (200, 2) and torch.allclose(probs.sum(1), torch.ones(200))
    assert (probs.argmax(1) == y_test).float().mean() >= 0.9


def test_load_from_checkpoint_in_a_plain_script_needs_no_arguments(trained_run):
    cwd = trained_run.folder  # the script only reads the run
    script = (
        "import torch; from toyloops import Classifier, make_blobs\n"
        "m = Classifier.load_from_checkpoint('logs/blobs_logistic/version_0/checkpoints/last.ckpt')\n"
        "x, y = make_blobs(200, seed=1)\n"
        "x = (x - x.mean(0)) / x.std(0)\n"
        "print(type(m.net).__name__, (m(x) > 0).long().eq(y).float().mean().item())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    name, accuracy = result.stdout.split()
    assert name == "LogisticRegression" and float(accuracy) > 0.95


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [  # the full table of bad inputs runs in-process in test_bad_input.py; these are real processes
        ("blobs_mlp", ["--data.dataset", "squares"],
         "data.dataset='squares': expected one of blobs, circles, moons, spirals, xor"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(tmp_path, config, args, message):
    result = run_train_py("fit", "--config", str(CONFIGS / f"{config}.yaml"), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip().splitlines()[-1]
    ]
    assert not (tmp_path / "logs").exists()
