"""``toyloops sweep --objective/--direction/--sampler``: any logged metric, the Pareto front of two
objectives, each sampler; and what sweep and seeds refuse before any run: DDP, more workers than free
memory holds, objectives and samplers a sweep cannot use."""

from __future__ import annotations

import csv

import pytest
import yaml

from toyloops.tools import seeds, sweep, workers

SMALL = ["--trainer.max_epochs", "2", "--data.init_args.n_samples", "300"]


def write_space(folder, space) -> str:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_a_regression_config_sweeps_to_a_lower_val_loss_than_its_default(in_tmp, capsys):
    """linear_regression by --objective val/loss --direction minimize on a grid of lr and momentum: the best
    trial's val/loss is below the shipped config's own run with the same settings."""
    default = sweep.fit_run("loop", [*sweep.run_args(["linear_regression"], SMALL), "--trainer.default_root_dir",
                                     "default"], monitor="val/loss").best
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "categorical", "choices": [0.05, 0.2]},
                                 "model.optimizer.init_args.momentum": {"type": "float", "low": 0.0, "high": 0.9,
                                                                        "step": 0.9}})
    out = sweep.run(["--config", "linear_regression", "--space", space, "--trials", "4", "--engine", "loop",
                     "--objective", "val/loss", "--direction", "minimize", "--sampler", "grid", "--name", "reg",
                     *SMALL])
    assert out["best"] < default, (out["best"], default)
    rows = list(csv.DictReader((in_tmp / "logs/sweeps/reg/results.csv").open()))
    assert sorted((float(r["model.optimizer.init_args.lr"]), float(r["model.optimizer.init_args.momentum"]))
                  for r in rows) == [(0.05, 0.0), (0.05, 0.9), (0.2, 0.0), (0.2, 0.9)]  # the whole grid, once each
    assert min(float(r["val/loss"]) for r in rows) == pytest.approx(out["best"], abs=1e-6)
    assert f"val/loss (min) {out['best']:.4f}" in capsys.readouterr().out


def test_two_objectives_print_write_and_plot_their_pareto_front(in_tmp, capsys):
    """val/acc (max) and the parameter count (min): the front is the trials no other trial beats in both,
    printed, marked in results.csv, one config each in pareto/, and plotted."""
    space = write_space(in_tmp, {"model.net.init_args.hidden_sizes": {"type": "categorical",
                                                                      "choices": [[2], [32, 32], [4]]}})
    out = sweep.run(["--config", "blobs_mlp", "--space", space, "--trials", "3", "--engine", "loop", "--sampler",
                     "grid", "--objective", "val/acc", "--objective", "params", "--name", "two", *SMALL])
    printed = capsys.readouterr().out
    folder = in_tmp / "logs/sweeps/two"
    rows = {r["model.net.init_args.hidden_sizes"]: r for r in csv.DictReader((folder / "results.csv").open())}
    sizes = {"[2]": 2 * 2 + 2 + 2 * 3 + 3, "[4]": 2 * 4 + 4 + 4 * 3 + 3, "[32, 32]": 2 * 32 + 32 + 32 * 32 + 32 + 32 * 3
             + 3}
    assert {k: float(r["params"]) for k, r in rows.items()} == sizes
    values = {k: (float(r["val/acc"]), float(r["params"])) for k, r in rows.items()}
    front = {k for k, (acc, size) in values.items()
             if not any(a >= acc and s <= size and (a, s) != (acc, size) for a, s in values.values())}
    assert {k for k, r in rows.items() if r["pareto"] == "1"} == front and "[2]" in front  # the smallest net is on it
    assert sorted(out["pareto"]) == sorted(int(rows[k]["number"]) for k in front)
    assert f"pareto front (val/acc (max), params (min)): {len(front)} trial(s)" in printed
    for key in front:
        number = int(rows[key]["number"])
        assert f"  {number:5d}  {values[key][0]:.4f}  {values[key][1]:.0f}  " in printed
        config = yaml.safe_load((folder / "pareto" / f"{number:04d}.yaml").read_text())
        assert config["model"]["init_args"]["net"]["init_args"]["hidden_sizes"] == yaml.safe_load(key)
        assert "default_root_dir" not in config["trainer"]
    assert (folder / "pareto.png").stat().st_size > 10_000 and not (folder / "best.yaml").exists()


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_each_sampler_runs(in_tmp, sampler):
    space = write_space(in_tmp, {
        "model.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "model.optimizer.init_args.weight_decay": {"type": "float", "low": 0.0, "high": 0.1}})
    out = sweep.run(["--config", "blobs_logistic", "--space", space, "--trials", "2", "--engine", "loop", "--sampler",
                     sampler, "--name", sampler, "--trainer.max_epochs", "1", "--data.init_args.n_samples", "300"])
    assert out["counts"]["complete"] == 2 and 0.0 <= out["best"] <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--sampler", "grid"], "--sampler grid: model.optimizer.init_args.lr is a continuous range"),
    (["--sampler", "cmaes", "--objective", "val/acc", "--objective", "params"], "CMA-ES optimises one objective"),
    (["--objective", "val/loss"], "--objective val/loss: give its --direction (minimize or maximize)"),
    (["--objective", "params"], "the first objective must be a logged metric"),
    (["--objective", "val/acc", "--objective", "val/acc"], "--objective val/acc: given twice"),
    (["--objective", "val/acc", "--objective", "params", "--direction", "maximize"], "given 1 times for 2"),
    (["--direction", "minimize"], "give it with the --objective it applies to"),
])
def test_an_objective_or_sampler_the_sweep_cannot_use_is_one_line(in_tmp, args, message):
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 0.1}})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_logistic", "--space", space, "--trials", "2", "--name", "bad", *args, *SMALL])
    line = str(stop.value.code)
    assert line.startswith("error: ") and "\n" not in line and message in line, line
    assert not (in_tmp / "logs/sweeps/bad").exists()  # no study


def test_a_grid_smaller_than_the_trials_asked_for_is_one_line(in_tmp):
    space = write_space(in_tmp, {"data.init_args.batch_size": {"type": "categorical", "choices": [16, 32]}})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_logistic", "--space", space, "--trials", "3", "--sampler", "grid", *SMALL])
    assert str(stop.value.code) == "error: --trials 3: --sampler grid has 2 points in this space; ask for at most 2 " \
                                   "trials"


def test_an_objective_the_runs_do_not_log_ends_the_sweep_in_one_line(in_tmp):
    space = write_space(in_tmp, {"model.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 0.1}})
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_logistic", "--space", space, "--trials", "3", "--engine", "loop", "--name", "n",
                    "--objective", "val/acc", "--objective", "val/f1", "--direction", "maximize", "--direction",
                    "maximize", "--trainer.max_epochs", "1", "--data.init_args.n_samples", "300"])
    line = str(stop.value.code)
    assert line.startswith("error: --objective val/f1: the run logs no val/f1 at its epoch ends (it logs: ") \
        and "val/acc" in line and "\n" not in line, line
    assert [r["state"] for r in csv.DictReader((in_tmp / "logs/sweeps/n/results.csv").open())] == ["FAIL"]


DDP = [["--config", "presets/ddp_cpu"], ["--trainer.strategy", "ddp", "--trainer.devices", "2"],
       ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]]


@pytest.mark.parametrize("ddp", DDP, ids=["preset", "strategy", "devices"])
def test_ddp_is_refused_by_sweep_and_seeds_before_any_run(in_tmp, ddp):
    """Each run trains inside the command's process, where DDP cannot start its ranks: one line saying so
    and what to use instead, before any study, run folder or training."""
    for main, args in ((sweep.main, ["--space", "mlp", "--trials", "2", "--name", "d"]),
                       (seeds.main, ["--n", "2", "--name", "d", "--engine", "lightning"])):
        with pytest.raises(SystemExit) as stop:
            main(["--config", "blobs_mlp", *args, *ddp, *SMALL])
        line = str(stop.value.code)
        assert line.startswith("error: trainer.strategy=") and "cannot start its ranks" in line, line
        assert "--trainer.devices 1" in line and "presets/ddp_cpu" in line and "\n" not in line
    assert not (in_tmp / "logs").exists()


def test_the_hand_loop_refuses_two_devices_in_seeds_in_one_line(in_tmp):
    with pytest.raises(SystemExit) as stop:
        seeds.main(["--config", "blobs_mlp", "--n", "2", "--engine", "loop", "--trainer.devices", "2", *SMALL])
    assert str(stop.value.code) == "error: trainer.devices='2': the hand trainer runs one process; use L.Trainer"
    assert not (in_tmp / "logs").exists()


def test_more_workers_than_free_memory_holds_are_refused_in_one_line(in_tmp):
    """The bound is the available memory over this command's own peak memory (torch, Lightning, the config
    built): 10**6 workers of several hundred MiB each fit on no machine."""
    assert workers.available_memory()[0] > 0 and workers.peak_memory() > 0
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", "blobs_mlp", "--space", "mlp", "--trials", "2", "--workers", "1000000", "--name", "m",
                    *SMALL])
    line = str(stop.value.code)
    assert line.startswith("error: --workers 1000000: at most ") and "\n" not in line, line
    bound, available, each = (int(line.split(before)[1].split()[0]) for before in ("at most ", "(", "/ "))
    assert available // each - 1 <= bound <= available // each + 1  # the sum it shows (in whole MiB)
    assert ("MemAvailable in /proc/meminfo" in line or "memory.max" in line) and f"--workers {bound} or fewer" in line
    assert each > 100  # torch and Lightning: some hundred MiB (here this test process's, whatever ran in it)
    assert not (in_tmp / "logs/sweeps/m").exists()
