"""Early stopping from trainer.callbacks: Lightning's EarlyStopping and the hand loop's rule agree."""

import re

import pytest
import yaml
from conftest import CONFIGS

from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError
from toyloops.tools.compare import compare, max_weight_difference


def test_the_preset_stops_both_engines_after_the_same_epoch_and_the_summary_says_so(in_tmp, capsys):
    args = ["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=500",
            "--config", str(CONFIGS / "presets/early_stopping.yaml")]
    runs = compare(args)
    assert runs["lightning"]["steps"] == runs["loop"]["steps"]
    assert max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"]) == 0.0
    stops = re.findall(r"stopped early: after epoch (\d+) \(EarlyStopping on val/loss\)", capsys.readouterr().out)
    assert len(stops) == 2 and stops[0] == stops[1] and int(stops[0]) < 29  # of circles_mlp's 30 epochs
    assert runs["loop"]["steps"] == (int(stops[0]) + 1) * 5  # 300 train samples: 5 batches an epoch


def test_the_hand_loop_refuses_callbacks_it_does_not_run(in_tmp):
    with pytest.raises(ConfigError, match="trainer.callbacks=lightning.pytorch.callbacks.LearningRateMonitor: the "
                                          "hand loop runs lightning.pytorch.callbacks.EarlyStopping only"):
        run(["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.callbacks+=LearningRateMonitor"])


EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"


@pytest.mark.parametrize(("early_stopping", "trainer", "message"), [
    ({"monitor": "train/loss", "mode": "min"}, {}, r"monitor='train/loss': an epoch here has 5 steps and train/loss "
     r"is written every 10 .* set log_every_n_steps <= 5 or monitor train/loss_epoch"),
    ({"monitor": "val/loss", "mode": "min", "check_on_train_epoch_end": True}, {"check_val_every_n_epoch": 2},
     r"check_on_train_epoch_end=True: EarlyStopping on val/loss .* validation runs every 2 epochs"),
])
@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_early_stopping_without_a_value_at_each_epoch_end_is_one_line_before_training_in_both_engines(
        in_tmp, engine, early_stopping, trainer, message):
    """Lightning met these with a RuntimeError at the first epoch's end; now both engines refuse them before the
    first step (300 training samples: 5 batches an epoch, logging every 10 steps)."""
    from conftest import run_cli

    config = in_tmp / "stop.yaml"
    config.write_text(yaml.safe_dump({"trainer": {**trainer, "callbacks": [
        {"class_path": EARLY_STOPPING, "init_args": early_stopping}]}}))
    args = ["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=500", "--config", str(config)]
    with pytest.raises(ConfigError, match=message):
        run_cli("fit", *args) if engine == "lightning" else run(["fit", *args])
    assert not list(in_tmp.glob("logs/*/*version_*"))  # no run folder kept: no checkpoint was written


def test_early_stopping_on_train_loss_written_every_epoch_stops_both_engines_alike(in_tmp):
    """With log_every_n_steps <= an epoch's steps, train/loss is there at every epoch's end: both engines stop at
    the same epoch (compare: bit-identical weights)."""
    config = in_tmp / "stop.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"log_every_n_steps": 5, "callbacks": [
        {"class_path": EARLY_STOPPING, "init_args": {"monitor": "train/loss", "mode": "min", "patience": 1,
                                                     "min_delta": 0.02}}]}}))
    runs = compare(["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=500", "--config", str(config)])
    assert runs["lightning"]["steps"] == runs["loop"]["steps"] < 30 * 5  # stopped before circles_mlp's 30 epochs
    assert max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"]) == 0.0
