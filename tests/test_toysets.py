"""The playground sets (moons, spirals, xor) and the baselines every run is read against."""

import math
import re

import pytest
import torch
from conftest import CONFIGS, QUIET, run_cli

from toyloops import PointsDataModule, SequenceDataModule, make_blobs, make_moons, make_spirals, make_xor
from toyloops.core.data import bayes_accuracy_blobs
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError

PLAYGROUND = {"moons": make_moons, "spirals": make_spirals, "xor": make_xor}


@pytest.mark.parametrize("name", PLAYGROUND)
def test_playground_sets_are_pure_functions_of_the_seed(name):
    make = PLAYGROUND[name]
    x1, y1 = make(n_samples=500, noise=0.1, seed=3)
    x2, y2 = make(n_samples=500, noise=0.1, seed=3)
    x3, y3 = make(n_samples=500, noise=0.1, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and torch.equal(y1, y3)  # other points, the same class sizes
    assert x1.shape == (500, 2) and x1.dtype == torch.float32 and y1.dtype == torch.int64


@pytest.mark.parametrize("name", PLAYGROUND)
def test_playground_sets_are_balanced_and_noise_is_jitter_of_that_std(name):
    x, y = PLAYGROUND[name](n_samples=20001, noise=0.0, seed=0)
    assert y.tolist().count(0) == 10001 and y.tolist().count(1) == 10000
    xn, yn = PLAYGROUND[name](n_samples=20001, noise=0.2, seed=0)
    assert torch.equal(y, yn)
    jitter = xn - x
    assert jitter.mean().abs() < 0.01 and jitter.std().item() == pytest.approx(0.2, abs=0.005)


def test_moons_are_two_unit_half_circles_one_shifted():
    x, y = make_moons(4000, noise=0.0, seed=0)
    top, bottom = x[y == 0], x[y == 1]
    assert torch.allclose(top.norm(dim=1), torch.ones(len(top))) and (top[:, 1] >= 0).all()
    centre = torch.tensor([1.0, 0.5])
    assert torch.allclose((bottom - centre).norm(dim=1), torch.ones(len(bottom)), atol=1e-6)
    assert (bottom[:, 1] <= 0.5 + 1e-6).all()


def test_spiral_arms_are_each_others_half_turn():
    x, y = make_spirals(4000, noise=0.0, turns=1.5, seed=0)
    radius, angle = x.norm(dim=1), torch.atan2(x[:, 1], x[:, 0])
    t = radius  # a point at fraction t along its arm sits at radius t ...
    expected = 2 * math.pi * 1.5 * t + math.pi * y  # ... and this angle
    gap = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi
    assert gap.abs().max() < 1e-3 and radius.max() <= 1


def test_xor_label_is_whether_the_coordinates_differ_in_sign():
    x, y = make_xor(4000, noise=0.0, seed=0)
    assert torch.equal(y, ((x[:, 0] > 0) != (x[:, 1] > 0)).long())
    assert x.abs().max() <= 1
    quadrants = torch.bincount(2 * (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    assert quadrants.min() > 900  # each quadrant gets about a quarter


@pytest.mark.parametrize("noise", [-0.1, math.inf])
def test_a_negative_or_infinite_jitter_is_refused(noise):
    with pytest.raises(ConfigError, match="noise must be a finite number >= 0"):
        PointsDataModule(dataset="spirals", noise=noise)


@pytest.mark.parametrize("name", PLAYGROUND)
def test_the_data_module_standardises_them_with_train_statistics(name):
    dm = PointsDataModule(dataset=name, noise=0.1, n_samples=1000)
    train = dm.splits["train"][0]
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train.std(0), torch.ones(2), atol=1e-5)
    assert dm.num_classes == 2 and dm.num_features == 2


def test_two_blob_bayes_accuracy_is_what_the_bayes_rule_scores():
    centers, variance = [[-1.5, -1.0], [1.2, 1.3]], 0.5
    x, y = make_blobs(200_000, centers, variance, seed=0)
    mu0, mu1 = torch.tensor(centers)
    bayes_rule = ((x - mu1).norm(dim=1) < (x - mu0).norm(dim=1)).long()  # nearer mean: equal priors, equal covariances
    scored = (bayes_rule == y).double().mean().item()
    assert bayes_accuracy_blobs(centers, variance) == pytest.approx(scored, abs=0.001)
    assert bayes_accuracy_blobs(centers, variance) == pytest.approx(0.99393, abs=1e-5)
    assert bayes_accuracy_blobs([[0, 0], [1, 1], [2, 2]], 1.0) is None  # no closed form


def test_baselines_of_each_data_module():
    blobs = PointsDataModule(dataset="blobs")
    y_val = blobs.splits["val"][1]
    assert blobs.baselines == {"chance": 0.5, "majority": max(y_val.tolist().count(c) for c in (0, 1)) / len(y_val),
                               "bayes": bayes_accuracy_blobs(blobs.centers, blobs.variance)}
    three = PointsDataModule(dataset="blobs", centers=[[0, 0], [3, 0], [0, 3]], n_samples=900)
    assert three.baselines["chance"] == pytest.approx(1 / 3) and "bayes" not in three.baselines
    assert PointsDataModule(dataset="circles", noise=0.1).baselines["bayes"] == pytest.approx(0.9)
    circles = PointsDataModule(dataset="circles", n_samples=50_000)
    assert circles.baselines["majority"] == pytest.approx(math.exp(-0.5), abs=0.01)  # P(r^2 > 1), about 61/39
    assert PointsDataModule(dataset="moons", noise=0.0).baselines["bayes"] == 1.0
    assert "bayes" not in PointsDataModule(dataset="moons", noise=0.1).baselines  # overlapping jitter: unknown
    assert SequenceDataModule(task="parity", n_samples=500).baselines["bayes"] == 1.0


@pytest.mark.slow
def test_logistic_regression_cannot_learn_the_spirals_the_mlp_config_learns(in_tmp):
    header = (CONFIGS / "spirals_mlp.yaml").read_text()
    stated = float(re.search(r"peaks at val/acc ([0-9.]+)", header)[1])
    cli = run_cli("fit", "--config", str(CONFIGS / "spirals_mlp.yaml"), "--model.net=toyloops.LogisticRegression")
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert best == pytest.approx(stated, abs=0.0051) and best < 0.7  # the MLP's 1.000 is checked in test_cli


def test_the_hand_loops_summary_shows_val_acc_next_to_the_baselines(in_tmp, capsys):
    run(["fit", "--config", str(CONFIGS / "spirals_mlp.yaml"), "--trainer.max_epochs=1", *QUIET])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("best val/acc"))
    assert re.fullmatch(r"best val/acc: [0-9.]+  \(chance 0\.5000, majority 0\.5350, Bayes 1\.0000\)", line)
