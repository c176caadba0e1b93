"""The defaults chosen by measurement: threads, fused AdamW, the progress bar, skipped empty hooks."""

import functools
import math
import re
import sys
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from conftest import CONFIGS, QUIET, fit_in, run_cli

from toyloops import MLP, Classifier, PointsDataModule
from toyloops.engine import loop_cli
from toyloops.engine.callbacks import ProgressBar
from toyloops.engine.cli import ToyCLI
from toyloops.engine.defaults import PROGRESS_BAR_MIN_INTERVAL_S, THREADS_ENV, apply_thread_policy
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import build_optimizer


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_thread_unless_configured(monkeypatch, threads_restored):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(2)
    assert apply_thread_policy() == 1 == torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "2")
    assert apply_thread_policy() == 2 == torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # configured the usual way: left as torch read it
    assert apply_thread_policy() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{THREADS_ENV}='{bad}'.*whole number"):
            apply_thread_policy()


def test_adam_and_adamw_are_fused_unless_the_config_says_otherwise():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert build_optimizer(torch.optim.AdamW, params).defaults["fused"] is True
    assert build_optimizer(functools.partial(torch.optim.Adam, lr=0.1), params).defaults["fused"] is True
    chosen = build_optimizer(functools.partial(torch.optim.AdamW, foreach=True), params).defaults
    assert chosen["foreach"] is True and not chosen["fused"]
    assert not build_optimizer(functools.partial(torch.optim.SGD, lr=0.1), params).defaults.get("fused")
    unset = build_optimizer(functools.partial(torch.optim.AdamW, fused=None, foreach=None), params).defaults
    assert unset["fused"] is True  # what jsonargparse builds from a config that leaves them out
    differentiable = build_optimizer(functools.partial(torch.optim.AdamW, differentiable=True), params).defaults
    assert differentiable["differentiable"] is True and not differentiable["fused"]  # torch fuses no such step


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_shipped_config_trains_with_fused_adamw_in_both_engines(engine, in_tmp):
    args = ["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    if engine == "lightning":
        run_cli(*args)
    else:
        loop_cli.run([*args, *QUIET])
    last = next(Path("logs/blobs_mlp").glob("*/checkpoints/last.ckpt"))
    group = torch.load(last, weights_only=True)["optimizer_states"][0]["param_groups"][0]
    assert group["fused"] is True and group["lr"] > 0


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_fused_optimizer_asked_for_with_clipping_under_mixed_precision_is_one_error_in_both_engines(engine, in_tmp):
    # Lightning refuses to clip a fused optimizer's gradients under 16-mixed/bf16-mixed (a
    # RuntimeError at the first step); the hand loop used to train on: both now stop at set-up.
    args = ["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.max_epochs=1",  # it clips (1.0)
            "--trainer.limit_train_batches=2", "--trainer.precision=bf16-mixed",
            "--model.optimizer.init_args.fused=true"]
    with pytest.raises(ConfigError, match=r"model\.optimizer\.init_args\.fused=True: .*gradient_clip_val"):
        run_cli(*args) if engine == "lightning" else loop_cli.run([*args, *QUIET])
    assert not list(Path("logs").glob("*/*/checkpoints/*.ckpt"))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cli_adds_the_progress_bar_unless_switched_off(enabled, in_tmp):
    with mock.patch.object(sys, "argv", ["train.py"]):
        cli = ToyCLI(args=["--config", str(CONFIGS / "blobs_logistic.yaml"),
                           f"--trainer.enable_progress_bar={str(enabled).lower()}"], run=False)
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is (ProgressBar if enabled else type(None))
    if enabled:
        assert bar.min_interval == PROGRESS_BAR_MIN_INTERVAL_S == 0.5


@pytest.mark.parametrize(("min_interval", "drawn"), [(0.0, [1, 2, 3, 4, 5, 6]), (math.inf, [1])])
def test_the_training_bar_redraws_when_its_interval_has_passed_and_at_the_epochs_end(min_interval, drawn, capsys):
    """min_interval 0: every batch; infinite: the first batch only, then the epoch's end (no clock needed)."""
    class Seen(L.Callback):  # what the bar shows after each batch
        def __init__(self) -> None:
            self.shown: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            text = capsys.readouterr().out  # Lightning draws its bars on stdout
            self.shown.append(int(re.findall(r"(\d+)/6 \[", text)[-1]) if re.search(r"(\d+)/6 \[", text) else None)

    seen = Seen()
    bar = ProgressBar(min_interval=min_interval)
    model = Classifier(MLP(2, 2, hidden_sizes=[8]))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[bar, seen])
    trainer.fit(model, datamodule=PointsDataModule("circles", n_samples=1000, batch_size=32))
    assert [n for n in seen.shown if n is not None] == drawn
    assert re.findall(r"(\d+)/6 \[", capsys.readouterr().out)[-1] == "6"  # the epoch's end shows its last count


def test_commands_run_in_process_leave_the_garbage_collector_unfrozen(in_tmp):
    # gc.freeze is for a command's own process (train.py, `toyloops loop` from a shell); called
    # with arguments (a test, a notebook) no entry point may freeze the caller's objects for good.
    import gc

    from toyloops.__main__ import main as toyloops_main
    from toyloops.engine.cli import main as cli_main

    frozen = gc.get_freeze_count()
    bad = ["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.precision=64"]  # stops at set-up
    for run_it in (lambda: cli_main(bad), lambda: toyloops_main(bad), lambda: toyloops_main(["loop", *bad])):
        with pytest.raises(SystemExit) as stop:
            run_it()
        assert stop.value.code not in (0, None)
    assert gc.get_freeze_count() == frozen


def test_parser_kwargs_for_each_subcommand_still_work_when_only_one_parser_is_built(in_tmp):
    # LightningCLI's documented parser_kwargs={"fit": {...}, "test": {...}}: with only the named
    # subcommand's parser built, the others' kwargs must not reach the root parser (a TypeError).
    defaults = {"default_config_files": [str(CONFIGS / "blobs_logistic.yaml")]}
    with mock.patch.object(sys, "argv", ["train.py"]):
        cli = ToyCLI(args=["fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                           "--trainer.limit_val_batches=1", *QUIET],
                     parser_kwargs={"exit_on_error": False, "fit": defaults, "test": defaults})
    assert type(cli.model.net).__name__ == "LogisticRegression" and cli.trainer.global_step == 2


def test_fused_adamw_under_bf16_autocast_leaves_the_engines_bit_identical(in_tmp):
    # The parity suite's bf16 cases clip gradients, so they train unfused; without clipping both fuse.
    from toyloops.tools.compare import compare, max_weight_difference

    runs = compare(["--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.max_epochs=2",
                    "--trainer.limit_train_batches=6", "--trainer.precision=bf16-mixed",
                    "--trainer.gradient_clip_val=null"])
    for engine in ("lightning", "loop"):
        last = torch.load(Path(runs[engine]["run_dir"]) / "checkpoints/last.ckpt", weights_only=True)
        assert last["optimizer_states"][0]["param_groups"][0]["fused"] is True and last["global_step"] == 12
    assert max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"]) == 0.0


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_an_unfused_checkpoint_resumes_with_the_optimizer_this_run_built(engine, tmp_path):
    # optimizer.load_state_dict takes the saved groups whole: a checkpoint saved before Adam/AdamW
    # were fused (its groups hold fused: None) made the resumed step unfused in an optimizer built
    # fused, which tells a GradScaler (16-mixed) it unscales its own gradients.
    from toyloops.engine.defaults import keep_built_implementation
    from toyloops.rules.specs import load_checkpoint

    short = ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--trainer.limit_train_batches=2",
             "--trainer.limit_val_batches=1", "--trainer.gradient_clip_val=null", *QUIET]
    fit_in(tmp_path, engine, *short, "--trainer.max_epochs=1")
    (last,) = tmp_path.glob("logs/blobs_mlp/*/checkpoints/last.ckpt")
    old = load_checkpoint(last)
    for group in old["optimizer_states"][0]["param_groups"]:
        group["fused"] = None  # as saved before this round
    torch.save(old, last)
    fit_in(tmp_path, engine, *short, "--trainer.max_epochs=2", "--ckpt_path", str(last))
    resumed = load_checkpoint(last)
    assert resumed["global_step"] == 4 and resumed["optimizer_states"][0]["param_groups"][0]["fused"] is True

    # What the unfused group did to a fused-built optimizer under a GradScaler: an AssertionError.
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer(torch.optim.AdamW, [weight])
    optimizer.load_state_dict({"state": {}, "param_groups": [{**old["optimizer_states"][0]["param_groups"][0],
                                                              "params": [0]}]})
    keep_built_implementation(optimizer)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(weight.square().sum()).backward()
    scaler.step(optimizer)
    assert optimizer.param_groups[0]["fused"] is True and weight.detach().lt(1).all()
