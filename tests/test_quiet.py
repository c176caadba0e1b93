"""Quiet by default (issue 20 item 6): the documented paths run with every warning an error, except
those the user causes. A plain Trainer script with toyloops' classes, train.py and the hand loop,
each a real process under ``-W error``."""

import subprocess
import sys

import pytest
from conftest import CONFIGS, ROOT

PLAIN = """
import lightning as L
from toyloops import Classifier, MLP, PointsDataModule
trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
trainer.fit(Classifier(MLP(2, 2)), datamodule=PointsDataModule("circles", n_samples=400))
print("val/acc", trainer.callback_metrics["val/acc"].item())
"""
SHORT = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]


@pytest.mark.integration
def test_documented_paths_raise_no_warning_the_user_did_not_cause(tmp_path):
    commands = {
        "plain Trainer script": [sys.executable, "-W", "error", "-c", PLAIN],
        "train.py fit": [sys.executable, "-W", "error", str(ROOT / "train.py"), "fit", "--config",
                         str(CONFIGS / "blobs_mlp.yaml"), *SHORT],
        "hand loop fit": [sys.executable, "-W", "error", "-m", "toyloops", "loop", "fit", "--config",
                          str(CONFIGS / "blobs_mlp.yaml"), *SHORT],
    }
    for name, command in commands.items():
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        assert "Warning" not in done.stderr, f"{name}: {done.stderr[-2000:]}"
        assert "val/acc" in done.stdout  # it trained and reported


TOOLS = """
from pathlib import Path

from toyloops.tools import diff, doctor, profile, seeds, sweep

ONE_EPOCH = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar=false"]
Path("space.yaml").write_text("data.init_args.batch_size: {type: categorical, choices: [128]}")  # 8 steps an epoch
sweep.run(["--config", "blobs_mlp", "--space", "space.yaml", "--trials", "1", *ONE_EPOCH])
seeds.run(["--config", "blobs_mlp", "--n", "2", *ONE_EPOCH])
profile.run(["--config", "blobs_mlp", "--engine", "both"])
assert not doctor.run(["--config", "blobs_mlp"])["failed"]
assert diff.run(["--config", "blobs_mlp", "--b.engine", "lightning", "--max_steps", "5"]).first is None
print("tools: quiet")
"""


@pytest.mark.integration
def test_the_experiment_tools_raise_no_warning_the_user_did_not_cause(tmp_path):
    """sweep (a space that picks a batch size), seeds on the ensemble, profile, doctor and diff, in one
    process under ``-W error``; nor the lines torch's profiler (Kineto) writes to stderr from C++."""
    done = subprocess.run([sys.executable, "-W", "error", "-c", TOOLS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-3000:]
    assert "USDT" not in done.stderr and "CPUAllocator" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip().endswith("tools: quiet")
