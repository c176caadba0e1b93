"""Regression on a line with a known answer: data, the MSE/MAE run in both engines, and the report."""

import re

import pytest
import torch
from conftest import CONFIGS, QUIET
from torchmetrics.functional import mean_absolute_error

from toyloops import LinearDataModule, Regressor, make_linear, split_indices
from toyloops.engine.loop_cli import run


def test_linear_data_is_seeded_and_least_squares_finds_its_line():
    x, y = make_linear(20_000, weights=(2.0, -3.0), bias=0.5, noise=0.1, seed=1)
    x2, y2 = make_linear(20_000, weights=(2.0, -3.0), bias=0.5, noise=0.1, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, make_linear(20_000, seed=2)[0])
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0]
    assert torch.allclose(solution, torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64), atol=0.005)
    residual = y - (x @ torch.tensor([2.0, -3.0]) + 0.5)
    assert residual.std().item() == pytest.approx(0.1, abs=0.002)


def test_the_data_module_keeps_inputs_raw_and_knows_its_baselines():
    dm = LinearDataModule(n_samples=1000, noise=0.1)
    x_train, y_train = dm.splits["train"]
    assert dm.num_features == 2 and not hasattr(dm, "num_classes")
    x_all, _ = make_linear(1000, seed=0)
    assert torch.equal(x_train, x_all[split_indices(1000, 0.2, 0.2, seed=0)[0]])  # unscaled: w, b stay comparable
    y_val = dm.splits["val"][1]
    assert dm.baselines == {"mean_mse": pytest.approx((y_val - y_train.mean()).pow(2).mean().item()),
                            "bayes_mse": pytest.approx(0.01)}


def test_a_regression_run_reports_mae_and_its_learned_line_against_the_true_one(in_tmp, capsys):
    result = run(["fit", "--config", str(CONFIGS / "linear_regression.yaml"), "--trainer.max_epochs=3", *QUIET])
    model = Regressor.load_from_checkpoint(result["last_checkpoint"]).eval()
    x, y = LinearDataModule().splits["val"]
    with torch.no_grad():
        predictions = model(x)
    assert result["val/mae"] == pytest.approx(mean_absolute_error(predictions, y).item(), abs=1e-6)
    assert result["val/loss"] == pytest.approx(torch.nn.functional.mse_loss(predictions, y).item(), rel=1e-5)
    line = re.search(r"learned w \[(\S+), (\S+)\] b (\S+) \| true w \[2\.0000, -3\.0000\] b 0\.5000",
                     capsys.readouterr().out)
    w1, w2, b = (float(v) for v in line.groups())
    assert (w1, w2, b) == (pytest.approx(2.0, abs=0.05), pytest.approx(-3.0, abs=0.05), pytest.approx(0.5, abs=0.05))
    assert (w1, w2, b) == pytest.approx([*model.net.linear.weight[0].tolist(), model.net.linear.bias.item()], abs=1e-4)
