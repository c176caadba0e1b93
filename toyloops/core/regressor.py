"""``Regressor``: the LightningModule that trains a net with one output per sample on the mean
squared error (``loss``), and reports the mean absolute error (``mae``) per stage."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric

from toyloops.core.module import ToyModule
from toyloops.rules.specs import OptimizerCallable, SchedulerCallable

__all__ = ["Regressor"]


class Regressor(ToyModule):
    """Trains any regression net ((B, F) -> (B,)): MSE loss, MAE per stage, optimizer and scheduler from config."""

    def __init__(self, net: nn.Module | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: SchedulerCallable | None = None, scheduler_interval: Literal["epoch", "step"] = "epoch",
                 decay_biases: bool = True) -> None:
        """Args: as :class:`~toyloops.core.classifier.Classifier`'s of the same names."""
        super().__init__(net, optimizer, scheduler, scheduler_interval, decay_biases)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_mae", MeanAbsoluteError())
            setattr(self, f"{stage}_loss", MeanMetric())

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """The mean squared error of one batch, counted into the stage's metrics."""
        x, y = batch
        prediction = self.net(x)
        loss = F.mse_loss(prediction, y.to(prediction.dtype))
        getattr(self, f"{stage}_mae").update(prediction.detach().float(), y)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(y))
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, MeanMetric]:
        loss_tag = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        return {loss_tag: getattr(self, f"{stage}_loss"), f"{stage}/mae": getattr(self, f"{stage}_mae")}

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.net(batch[0])
