"""model.metrics, the epoch-mean train/loss and train metrics in eval mode mean what they say."""


import pytest
import torch
from conftest import CONFIGS, QUIET
from torchmetrics.functional.classification import binary_auroc, binary_f1_score, binary_precision, binary_recall

from toyloops import Classifier, PointsDataModule, probabilities
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError
from toyloops.tools.compare import scalars

ARGS = ["--config", str(CONFIGS / "circles_mlp.yaml"), "--data.n_samples=600", "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=1", "--model.metrics=[precision, recall, f1, auroc]", *QUIET]


def final_model_and_data(result):
    model = Classifier.load_from_checkpoint(result["last_checkpoint"]).eval()
    return model, PointsDataModule(dataset="circles", n_samples=600)


@pytest.fixture
def steps_run(trained):
    """The session's short hand-loop run with the extra metrics, shared by the tests that read it."""
    run = trained("loop", "circles_mlp", *ARGS[2:])
    return {**run.metrics, "last_checkpoint": run.last}


def test_val_metrics_are_torchmetrics_on_the_final_weights(steps_run):
    result = steps_run
    model, data = final_model_and_data(result)
    x, y = data.splits["val"]
    with torch.no_grad():
        p = probabilities(model(x))[:, 1]
    expected = {"val/precision": binary_precision(p, y), "val/recall": binary_recall(p, y),
                "val/f1": binary_f1_score(p, y), "val/auroc": binary_auroc(p, y)}
    for tag, value in expected.items():
        assert result[tag] == pytest.approx(value.item(), abs=1e-6), tag
    assert 0.5 < result["val/auroc"] <= 1.0


def test_train_loss_epoch_is_the_sample_weighted_mean_of_the_steps_losses(steps_run):
    result = steps_run
    logged = scalars(result["last_checkpoint"].parent.parent)
    sizes = [64] * 5 + [40]  # 360 train samples in batches of 64
    first_epoch = [value for _, value in logged["train/loss"][:6]]
    mean = sum(s * v for s, v in zip(sizes, first_epoch, strict=True)) / sum(sizes)
    assert logged["train/loss_epoch"][0] == (5, pytest.approx(mean, rel=1e-5))


def test_train_metrics_in_eval_mode_score_the_whole_train_split_with_the_final_weights(in_tmp):
    result = run(["fit", *ARGS, "--model.train_metrics=eval", "--model.net.dropout=0.5"])
    model, data = final_model_and_data(result)
    x, y = data.splits["train"]
    with torch.no_grad():
        logits = model(x)
    assert result["train/acc"] == pytest.approx(((logits > 0).long() == y).float().mean().item(), abs=1e-6)
    assert result["train/loss_epoch"] == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float()).item(), rel=1e-5)


def test_an_unknown_metric_is_one_line():
    from toyloops import MLP

    with pytest.raises(ConfigError, match=r"model.metrics=\['mcc'\]: expected some of precision, recall, f1, auroc"):
        Classifier(MLP(), metrics=["mcc"])


def test_the_hand_loop_keeps_the_best_checkpoint_by_any_logged_metric(in_tmp, capsys):
    result = run(["fit", *ARGS, "--trainer.max_epochs=4", "--checkpoint.monitor=val/loss", "--checkpoint.mode=min"])
    val_loss = [value for _, value in scalars(result["last_checkpoint"].parent.parent)["val/loss"]]
    best = torch.load(result["best_checkpoint"], weights_only=True)
    assert best["epoch"] == val_loss.index(min(val_loss)) and result["best"] == min(val_loss)
    out = capsys.readouterr().out
    assert f"best val/loss: {min(val_loss):.4f}\nbaselines: chance 0.5000" in out
