"""HandTrainer as a drop-in for L.Trainer: a user's script swaps one line and gets the same weights."""

from __future__ import annotations

import csv
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from toyloops import MLP, Classifier, HandTrainer, PointsDataModule
from toyloops.rules.errors import ConfigError

warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _user_script(trainer_class: type, tmp_path, callbacks: bool) -> tuple[Classifier, object]:
    """A plain user script: seed, data, model, trainer, fit."""
    L.seed_everything(7, verbose=False)
    dm = PointsDataModule("moons", n_samples=400, batch_size=32, seed=7)
    model = Classifier(MLP(2, 2, hidden_sizes=[16]), optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    extra = [EarlyStopping(monitor="val/loss", patience=1, min_delta=0.05),
             ModelCheckpoint(monitor="val/acc", mode="max")] if callbacks else []
    trainer = trainer_class(max_epochs=6, default_root_dir=tmp_path, log_every_n_steps=5, callbacks=extra,
                            enable_progress_bar=False, enable_model_summary=False, logger=False)
    trainer.fit(model, datamodule=dm)
    return model, trainer


@pytest.mark.parametrize("callbacks", [False, True], ids=["plain", "early stopping + checkpoint"])
def test_swapping_l_trainer_for_hand_trainer_gives_the_same_weights(callbacks, tmp_path):
    lightning_model, lightning = _user_script(L.Trainer, tmp_path / "lightning", callbacks)
    hand_model, hand = _user_script(HandTrainer, tmp_path / "hand", callbacks)
    assert lightning.global_step == hand.global_step and lightning.current_epoch == hand.current_epoch
    if callbacks:
        assert lightning.should_stop and hand.should_stop  # early stopping ended both, at the same epoch
        assert lightning.early_stopping_callback.stopped_epoch == hand.early_stopping_callback.stopped_epoch
        theirs, ours = lightning.checkpoint_callback, hand.checkpoint_callback  # the best by val/acc, one file
        assert torch.equal(theirs.best_model_score, ours.best_model_score)
        assert Path(theirs.best_model_path).name == Path(ours.best_model_path).name
        assert [p.name for p in Path(ours.best_model_path).parent.iterdir()] == [Path(ours.best_model_path).name]
    expected, got = lightning_model.state_dict(), hand_model.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert set(lightning.callback_metrics) == set(hand.callback_metrics)
    assert all(torch.equal(lightning.callback_metrics[k].float(), hand.callback_metrics[k])
               for k in lightning.callback_metrics if k != "train/loss")


class ManualOptimization(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 2)


class TwoOptimizers(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's return forms
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


@pytest.mark.parametrize(("module", "feature"), [(ManualOptimization, "manual optimization"),
                                                 (TwoOptimizers, "several optimizers")])
def test_a_module_needing_what_the_hand_trainer_lacks_is_refused_in_one_line(module, feature, tmp_path):
    dm = PointsDataModule("moons", n_samples=100, batch_size=32, seed=0)
    with pytest.raises(ConfigError, match=feature) as error:
        HandTrainer(max_epochs=1, logger=False, default_root_dir=tmp_path, enable_progress_bar=False).fit(module(), dm)
    assert "\n" not in str(error.value)


def test_a_trainer_argument_it_does_not_implement_is_refused_by_name():
    with pytest.raises(ConfigError, match="accumulate_grad_batches") as error:
        HandTrainer(accumulate_grad_batches=2)
    assert "\n" not in str(error.value)


class UsersOwnModule(L.LightningModule):
    """Not Classifier: a user's minimal module, logging with self.log in its steps."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(2, 2, hidden_sizes=[8])

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201 - Lightning's hook
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)  # two classes, two logits: PyTorch's convention
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201 - Lightning's hook
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.2)


def _fit_own(trainer_class: type, tmp_path) -> tuple[L.LightningModule, object, list[dict[str, str]]]:
    L.seed_everything(3, verbose=False)
    model, dm = UsersOwnModule(), PointsDataModule("moons", n_samples=300, batch_size=30, seed=3)
    trainer = trainer_class(max_epochs=3, logger=CSVLogger(tmp_path), log_every_n_steps=4, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    with open(f"{trainer.logger.log_dir}/metrics.csv") as file:
        return model, trainer, list(csv.DictReader(file))


def test_a_users_own_module_logs_through_self_log_into_callback_metrics_and_a_csv_logger(tmp_path):
    hand_model, hand, hand_rows = _fit_own(HandTrainer, tmp_path / "hand")
    lightning_model, lightning, lightning_rows = _fit_own(L.Trainer, tmp_path / "lightning")
    assert "val/acc" in hand.callback_metrics and "train/loss" in hand.callback_metrics
    assert hand.callback_metrics["val/acc"] > 0.7  # from 0.5: trained with F.cross_entropy on MLP(2, 2)'s two logits
    assert hand_rows and any(row["val/acc"] for row in hand_rows)
    assert [(r["step"], r["epoch"], sorted(k for k, v in r.items() if v)) for r in hand_rows] == \
        [(r["step"], r["epoch"], sorted(k for k, v in r.items() if v)) for r in lightning_rows]  # same rows
    for ours, theirs in zip(hand_rows, lightning_rows, strict=True):
        assert all(float(ours[k]) == pytest.approx(float(theirs[k]), rel=1e-6) for k in ours if ours[k])
    assert all(torch.equal(a, b) for a, b in zip(hand_model.parameters(), lightning_model.parameters(), strict=True))
