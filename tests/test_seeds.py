"""``toyloops seeds``: runs over seeds and folds in one process, their statistics, and the k-fold split."""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import torch
import yaml

from toyloops.core.datamodules import PointsDataModule, SequenceDataModule
from toyloops.rules.batches import split_indices
from toyloops.rules.errors import ConfigError
from toyloops.tools import seeds, stats

TINY = ["--trainer.max_epochs", "2", "--data.init_args.n_samples", "240"]


@pytest.mark.parametrize(("df", "quantile"), [(1, 12.706204736), (2, 4.302652730), (9, 2.262157163),
                                              (29, 2.045229642), (1000, 1.962339081)])
def test_t_quantiles_match_the_table(df, quantile):
    assert stats.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-8)


def test_t_p_values_match_a_numerical_integral():
    """The closed form against Simpson's rule on the t density (an independent route)."""
    for t, df in ((2.0, 10), (0.5, 3), (3.1, 4), (1.0, 1)):
        density = lambda x, df=df: math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(  # noqa: E731
            df * math.pi) * (1 + x * x / df) ** (-(df + 1) / 2)
        steps = 20000
        h = t / steps
        inner = h / 3 * sum((1 if i in (0, steps) else 4 if i % 2 else 2) * density(i * h) for i in range(steps + 1))
        assert stats.t_two_sided_p(t, df) == pytest.approx(1 - 2 * inner, abs=1e-9)
    assert stats.t_two_sided_p(2.0, 10) == pytest.approx(0.0733880348, abs=1e-9)  # the published value


def test_paired_t_test():
    a, b = [0.91, 0.88, 0.95, 0.90, 0.93], [0.89, 0.87, 0.91, 0.90, 0.90]
    diff, p = stats.paired_t_test(a, b)
    d = [x - y for x, y in zip(a, b, strict=True)]
    assert diff.mean == pytest.approx(statistics.mean(d)) and diff.std == pytest.approx(statistics.stdev(d))
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(5))
    assert t == pytest.approx(2.828427) and p == pytest.approx(0.047421, abs=1e-6)  # t = 2.83, df 4 (the table)
    assert diff.low < diff.mean < diff.high
    assert stats.paired_t_test(a, a)[1] == 1.0


@pytest.mark.parametrize("n", [240, 241, 1000])
def test_k_folds_are_disjoint_cover_train_and_val_and_keep_the_test_split(n):
    train0, val0, test0 = split_indices(n, 0.2, 0.2, seed=3)
    folds = [split_indices(n, 0.2, 0.2, seed=3, fold=k, num_folds=5) for k in range(5)]
    vals = [set(val.tolist()) for _, val, _ in folds]
    assert all(not (vals[i] & vals[j]) for i in range(5) for j in range(i + 1, 5))  # disjoint
    assert set().union(*vals) == set(train0.tolist()) | set(val0.tolist())  # cover the train + val data
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    for train, val, test in folds:
        assert torch.equal(test, test0)  # the test split does not move
        assert set(train.tolist()) == set().union(*vals) - set(val.tolist())
    other_seed = split_indices(n, 0.2, 0.2, seed=4, fold=0, num_folds=5)[1]
    assert not torch.equal(other_seed, folds[0][1])  # seeded


def test_data_modules_take_fold_and_num_folds():
    points = [PointsDataModule(n_samples=300, fold=k, num_folds=3) for k in range(3)]
    vals = [set(map(tuple, dm.splits["val"][0].tolist())) for dm in points]
    assert sum(map(len, vals)) == len(set().union(*vals)) == 240  # 300 minus the 60 test samples
    seqs = SequenceDataModule(n_samples=200, fold=1, num_folds=4)
    assert len(seqs.splits["val"][0]) == 40 and len(seqs.splits["train"][0]) == 120
    with pytest.raises(ConfigError, match="0 <= fold < num_folds"):
        PointsDataModule(n_samples=300, fold=3, num_folds=3)
    with pytest.raises(ConfigError, match="give both"):
        PointsDataModule(n_samples=300, fold=1)


CENTERS = ["--data.init_args.centers", "[[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]]"]  # blobs_mlp's, for both


def test_seeds_vs_compares_two_configs_on_the_same_seeds(in_tmp, capsys):
    out = seeds.run(["--config", "blobs_mlp", "--vs", "blobs_logistic", "--n", "3", "--engine", "loop", *TINY,
                     *CENTERS])
    mlp, logistic = out["scores"]["blobs_mlp"], out["scores"]["blobs_logistic"]
    folder = in_tmp / "logs/seeds/blobs_mlp-vs-blobs_logistic"
    for arm, values in (("blobs_mlp", mlp), ("blobs_logistic", logistic)):
        for seed, value in enumerate(values):
            config = next((folder / arm / f"seed_{seed}").glob("logs/*/loop_version_0/config.yaml"))
            assert yaml.safe_load(config.read_text())["seed_everything"] == seed
            assert 1 / 3 < value <= 1.0  # above chance on three blobs
    assert len(set(mlp)) > 1  # the seed changes data, split and init
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [float(r["blobs_mlp"]) for r in rows] == pytest.approx(mlp, abs=1e-6)
    assert [float(r["difference"]) for r in rows] == pytest.approx([a - b for a, b in zip(mlp, logistic,
                                                                                          strict=True)], abs=1e-6)
    s = out["blobs_mlp"]
    half = 4.302652730 * statistics.stdev(mlp) / math.sqrt(3)
    assert (s.mean, s.low, s.high) == pytest.approx((statistics.mean(mlp), statistics.mean(mlp) - half,
                                                     statistics.mean(mlp) + half))
    assert out["p"] == stats.paired_t_test(mlp, logistic)[1]
    printed = capsys.readouterr().out
    assert f"blobs_mlp: {s.mean:.4f} ± {s.std:.4f}" in printed and f"paired t-test p = {out['p']:.4g}" in printed
    assert "best val/acc (max) over 3 seeds" in printed


@pytest.mark.parametrize(("config", "vs", "message"), [
    ("linear_regression", "blobs_mlp", "blobs_mlp ranks by val/acc (max), linear_regression by val/loss (min)"),
    ("blobs_mlp", "blobs_logistic", "other data (data.init_args.centers: [[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]] "
                                    "vs None)"),
    ("blobs_mlp", "circles_mlp", "other data (data.init_args.centers"),
])
def test_seeds_vs_refuses_what_does_not_pair(in_tmp, config, vs, message):
    """A paired test needs the same objective and the same data and splits; anything else is one line,
    before any run."""
    with pytest.raises(SystemExit) as stop:
        seeds.main(["--config", config, "--vs", vs, "--n", "2", "--engine", "loop", *TINY])
    line = str(stop.value.code)
    assert line.startswith(f"error: --vs {vs}: not comparable with {config}: ") and message in line, line
    assert "\n" not in line and not (in_tmp / "logs/seeds").exists()


def test_seeds_of_a_regression_report_its_objective(in_tmp, capsys):
    out = seeds.run(["--config", "linear_regression", "--n", "2", "--engine", "loop", *TINY])
    printed = capsys.readouterr().out
    assert "best val/loss (min) over 2 seeds" in printed and "val/acc" not in printed
    assert all(0 < v < 12.1 for v in out["scores"]["linear_regression"])  # MSEs, below the mean's 12.1


def test_seeds_kfold_runs_each_fold_once(in_tmp):
    out = seeds.run(["--config", "blobs_mlp", "--kfold", "3", *TINY])
    folder = in_tmp / "logs/seeds/blobs_mlp/blobs_mlp"
    for k in range(3):
        config = yaml.safe_load(next((folder / f"fold_{k}").glob("logs/*/loop_version_0/config.yaml")).read_text())
        assert (config["data"]["init_args"]["fold"], config["data"]["init_args"]["num_folds"]) == (k, 3)
    assert len(out["scores"]["blobs_mlp"]) == 3 and out["blobs_mlp"].n == 3


def test_seeds_kfold_with_n_runs_each_fold_of_each_seed(in_tmp, capsys):
    out = seeds.run(["--config", "blobs_mlp", "--kfold", "2", "--n", "2", *TINY])
    folder = in_tmp / "logs/seeds/blobs_mlp/blobs_mlp"
    for seed in range(2):
        for k in range(2):
            config = yaml.safe_load(next((folder / f"fold_{k}_seed_{seed}").glob("logs/*/*/config.yaml")).read_text())
            assert (config["seed_everything"], config["data"]["init_args"]["fold"]) == (seed, k)
    assert out["blobs_mlp"].n == 4 and "over 4 fold x seed runs" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "1"], "--n=1: a confidence interval needs at least 2 seeds"),
    (["--kfold", "1"], "--kfold=1: expected an int >= 2"),
    (["--seed_everything", "3"], "--seed_everything: toyloops seeds sets this itself"),
])
def test_seeds_bad_arguments_are_one_line(in_tmp, args, message):
    with pytest.raises(SystemExit) as stop:
        seeds.main(["--config", "blobs_mlp", *args])
    assert str(stop.value.code) == f"error: {message}" or message in str(stop.value.code)
    assert not (in_tmp / "logs").exists()


def test_a_checkpoint_from_before_k_fold_still_loads_its_data_module(in_tmp, trained):
    """Checkpoints written before fold/num_folds existed hold no such keys: they mean no k-fold."""
    from conftest import BLOBS_SHORT

    checkpoint = torch.load(trained("lightning", "blobs_mlp", *BLOBS_SHORT).last, weights_only=True)  # 600 samples
    assert {"fold", "num_folds"} <= set(checkpoint["datamodule_hyper_parameters"])
    for key in ("fold", "num_folds"):
        del checkpoint["datamodule_hyper_parameters"][key]
    torch.save(checkpoint, in_tmp / "old.ckpt")
    old = PointsDataModule.load_from_checkpoint(in_tmp / "old.ckpt")
    assert (old.fold, old.num_folds) == (None, None) and len(old.splits["val"][0]) == 120
    checkpoint["datamodule_hyper_parameters"]["unknown"] = 1
    torch.save(checkpoint, in_tmp / "other.ckpt")
    with pytest.raises(ConfigError, match="holds no PointsDataModule"):
        PointsDataModule.load_from_checkpoint(in_tmp / "other.ckpt")
