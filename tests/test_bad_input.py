"""Table-driven bad input: each gives one short line naming the value, a non-zero exit, no run folder.

``toyloops.cli.main`` and ``toyloops.loop.main`` are exactly what ``python train.py`` and
``python -m toyloops.loop`` call; driving them in-process keeps ~30 cases fast. A couple of real
subprocesses in ``test_cli.py`` check the exit code and stderr of the actual command.
"""

import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import CONFIGS

from toyloops import cli, loop

MLP, SEQ = str(CONFIGS / "blobs_mlp.yaml"), str(CONFIGS / "majority_transformer.yaml")

# (config, extra arguments, text the one-line message must contain)
CASES = {
    "unknown key": (MLP, ["--model.hidden", "3"], "unrecognized arguments: --model.hidden 3"),
    "unknown trainer key": (MLP, ["--trainer.max_epoch", "3"], "--trainer.max_epoch"),
    "wrong type int": (MLP, ["--trainer.max_epochs", "ten"], "trainer.max_epochs"),
    "wrong type batch": (MLP, ["--data.batch_size", "abc"], "data.batch_size: Expected a int. Got value: abc"),
    "unknown dataset": (MLP, ["--data.dataset", "moons"], "Got value: moons"),
    "unknown task": (SEQ, ["--data.task", "sorting"], "Got value: sorting"),
    "negative hidden size": (MLP, ["--model.net.hidden_sizes", "[16, -4]"], "hidden_sizes must all be > 0"),
    "zero samples": (MLP, ["--data.n_samples", "0"], "n_per_class must be > 0, got 0"),
    "negative variance": (MLP, ["--data.variance", "-1"], "variance must be > 0, got -1"),
    "fraction above 1": (MLP, ["--data.val_fraction", "1.5"], "val_fraction must be in (0, 1), got 1.5"),
    "fraction zero": (MLP, ["--data.test_fraction", "0"], "test_fraction must be in (0, 1), got 0"),
    "fractions sum to 1": (MLP, ["--data.val_fraction", "0.5", "--data.test_fraction", "0.5"],
                           "val_fraction + test_fraction must be < 1"),
    "seq_len > max_len": (SEQ, ["--model.net.max_len", "8"], "seq_len=16 exceeds max_len=8"),
    "nhead vs d_model": (SEQ, ["--model.net.nhead", "5"], "nhead=5 must divide d_model=32"),
    "batch_size 0": (MLP, ["--data.batch_size", "0"], "batch_size must be > 0, got 0"),
    "batch_size > split": (MLP, ["--data.batch_size", "5000"], "batch_size=5000 is larger than the train split"),
    "dropout 1.5": (MLP, ["--model.net.dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    "activation": (MLP, ["--model.net.activation", "swish"], "activation must be one of relu"),
    "unknown optimizer": (MLP, ["--model.optimizer", "torch.optim.Nope"], "torch.optim.Nope"),
    "unknown precision": (MLP, ["--trainer.precision", "8-mixed"], "8-mixed"),
    "16-mixed on CPU": (MLP, ["--trainer.precision", "16-mixed", "--trainer.accelerator", "cpu"],
                        "trainer.precision='16-mixed' needs a CUDA GPU"),
    "missing checkpoint": (MLP, ["--ckpt_path", "nope.ckpt"], "ckpt_path='nope.ckpt': no such file"),
    "nothing to resume": (MLP, ["--ckpt_path", "last"], "nothing to resume"),
    "checkpoint is a folder": (MLP, ["--ckpt_path", "."], "is a folder, not a checkpoint file"),
    "unwritable log dir": (MLP, ["--trainer.logger.init_args.save_dir", "blocker/logs"], "blocker is a file"),
    "missing config": ("missing.yaml", [], "missing.yaml"),
    "malformed yaml": ("bad.yaml", [], "bad.yaml"),
    "unknown key in the file": ("typo.yaml", [], "max_epoch"),
    "mismatched data and net": (SEQ, ["--model.net", "toyloops.MLP"], "vocab_size"),
}
LOOP_CASES = ["unknown key", "unknown trainer key", "wrong type batch", "unknown dataset", "negative hidden size",
              "fractions sum to 1", "seq_len > max_len", "nhead vs d_model", "batch_size > split",
              "16-mixed on CPU", "missing checkpoint", "missing config", "malformed yaml", "unknown key in the file"]


def _error_line(main, args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info, mock.patch.object(sys, "argv", ["prog"]):
        main(args)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ")  # non-zero exit, with a message
    assert "\n" not in message.strip() and len(message) < 400  # one short line
    assert "Traceback" not in capsys.readouterr().err
    return message


@pytest.fixture
def workdir(in_tmp):
    Path("blocker").write_text("a file where a folder should be")
    Path("bad.yaml").write_text("trainer: {max_epochs: 3\nmodel: [unclosed")
    Path("typo.yaml").write_text(Path(MLP).read_text().replace("max_epochs: 10", "max_epoch: 10"))
    return in_tmp


@pytest.mark.parametrize("case", CASES)
def test_train_py_bad_input(case, workdir, capsys):
    config, extra, expected = CASES[case]
    message = _error_line(cli.main, ["fit", "--config", config, *extra], capsys)
    assert expected in message
    assert not list(Path("logs").glob("*/version_*"))  # no half-made run folder


@pytest.mark.parametrize("case", LOOP_CASES)
def test_hand_loop_bad_input(case, workdir, capsys):
    config, extra, expected = CASES[case]
    if case == "unknown trainer key":
        extra = ["--trainer.accumulate_grad_batches", "2"]
        expected = "hand-loop trainer keys: max_epochs, precision"
    message = _error_line(loop.main, ["fit", "--config", config, *extra], capsys)
    assert expected in message
    assert not list(Path("logs").glob("*/loop_version_*"))


def test_a_run_that_fails_midway_keeps_its_checkpoints(workdir, capsys):
    """Only folders without any checkpoint count as half-made: a NaN after epoch 0 keeps the run."""
    args = ["fit", "--config", MLP, "--model.scheduler", "torch.optim.lr_scheduler.ExponentialLR",
            "--model.scheduler.gamma", "1e6", "--trainer.enable_progress_bar=false"]
    assert "loss is nan" in _error_line(cli.main, args, capsys)
    (last,) = Path("logs").glob("blobs_mlp/version_0/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0
