"""``Classifier``: the LightningModule that wraps any net from :mod:`toyloops.models`.

Read it side by side with :mod:`toyloops.loop`, which does the same steps by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn
from torchmetrics import MeanMetric

from toyloops.checkpoints import load_checkpoint
from toyloops.config import OptimizerCallable, SchedulerCallable, default_optimizer
from toyloops.models import classification_loss, make_accuracy, predicted_class, probabilities


class Classifier(L.LightningModule):
    """Trains any classifier net: loss, accuracy per stage, optimizer and scheduler from config."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 2,
        optimizer: OptimizerCallable = default_optimizer,
        scheduler: SchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        """Args:
        net: maps a batch of inputs to logits, (B,) for 2 classes or (B, C).
        num_classes: linked from the data module.
        optimizer / scheduler: callables from the config (``class_path`` + ``init_args``).
        scheduler_interval: step the scheduler after every ``epoch`` or every optimizer ``step``.
        """
        super().__init__()
        # Through the CLI the hparams are the config (class_path + init_args of the net), so a
        # checkpoint rebuilds its own net; elsewhere the net is a live module and stays out.
        self.save_hyperparameters(ignore=None if _given_hyperparameters.get() else ["net"])
        self.net, self.num_classes = net, num_classes
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        # One metric object per stage; loss means weighted by batch size, as the hand loop does.
        self.train_acc, self.val_acc, self.test_acc = (make_accuracy(num_classes) for _ in range(3))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._train_outputs: list[tuple[Tensor, Tensor]] = []

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Classifier:
        """Lightning's loader, read as data only (``weights_only=True``).

        A missing, truncated or hostile file raises :class:`toyloops.errors.ConfigError` naming it.
        """
        if isinstance(checkpoint_path, (str, Path)):
            load_checkpoint(checkpoint_path)  # fails in one clear line, before Lightning's traceback
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        loss = classification_loss(logits, y)
        # Stash predictions; torchmetrics counts them once at epoch end (an update a step costs
        # ~100 us, as much as a whole logistic-regression step).
        self._train_outputs.append((predicted_class(logits.detach()), y))
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps the logger writes
            self.log("train/loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_outputs:
            preds, targets = (torch.cat(t) for t in zip(*self._train_outputs, strict=True))
            self._train_outputs.clear()
            self.train_acc.update(preds, targets)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        logits = self.net(x)
        accuracy, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        accuracy.update(predicted_class(logits), y)
        mean_loss.update(classification_loss(logits, y), len(y))

    def _log_eval_epoch(self, stage: str) -> None:
        # Logged once per epoch, not per batch: each self.log of a metric object costs ~1 ms.
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return probabilities(self.net(batch[0]))

    def configure_optimizers(self):  # noqa: ANN201 - Lightning accepts several shapes
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
