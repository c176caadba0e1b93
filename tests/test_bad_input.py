"""Table-driven bad input: each gives one short line naming the value, a non-zero exit, no run folder.

``toyloops.engine.cli.main`` and ``toyloops.engine.loop_cli.main`` are exactly what ``python train.py`` and
``python -m toyloops.engine.loop_cli`` call; driving them in-process keeps ~30 cases fast. A couple of real
subprocesses in ``test_cli.py`` check the exit code and stderr of the actual command.
"""

import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import BLOBS_SHORT, CONFIGS

from toyloops.engine import cli, loop_cli

MLP, SEQ = str(CONFIGS / "blobs_mlp.yaml"), str(CONFIGS / "majority_transformer.yaml")
LINEAR = str(CONFIGS / "linear_regression.yaml")

# (config, extra arguments, text the one-line message must contain)
CASES = {
    "unknown key": (MLP, ["--model.hidden", "3"], "hidden"),
    "unknown trainer key": (MLP, ["--trainer.max_epoch", "3"], "--trainer.max_epoch"),
    "wrong type int": (MLP, ["--trainer.max_epochs", "ten"], "trainer.max_epochs"),
    "wrong type batch": (MLP, ["--data.batch_size", "abc"], "data.batch_size: Expected a int. Got value: abc"),
    "unknown dataset": (MLP, ["--data.dataset", "squares"], "data.dataset='squares': expected one of blobs"),
    "unknown task": (SEQ, ["--data.task", "sorting"], "Got value: sorting"),
    "negative hidden size": (MLP, ["--model.net.hidden_sizes", "[16, -4]"], "hidden_sizes must all be > 0"),
    "zero samples": (MLP, ["--data.n_samples", "0"], "data.n_samples must be > 0, got 0"),
    "negative variance": (MLP, ["--data.variance", "-1"], "variance must be > 0, got -1"),
    "fraction above 1": (MLP, ["--data.val_fraction", "1.5"], "val_fraction must be in (0, 1), got 1.5"),
    "fraction zero": (MLP, ["--data.val_fraction", "0"], "val_fraction must be in (0, 1), got 0"),
    "negative test fraction": (MLP, ["--data.test_fraction", "-0.1"], "test_fraction must be in [0, 1) (0: no test"),
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
    "seed out of range": (MLP, ["--seed_everything", "-1"], "seed_everything=-1: expected an int in [0, 2**32)"),
    "negative lr": (MLP, ["--model.optimizer.lr", "-0.1"], "model.optimizer.init_args.lr=-0.1: expected a finite"),
    "NaN lr": (MLP, ["--model.optimizer.lr", "nan"], "model.optimizer.lr: Given value: nan"),
    "NaN in the file": ("nan.yaml", [], ".nan at line"),
    "check_val_every_n_epoch 0": (MLP, ["--trainer.check_val_every_n_epoch", "0"], "check_val_every_n_epoch=0"),
    "log_every_n_steps 0": (MLP, ["--trainer.log_every_n_steps", "0"], "trainer.log_every_n_steps=0"),
    "max_epochs 0": (MLP, ["--trainer.max_epochs", "0"], "trainer.max_epochs=0: expected an int >= 1"),
    "max_epochs -1": (MLP, ["--trainer.max_epochs", "-1"], "trainer.max_epochs=-1"),
    "limit_train_batches 0": (MLP, ["--trainer.limit_train_batches", "0"], "limit_train_batches=0 trains nothing"),
    "every_n_train_steps -1": (MLP, ["--last_checkpoint.every_n_train_steps", "-1"], "every_n_train_steps=-1"),
    "non-UTF-8 config": ("latin1.yaml", [], "not UTF-8 text"),
    "duplicate key": ("twice.yaml", [], "key 'max_epochs' appears twice"),
    "YAML alias bomb": ("bomb.yaml", [], "YAML aliases; a config may use at most"),
    "empty centers": (MLP, ["--data.centers", "[]"], "centers must list at least 2 class centers, got 0"),
    "data too large for memory": (MLP, ["--data.n_samples", "100000000000"], "data.n_samples=100,000,000,000 needs"),
    "image resolution": (MLP, ["--dashboard.resolution", "100000"], "dashboard.resolution=100000: expected 16"),
    "negative clip": (MLP, ["--trainer.gradient_clip_val", "-1"], "trainer.gradient_clip_val=-1"),
    "unknown clip algorithm": (MLP, ["--trainer.gradient_clip_algorithm", "foo"], "gradient_clip_algorithm='foo'"),
    "unknown accelerator": (MLP, ["--trainer.accelerator", "tpu"], "trainer.accelerator='tpu': expected auto"),
    "GPU on a CPU machine": (MLP, ["--trainer.accelerator", "gpu"], "this machine has no CUDA GPU"),
    "a precision neither engine runs": (MLP, ["--trainer.precision", "64-true"], "trainer.precision='64-true'"),
    "limit a fraction above 1": (MLP, ["--trainer.limit_train_batches", "1.5"], "limit_train_batches=1.5"),
    "negative weight decay": (MLP, ["--model.optimizer.weight_decay", "-1"], "Invalid weight_decay value: -1"),
    "betas out of range": (MLP, ["--model.optimizer.betas", "[0.9, 2.0]"], "Invalid beta parameter at index 1"),
    "scheduler period 0": (MLP, ["--model.scheduler.T_max", "0"], "model.scheduler=torch.optim.lr_scheduler.Cos"),
    "a net without the linked arguments": (MLP, ["--model.net", "torch.nn.Identity"], "model.net"),
    "'last' without the logger": (MLP, ["--trainer.logger", "false", "--ckpt_path", "last"], "nothing to resume"),
    "clip NaN": (MLP, ["--trainer.gradient_clip_val", "nan"], "trainer.gradient_clip_val"),
    "negative test limit": (MLP, ["--trainer.limit_test_batches", "-1"], "trainer.limit_test_batches=-1"),
    "an abstract scheduler": (MLP, ["--model.scheduler", "torch.optim.lr_scheduler.LRScheduler"],
                              "model.scheduler=torch.optim.lr_scheduler.LRScheduler: NotImplementedError"),
    "a negative Lightning cadence": (MLP, ["--checkpoint.every_n_train_steps", "-1"], "every_n_train_steps"),
    "a duplicate key inline": (MLP, ["--config", "{trainer: {max_epochs: 1, max_epochs: 2}}"],
                               "key 'max_epochs' appears twice"),
    "a duplicate key in a data file": (MLP, ["--data", "twice_data.yaml"], "key 'n_samples' appears twice"),
    "early stopping on a metric never logged": (
        MLP, ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/accuracy"],
        "trainer.callbacks.monitor='val/accuracy': EarlyStopping can monitor"),
    "early stopping in no direction": (
        MLP, ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/acc",
              "--trainer.callbacks.mode=up"],
        "trainer.callbacks.mode='up': expected min"),
    "a checkpoint monitor never logged": (MLP, ["--checkpoint.monitor", "val/accuracy"],
                                          "checkpoint.monitor='val/accuracy': expected one of train/loss"),
    "a classifier on regression data": (LINEAR, ["--model", "toyloops.Classifier", "--model.net", "toyloops.MLP"],
                                        "does not fit data=LinearDataModule"),
    "a regression kept by accuracy": (LINEAR, ["--checkpoint.monitor", "val/acc"],
                                      "checkpoint.monitor='val/acc': expected one of train/loss, train/loss_epoch"),
    "a scheduler that calls a named function": (
        MLP, ["--model.scheduler", "torch.optim.lr_scheduler.LambdaLR", "--model.scheduler.lr_lambda", "os._exit"],
        "LambdaLR' is not allowed"),
}
# Cases through both entry points: all but the Lightning-only keys (logger, checkpoint.dirpath).
LOOP_CASES = [case for case in CASES if case not in ("unwritable log dir", "'last' without the logger",
                                                    "a negative Lightning cadence")]


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
    Path("nan.yaml").write_text(Path(MLP).read_text().replace("lr: 0.01", "lr: .nan"))
    Path("latin1.yaml").write_bytes(Path(MLP).read_bytes().replace(b"# MLP", "# Modèle".encode("latin-1")))
    Path("twice_data.yaml").write_text("class_path: toyloops.PointsDataModule\ninit_args:\n  n_samples: 100\n"
                                       "  n_samples: 200\n")
    Path("twice.yaml").write_text(Path(MLP).read_text().replace("max_epochs: 10", "max_epochs: 10\n  max_epochs: 3"))
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    Path("bomb.yaml").write_text(Path(MLP).read_text() + "\n".join(levels) + "\n")  # 9**9 strings if expanded
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
    message = _error_line(loop_cli.main, ["fit", "--config", config, *extra], capsys)
    assert expected in message
    assert not list(Path("logs").glob("*/loop_version_*"))


def test_a_run_that_fails_midway_keeps_its_checkpoints(workdir, capsys):
    """Only folders without any checkpoint count as half-made: a NaN after epoch 0 keeps the run."""
    args = ["fit", "--config", MLP, "--model.scheduler", "torch.optim.lr_scheduler.ExponentialLR",
            "--model.scheduler.gamma", "1e6", "--trainer.enable_progress_bar=false"]
    assert "loss is nan" in _error_line(cli.main, args, capsys)
    (last,) = Path("logs").glob("blobs_mlp/version_0/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0


@pytest.fixture(scope="module")
def bad_checkpoints(trained, tmp_path_factory) -> Path:
    """Checkpoint files a user might pass by mistake, made from the session's short hand-loop run."""
    folder = tmp_path_factory.mktemp("bad_ckpts")
    good = trained("loop", "blobs_mlp", *BLOBS_SHORT).last
    checkpoint = torch.load(good, weights_only=True)
    torch.save({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}, folder / "bare.ckpt")
    del checkpoint["hyper_parameters"]["net"]  # as when the net was passed live: the config builds it
    torch.save(checkpoint, folder / "livenet.ckpt")
    checkpoint["state_dict"]["net.layers.0.weight"][0, 0] = float("nan")
    torch.save(checkpoint, folder / "nan.ckpt")
    (folder / "garbage.ckpt").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.ckpt").write_text("these are my notes, not a checkpoint\n" * 10)
    torch.save({**checkpoint, "hyper_parameters": [1, 2]}, folder / "listhp.ckpt")
    (folder / "good.ckpt").write_bytes(good.read_bytes())
    return folder


CHECKPOINT_CASES = {  # file, extra arguments, what the one line says
    "a bare state_dict": ("bare.ckpt", [], "has no state_dict: not a Lightning or toyloops checkpoint"),
    "weights of another net": ("livenet.ckpt", ["--model.net.hidden_sizes", "[16, 16]"],
                               "does not fit the configured model: net.layers.0.weight is (32, 2)"),
    "NaN weights": ("nan.ckpt", [], "holds NaN or infinite weights (net.layers.0.weight)"),
    "a text file": ("notes.ckpt", [], "is not a readable checkpoint"),
    "hyperparameters that are not a mapping": ("listhp.ckpt", [], "its hyper_parameters are not a mapping"),
    "another data size": ("good.ckpt", ["--data.n_samples", "900"], "train-split statistics differ"),
    "garbage bytes": ("garbage.ckpt", [], "is not a readable checkpoint (UnpicklingError: Unsupported operand"),
    "another data set's model": ("good.ckpt", ["--config", str(CONFIGS / "circles_mlp.yaml")],
                                 "num_classes=3 but "),
}


@pytest.mark.parametrize("main", [cli.main, loop_cli.main], ids=["train.py", "hand loop"])
@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_a_wrong_checkpoint_is_one_line(case, main, bad_checkpoints, in_tmp, capsys):
    name, extra, expected = CHECKPOINT_CASES[case]
    message = _error_line(main, ["validate", "--config", MLP, "--data.n_samples=600", "--ckpt_path",
                                 str(bad_checkpoints / name), *extra], capsys)
    assert expected in message and "needs code" not in message


def test_validate_without_a_checkpoint_is_refused_not_scored_at_random(in_tmp, capsys):
    for main in (cli.main, loop_cli.main):
        assert "validate needs --ckpt_path" in _error_line(main, ["validate", "--config", MLP], capsys)
