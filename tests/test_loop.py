"""The hand loop against Lightning: same config and seed -> bit-identical weights and logs."""

import sys
from unittest import mock

import pytest
import torch
import yaml
from conftest import CONFIGS

from toyloops.engine.loop_cli import SUPPORTED_TRAINER_KEYS, main, run
from toyloops.rules.specs import load_checkpoint
from toyloops.tools.compare import compare, max_weight_difference, scalars

# Every case trains with dropout, gradient clipping, AdamW and an LR scheduler.
CASES = {
    "logistic": ["--config", str(CONFIGS / "blobs_logistic.yaml"), "--trainer.gradient_clip_val=0.05",
                 "--model.optimizer=torch.optim.AdamW", "--model.optimizer.lr=0.05",
                 "--model.scheduler=torch.optim.lr_scheduler.StepLR", "--model.scheduler.step_size=1",
                 "--model.scheduler.gamma=0.5", "--model.scheduler_interval=step"],
    "mlp": ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--model.net.dropout=0.3"],
    "transformer": ["--config", str(CONFIGS / "parity_transformer.yaml"), "--data.n_samples=600",
                    "--model.scheduler=torch.optim.lr_scheduler.ExponentialLR", "--model.scheduler.gamma=0.9"],
    # ReduceLROnPlateau stepped every step, on the latest val/loss.
    "plateau_step": ["--config", str(CONFIGS / "blobs_logistic.yaml"), "--model.scheduler_interval=step",
                     "--model.scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau", "--model.scheduler.patience=0",
                     "--model.scheduler.threshold=0.5"],
    # The debug preset: an int limit_*_batches is a count of batches in both engines.
    "debug": ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--config", str(CONFIGS / "presets/debug.yaml"),
              "--trainer.log_every_n_steps=1", "--model.metrics=[precision, recall, f1, auroc]"],
    # ReduceLROnPlateau on val/loss with validation every other epoch (stepped on the latest
    # val/loss, skipped before the first), and clipping by value.
    "plateau": ["--config", str(CONFIGS / "circles_mlp.yaml"), "--trainer.check_val_every_n_epoch=2",
                "--trainer.gradient_clip_val=0.01", "--trainer.gradient_clip_algorithm=value",
                "--model.scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau", "--model.scheduler.patience=0",
                "--model.scheduler.factor=0.5", "--model.scheduler.threshold=0.5"],
    # Lightning's EarlyStopping against the hand loop's early_stopping_check: the same rule from the
    # same trainer.callbacks entry, checked at each train epoch end, or after each validation.
    "early_stopping": ["--config", str(CONFIGS / "blobs_logistic.yaml"), "--config",
                       str(CONFIGS / "presets/early_stopping.yaml"), "--trainer.callbacks.monitor=val/acc",
                       "--trainer.callbacks.mode=max", "--trainer.callbacks.patience=1"],
    "early_stopping_after_validation": ["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=500",
                                        "--config", str(CONFIGS / "presets/early_stopping.yaml"),
                                        "--trainer.check_val_every_n_epoch=2", "--trainer.callbacks.patience=1",
                                        "--trainer.callbacks.min_delta=0.2"],
    # The seeds' other binary head (two logits, cross-entropy), with label smoothing and class weights;
    # and the one-logit head with them, weight decay on weights only, a val batch size of its own and
    # no test split; a val set drawn apart from train.
    # Regression: MSE loss, MAE score, no classes.
    "regression": ["--config", str(CONFIGS / "linear_regression.yaml"), "--trainer.log_every_n_steps=3"],
    "two_logits": ["--config", str(CONFIGS / "blobs_logistic.yaml"), "--model.net.binary_logits=2",
                   "--model.label_smoothing=0.1", "--model.class_weights=[1.0, 3.0]",
                   "--model.metrics=[precision, recall, f1, auroc]", "--data.val_draw=independent"],
    "one_logit_options": ["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=600",
                          "--model.label_smoothing=0.2", "--model.class_weights=[2.0, 0.5]",
                          "--model.decay_biases=false", "--model.optimizer.weight_decay=0.5",
                          "--data.eval_batch_size=128", "--data.test_fraction=0",
                          "--model.metrics=[f1, auroc]", "--model.train_metrics=eval"],
}
EPOCHS = {"plateau": 5, "early_stopping": 6, "early_stopping_after_validation": 8}  # 2 for the others


def assert_same_runs(runs):
    lightning, loop = runs["lightning"], runs["loop"]
    for name, weights in lightning["weights"].items():
        assert torch.equal(weights, loop["weights"][name]), f"{name} differs"
    assert lightning["steps"] == loop["steps"]
    ours, theirs = scalars(loop["run_dir"]), scalars(lightning["run_dir"])
    score = "mae" if "val/mae" in theirs else "acc"  # a regression's score, or a classifier's
    assert {"train/loss", f"train/{score}", "val/loss", f"val/{score}", "epoch"} <= theirs.keys()
    assert any(tag.startswith("baseline/") for tag in theirs)
    assert ours == theirs  # every tag, step and value: the two runs overlay exactly


@pytest.mark.parametrize("case", CASES)
def test_hand_loop_matches_lightning_bit_for_bit(case, in_tmp):
    runs = compare([*CASES[case], f"--trainer.max_epochs={EPOCHS.get(case, 2)}"])
    assert_same_runs(runs)
    if case.startswith("early_stopping"):  # both stopped at the same step, epochs before max_epochs
        assert scalars(runs["loop"]["run_dir"])["epoch"][-1][1] < EPOCHS[case] - 2
    if case.startswith("plateau"):  # the scheduler acted: the learning rate was cut after a validation
        (rates,) = (series for tag, series in scalars(runs["loop"]["run_dir"]).items() if tag.startswith("lr-"))
        assert len({value for _, value in rates}) > 1
    assert max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"]) == 0.0


@pytest.mark.parametrize("case", ["mlp", "transformer"])
def test_hand_loop_matches_lightning_under_bf16_autocast(case, in_tmp):
    assert_same_runs(compare([*CASES[case], "--trainer.max_epochs=2", "--trainer.precision=bf16-mixed"]))


def test_resume_from_last_equals_an_uninterrupted_run(in_tmp):
    args = [*CASES["mlp"], "--trainer.enable_progress_bar=false"]
    full = run(["fit", *args, "--trainer.max_epochs=4"])
    half = run(["fit", *args, "--trainer.max_epochs=2"])
    resumed = run(["fit", *args, "--trainer.max_epochs=4", "--ckpt_path", str(half["last_checkpoint"])])
    assert resumed["last_checkpoint"] == half["last_checkpoint"]  # continues in the same run folder
    a, b = load_checkpoint(full["last_checkpoint"]), load_checkpoint(resumed["last_checkpoint"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["toyloops"]["loop"] == b["toyloops"]["loop"] and resumed["val/acc"] == full["val/acc"]


def test_validate_and_test_subcommands_score_a_checkpoint(in_tmp):
    result = run(["fit", *CASES["mlp"], "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    args = [*CASES["mlp"], "--ckpt_path", str(result["last_checkpoint"])]
    assert run(["validate", *args])["val/acc"] == result["val/acc"]
    assert run(["validate", *args[:-1], "last"])["val/acc"] == result["val/acc"]  # 'last': the newest run
    assert run(["test", *args])["test/acc"] > 0.95
    evals = result["last_checkpoint"].parent.parent / "eval"  # into the checkpoint's own run, as train.py
    assert sorted(p.name for p in evals.iterdir()) == ["test_0", "validate_0", "validate_1"]
    assert yaml.safe_load((evals / "validate_0/metrics.yaml").read_text())["metrics"]["val/acc"] == result["val/acc"]


def test_an_unsupported_trainer_key_is_an_error_that_lists_the_supported_ones(in_tmp, capsys):
    """``loop.main``, what ``toyloops.engine.loop_cli`` runs, in-process (real processes of it: test_stops.py)."""
    with pytest.raises(SystemExit) as stop, mock.patch.object(sys, "argv", ["prog"]):
        main(["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.accumulate_grad_batches=2"])
    message = stop.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message.strip()
    assert "Traceback" not in capsys.readouterr().err
    assert "accumulate_grad_batches" in message
    assert all(key in message for key in SUPPORTED_TRAINER_KEYS)
    assert not (in_tmp / "logs").exists()


def test_16_mixed_on_cpu_is_refused_with_the_alternative(in_tmp):
    with pytest.raises(ValueError, match="16-mixed.*needs a CUDA GPU.*bf16-mixed"):
        run(["fit", *CASES["mlp"], "--trainer.precision=16-mixed", "--trainer.accelerator=cpu"])
