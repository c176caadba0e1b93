"""Population sweeps (``toyloops sweep --population K``): trials asked K at a time and trained as one
ensemble, each trial what it would be alone, pruned per member."""

from __future__ import annotations

import argparse
import csv

import optuna
import pytest
import yaml

from toyloops.tools import population, sweep
from toyloops.tools.study import Objective

SMALL = ["--data.init_args.n_samples", "300", "--trainer.max_epochs", "2"]
LR = {"type": "float", "low": 1e-3, "high": 0.1, "log": True}


def write_space(folder, space):
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    return folder / "space.yaml"


def test_a_population_sweep_scores_each_trial_as_alone(in_tmp, capsys):
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": LR,
                                 "model.optimizer.init_args.weight_decay": {"type": "float", "low": 1e-4, "high": 0.1}})
    out = sweep.run(["--config", "blobs_mlp", "--space", str(space), "--trials", "4", "--population", "2",
                     "--name", "pop", *SMALL])
    printed = capsys.readouterr().out
    assert printed.count("trained as one ensemble") == 2 and out["counts"]["complete"] == 4
    rows = list(csv.DictReader((in_tmp / "logs/sweeps/pop/results.csv").open()))
    for row in rows[:2]:  # alone, in the hand loop: the same best score
        params = {key: float(row[key]) for key in ("model.optimizer.init_args.lr",
                                                   "model.optimizer.init_args.weight_decay")}
        alone = sweep.fit_run("loop", [*sweep.run_args(["blobs_mlp"], SMALL), *sweep.as_args(params),
                                       "--trainer.default_root_dir", f"alone_{row['number']}"])
        assert f"{alone.best:.4f}" == f"{float(row['val/acc']):.4f}"


def test_the_pruner_stops_each_member_on_its_own(in_tmp):
    """Against an earlier trial at 0.9 in both epochs, the member with a useless learning rate is pruned
    at its second epoch and leaves the ensemble; the other trains on and completes."""
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    dist = optuna.distributions.FloatDistribution(1e-7, 0.1, log=True)
    study.add_trial(optuna.create_trial(value=0.9, params={"model.optimizer.init_args.lr": 0.01},
                                        distributions={"model.optimizer.init_args.lr": dist},
                                        intermediate_values={0: 0.9, 1: 0.9, 2: 0.9}))
    for lr in (1e-7, 0.02):
        study.enqueue_trial({"model.optimizer.init_args.lr": lr})
    opts = argparse.Namespace(trials=3, population=2)
    runner = population.Population(opts, in_tmp, {"model.optimizer.init_args.lr": dist},
                                   sweep.run_args(["blobs_mlp"], ["--data.init_args.n_samples", "300",
                                                                  "--trainer.max_epochs", "4"]),
                                   Objective("val/acc", "max"), "test")
    assert runner.run(study)
    useless, good = study.get_trials()[1:]
    assert useless.state == optuna.trial.TrialState.PRUNED and sorted(useless.intermediate_values) == [0, 1]
    assert good.state == optuna.trial.TrialState.COMPLETE and sorted(good.intermediate_values) == [0, 1, 2, 3]
    assert good.value > 0.9


@pytest.mark.parametrize(("config", "space", "why"), [
    ("blobs_mlp", {"data.init_args.batch_size": {"type": "categorical", "choices": [32, 64]}},
     "data.init_args.batch_size is not a per-member hyperparameter"),
    ("majority_transformer", {"model.optimizer.init_args.lr": LR}, "TransformerClassifier does not stack")])
def test_a_space_or_config_that_does_not_stack_sweeps_one_trial_at_a_time(in_tmp, capsys, config, space, why):
    out = sweep.run(["--config", config, "--space", str(write_space(in_tmp, space)), "--trials", "1",
                     "--population", "4", "--engine", "loop", "--data.init_args.n_samples", "200",
                     "--trainer.max_epochs", "1"])
    printed = capsys.readouterr().out
    assert f"sweep: one trial at a time: {why}" in printed
    assert out["counts"]["complete"] == 1


def test_a_population_whose_trials_all_go_nan_ends_in_one_line(in_tmp, capfd):
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "float", "low": 1e30, "high": 1e35}})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_mlp", "--space", str(space), "--trials", "2", "--population", "2",
                    "--name", "nan", *SMALL])
    line = str(stop.value.code)
    assert line.startswith("error: 2 trials failed (the last: loss is nan") and "\n" not in line, line
    rows = list(csv.DictReader((in_tmp / "logs/sweeps/nan/results.csv").open()))
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
