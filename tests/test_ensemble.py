"""The ensemble trainer: each member ends where its solo hand-loop run ends (weights within 1e-5 in
float32, the same best score at 4 decimals), writes a normal run folder, and the stacked optimizer
update is torch.optim's, member by member."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from toyloops.engine import loop_cli
from toyloops.tools import ensemble, seeds
from toyloops.tools.stacked import StackedOptimizer
from toyloops.tools.sweep import QUIET

SMALL = ["--data.init_args.n_samples", "300"]
NO_DROPOUT = ["--model.net.init_args.dropout", "0.0"]


def runs_of(config: str, per_member: list[list[str]], *extra: str) -> dict[str, list[str]]:
    return {f"m{i}": ["--config", config, *QUIET, *SMALL, "--trainer.default_root_dir", f"m{i}", *extra, *own]
            for i, own in enumerate(per_member)}


def assert_members_equal_solo(runs: dict[str, list[str]], tolerance: float = 1e-5) -> list[ensemble.Member]:
    members = ensemble.fit_members(runs)
    for m, args in zip(members, runs.values(), strict=True):
        solo_args = [a if a != m.label else f"solo_{m.label}" for a in args]
        solo = loop_cli.run(["fit", *solo_args])
        solo["run_dir"] = solo["last_checkpoint"].parent.parent
        for kind in ("last", "best"):  # the best as it was at its epoch, held until the member ended
            ours = torch.load(m.folder / f"checkpoints/{kind}.ckpt", weights_only=True)
            theirs = torch.load(solo[f"{kind}_checkpoint"], weights_only=True)
            assert ours["global_step"] == theirs["global_step"] and ours["epoch"] == theirs["epoch"]
            assert ours["state_dict"].keys() == theirs["state_dict"].keys()
            for name, value in theirs["state_dict"].items():
                assert (ours["state_dict"][name].float() - value.float()).abs().max().item() <= tolerance, name
        assert round(m.best, 4) == round(solo["best"], 4)
        assert m.failed is None
        configs = [yaml.safe_load((folder / "config.yaml").read_text()) for folder in (m.folder, solo["run_dir"])]
        for config in configs:
            config["trainer"].pop("default_root_dir")
        assert configs[0] == configs[1]  # the member's config is its solo run's, parsed or copied
    return members


def test_seeds_equal_their_solo_runs_fp32(in_tmp):
    assert_members_equal_solo(runs_of("blobs_mlp", [["--seed_everything", str(s)] for s in range(3)],
                                      "--trainer.max_epochs", "3", *NO_DROPOUT))


def test_dropout_draws_each_members_own_stream(in_tmp):
    """Per-member mask streams: with dropout 0.1 and 0.3 the members still end at their solo runs."""
    per_member = [["--seed_everything", "0"], ["--seed_everything", "1", "--model.net.init_args.dropout", "0.3"]]
    assert_members_equal_solo(runs_of("blobs_mlp", per_member, "--trainer.max_epochs", "2"))


def test_bf16_members_equal_their_solo_runs(in_tmp):
    assert_members_equal_solo(runs_of("blobs_mlp", [["--seed_everything", str(s)] for s in range(2)],
                                      "--trainer.max_epochs", "2", "--config", "presets/bf16", *NO_DROPOUT))


def test_per_member_hyperparameters_clipping_and_a_step_scheduler(in_tmp):
    """lr, weight decay, label smoothing and class weights differ per member; a clip small enough to
    bind; StepLR stepped every optimizer step; weight decay kept off biases."""
    per_member = [["--model.optimizer.init_args.lr", "0.02", "--model.init_args.label_smoothing", "0.1"],
                  ["--model.optimizer.init_args.weight_decay", "0.3", "--model.init_args.class_weights", "[1, 2, 3]"],
                  ["--model.optimizer.init_args.lr", "0.005", "--model.init_args.decay_biases", "false"]]
    assert_members_equal_solo(runs_of(
        "blobs_mlp", per_member, "--trainer.max_epochs", "2", "--trainer.gradient_clip_val", "0.05", *NO_DROPOUT,
        "--model.scheduler", "torch.optim.lr_scheduler.StepLR", "--model.scheduler.init_args.step_size", "4",
        "--model.init_args.scheduler_interval", "step"))


def test_sgd_one_logit_and_regression_members_equal_their_solo_runs(in_tmp):
    assert_members_equal_solo(runs_of("blobs_logistic", [["--seed_everything", "0"], [
        "--seed_everything", "1", "--model.optimizer.init_args.momentum", "0.9",
        "--model.init_args.label_smoothing", "0.2"]], "--trainer.max_epochs", "2"))
    assert_members_equal_solo(runs_of("linear_regression", [["--seed_everything", "0"], [
        "--model.optimizer.init_args.lr", "0.01"]], "--trainer.max_epochs", "2"))


def test_clipping_by_value_per_member(in_tmp):
    assert_members_equal_solo(runs_of("blobs_logistic", [["--seed_everything", "0"], ["--seed_everything", "1"]],
                                      "--trainer.max_epochs", "2", "--trainer.gradient_clip_val", "0.01",
                                      "--trainer.gradient_clip_algorithm", "value"))


def test_reduce_lr_on_plateau_reads_each_members_own_val_loss(in_tmp):
    members = assert_members_equal_solo(runs_of("blobs_logistic", [["--seed_everything", "0"], [
        "--model.optimizer.init_args.lr", "0.5"]], "--trainer.max_epochs", "4",
        "--model.scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--model.scheduler.init_args.patience", "0", "--model.scheduler.init_args.factor", "0.5",
        "--model.scheduler.init_args.mode", "max"))  # a falling val/loss counts as no improvement: it fires
    assert [m.trainer.optimizer.param_groups[0]["lr"] for m in members] == [0.1 / 8, 0.5 / 8]  # halved after epochs 2-4


def test_early_stopping_stops_each_member_as_its_solo_run(in_tmp):
    """One member stops early (a patience of 1 on a tiny lr), the other trains on: each as its solo run."""
    members = assert_members_equal_solo(runs_of(
        "circles_mlp", [["--model.optimizer.init_args.lr", "1e-5"], ["--model.optimizer.init_args.lr", "0.01"]],
        "--trainer.max_epochs", "6", "--config", "presets/early_stopping",
        "--trainer.callbacks.init_args.patience", "1", "--trainer.callbacks.init_args.min_delta", "0.01"))
    assert members[0].trainer.should_stop and members[0].trainer.global_step < members[1].trainer.global_step


def test_a_member_whose_loss_goes_nan_fails_alone(in_tmp):
    """As its solo run would, the member fails before that step's update (its error kept); the other
    member trains on to its solo run's weights."""
    runs = runs_of("blobs_mlp", [["--model.optimizer.init_args.lr", "1e30"], []], "--trainer.max_epochs", "2",
                   *NO_DROPOUT)
    members = ensemble.fit_members(runs)
    assert members[0].failed.startswith("loss is nan at step") and members[1].failed is None
    solo = loop_cli.run(["fit", *[a if a != "m1" else "solo" for a in runs["m1"]]])
    ours = torch.load(members[1].folder / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    theirs = torch.load(solo["last_checkpoint"], weights_only=True)["state_dict"]
    assert all((ours[k] - v).abs().max() <= 1e-5 for k, v in theirs.items())


def test_a_members_checkpoint_validates_as_a_normal_run(in_tmp, monkeypatch, capsys):
    from toyloops.__main__ import main

    members = ensemble.fit_members(runs_of("blobs_mlp", [[], ["--seed_everything", "1"]], "--trainer.max_epochs", "1"))
    last = members[1].folder / "checkpoints/last.ckpt"
    monkeypatch.setattr(sys, "argv", ["toyloops"])  # pytest's own flags are not the CLI's
    main(["validate", "--config", "blobs_mlp", *SMALL, "--seed_everything", "1", "--ckpt_path", str(last)])
    logged = members[1].trainer.progress.callback_metrics["val/acc"]
    assert f"{logged:.4f}" in capsys.readouterr().out  # `toyloops validate` scores what the member logged
    events = sorted(path.suffix for path in members[1].folder.glob("events.out.tfevents.*"))
    assert len(events) == 2 and events[1] == ".hparams" and (members[1].folder / "config.yaml").is_file()


def test_each_member_logs_its_solo_runs_scalars(in_tmp):
    """One TensorBoard run per member, with its solo run's scalar tags at the same steps and values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["--config", "blobs_mlp", *QUIET, *SMALL, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "2"]
    (member,) = ensemble.fit_members({"m": [*args, "--trainer.default_root_dir", "m"]})
    solo = loop_cli.run(["fit", *args, "--trainer.default_root_dir", "solo"])
    ours, theirs = (EventAccumulator(str(folder)).Reload() for folder in (member.folder,
                                                                          solo["last_checkpoint"].parent.parent))
    tags = set(theirs.Tags()["scalars"])
    assert tags >= {"train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "lr-AdamW", "epoch",
                    "baseline/chance", "val/acc_best", "val/loss_final"}  # the last two: the HParams entry's
    assert set(ours.Tags()["scalars"]) == tags
    for tag in tags:
        assert [(e.step, round(e.value, 4)) for e in ours.Scalars(tag)] == \
            [(e.step, round(e.value, 4)) for e in theirs.Scalars(tag)], tag


def test_the_transformer_falls_back_in_one_line(in_tmp, capsys):
    out = seeds.run(["--config", "majority_transformer", "--n", "2", "--trainer.max_epochs", "1",
                     "--data.init_args.n_samples", "200"])
    assert "seeds: one run at a time (loop engine): TransformerClassifier does not stack" in capsys.readouterr().out
    assert len(out["scores"]["majority_transformer"]) == 2


def test_seeds_vs_trains_each_arm_as_an_ensemble(in_tmp, capsys):
    same_data = ["--data.init_args.centers", "[[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]]", "--data.init_args.n_samples",
                 "300", "--trainer.max_epochs", "2"]
    out = seeds.run(["--config", "blobs_mlp", "--vs", "blobs_logistic", "--n", "2", *same_data])
    assert capsys.readouterr().out.count("(ensemble of 2)") == 4 and out["difference"].n == 2


def test_seeds_ensemble_matches_solo_seeds(in_tmp):
    args = ["--config", "blobs_mlp", "--n", "3", "--trainer.max_epochs", "2", *SMALL]
    together = seeds.run([*args, "--name", "together"])
    alone = seeds.run([*args, "--name", "alone", "--engine", "solo"])
    assert [round(s, 4) for s in together["scores"]["blobs_mlp"]] == [round(s, 4) for s in alone["scores"]["blobs_mlp"]]


@pytest.mark.parametrize(("kind", "settings"), [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.01}), ("SGD", {"dampening": 0.3}),
    ("SGD", {"momentum": 0.5, "nesterov": True, "dampening": 0.0}),
    ("Adam", {"weight_decay": 0.01}), ("AdamW", {"weight_decay": 0.1, "betas": (0.8, 0.9)})])
def test_the_stacked_update_is_torch_optims_per_member(kind, settings):
    torch.manual_seed(0)
    rates = [1e-3, 3e-2, 0.1]
    params = [torch.randn(4, 3) for _ in rates]
    grads = [[torch.randn(4, 3) for _ in rates] for _ in range(5)]
    solo = [torch.nn.Parameter(p.clone()) for p in params]
    optimizers = [getattr(torch.optim, kind)([p], lr=lr, foreach=False, **settings)
                  for p, lr in zip(solo, rates, strict=True)]
    stacked = torch.nn.Parameter(torch.stack(params).flatten(1))  # (members, all weights), as StackedNet.flat
    update = StackedOptimizer(stacked, [12], optimizers, ["w"], [{"w": p} for p in solo])
    for step in grads:
        stacked.grad = torch.stack(step).flatten(1)
        update.step()
        for p, g, optimizer in zip(solo, step, optimizers, strict=True):
            p.grad = g.clone()
            optimizer.step()
    for m, p in enumerate(solo):
        torch.testing.assert_close(stacked[m].detach().view(4, 3), p.detach(), rtol=0, atol=1e-6)
