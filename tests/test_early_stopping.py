"""Early stopping from trainer.callbacks: Lightning's EarlyStopping and the hand loop's rule agree."""

import re

import pytest
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
