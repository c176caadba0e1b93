"""``Classifier``: the LightningModule that trains any classifier net from :mod:`toyloops.core.nets`.

One step function serves every stage (:meth:`Classifier.model_step`); Lightning's hooks call it,
and so does the hand trainer (:class:`toyloops.engine.loop.HandTrainer`), through the same hooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import Accuracy, MeanMetric, Metric
from torchmetrics import classification as tmc

from toyloops.core.module import ToyModule
from toyloops.core.nets import classification_loss, probabilities
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import OptimizerCallable, SchedulerCallable

__all__ = ["Classifier"]

METRICS = {"precision": (tmc.BinaryPrecision, tmc.MulticlassPrecision), "recall": (tmc.BinaryRecall,
           tmc.MulticlassRecall), "f1": (tmc.BinaryF1Score, tmc.MulticlassF1Score),
           "auroc": (tmc.BinaryAUROC, tmc.MulticlassAUROC)}  # beyond accuracy, chosen in the config


class Classifier(ToyModule):
    """Trains any classifier net: loss, accuracy per stage, optimizer and scheduler from config."""

    def __init__(self, net: nn.Module | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: SchedulerCallable | None = None, scheduler_interval: Literal["epoch", "step"] = "epoch",
                 num_classes: int | None = None, label_smoothing: float = 0.0, class_weights: list[float] | None = None,
                 decay_biases: bool = True, metrics: list[str] | None = None,
                 train_metrics: Literal["steps", "eval"] = "steps") -> None:
        """Args:
        net: maps a batch of inputs to logits (B, C), or (B,) for a one-logit binary net; or its spec
            (``class_path`` + ``init_args``, as a checkpoint stores it).
        optimizer / scheduler: a class, ``functools.partial(cls, **kwargs)`` or spec; from a config,
            ``class_path`` + ``init_args``. None: AdamW with PyTorch's defaults / no scheduler.
        scheduler_interval: step the scheduler after every ``epoch`` or every optimizer ``step``.
        num_classes: read from ``net.num_classes``; give it only for a net without that attribute.
        label_smoothing: in [0, 1): mix each target with the uniform distribution.
        class_weights: one weight > 0 per class; the loss is then the weighted mean over samples.
        decay_biases: False gives the optimizer's ``weight_decay`` to parameters of 2+ dims only.
        metrics: more per-stage metrics than accuracy: any of precision, recall, f1, auroc.
        train_metrics: ``steps`` scores train accuracy on the training steps' own outputs; ``eval``
            on one pass over the whole train split in eval mode after each epoch (costs that pass).
        """
        super().__init__(net, optimizer, scheduler, scheduler_interval, decay_biases, num_classes=num_classes,
                         label_smoothing=label_smoothing, class_weights=class_weights, metrics=metrics,
                         train_metrics=train_metrics)
        net_classes = getattr(self.net, "num_classes", None)
        if net_classes is not None and num_classes not in (None, net_classes):
            raise ConfigError(f"model.num_classes={num_classes} but net {type(self.net).__name__} predicts "
                              f"{net_classes}")
        self.num_classes = self.hparams["num_classes"] = num_classes or net_classes
        if self.num_classes is None:
            raise ConfigError(f"model.net={type(self.net).__name__} has no num_classes attribute: "
                              "give model.num_classes")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing={label_smoothing}: expected a number in [0, 1)")
        if class_weights is not None and (len(class_weights) != self.num_classes
                                          or not all(0 < w < math.inf for w in class_weights)):
            raise ConfigError(f"model.class_weights={list(class_weights)}: expected {self.num_classes} finite "
                              "numbers > 0, one per class")
        if any(name not in METRICS for name in metrics or []):
            raise ConfigError(f"model.metrics={list(metrics)}: expected some of {', '.join(METRICS)} "
                              "(accuracy is always on)")
        self.label_smoothing, self.class_weights = label_smoothing, class_weights
        self.train_metrics_from = train_metrics
        binary = self.num_classes == 2  # one metric object per stage; losses are means weighted by batch size
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", Accuracy(task="binary", validate_args=False) if binary else
                    Accuracy(task="multiclass", num_classes=self.num_classes, validate_args=False))
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_metrics", nn.ModuleDict({
                name: METRICS[name][0](validate_args=False) if binary else
                METRICS[name][1](self.num_classes, average="macro", validate_args=False) for name in metrics or []}))
        self._train_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """What one batch computes in every stage: the loss, and the metric updates."""
        x, y = batch
        logits = self.net(x)
        loss = classification_loss(logits, y, self.label_smoothing, self.class_weights)
        if stage != "train":
            self.update_metrics(stage, logits, y, loss)
        elif self.train_metrics_from == "steps":  # counted once at epoch end: an update costs ~100 us
            self._train_outputs.append((logits.detach(), y, loss.detach()))
        return loss

    def update_metrics(self, stage: str, logits: Tensor, y: Tensor, loss: Tensor,
                       batch_sizes: Tensor | None = None) -> None:
        """Count a batch into the stage's metrics (or several: their losses stacked, with ``batch_sizes``)."""
        getattr(self, f"{stage}_acc").update(logits.argmax(-1) if logits.ndim > 1 else (logits > 0).long(), y)
        getattr(self, f"{stage}_loss").update(loss, len(y) if batch_sizes is None else batch_sizes)
        probs = probabilities(logits)
        for metric in getattr(self, f"{stage}_metrics").values():
            metric.update(probs[:, 1] if probs.shape[1] == 2 else probs, y)

    def measure_train_split(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """``train_metrics='eval'``: score the whole train split in eval mode."""
        self.eval()
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(self.device), y.to(self.device)
                logits = self.net(x)
                self.update_metrics("train", logits, y, classification_loss(logits, y, self.label_smoothing,
                                                                            self.class_weights))
        self.train()

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        """The stage's metric objects by tag (train's loss is ``train/loss_epoch``, the sample-weighted mean)."""
        if stage == "train" and self._train_outputs:
            logits, targets = (torch.cat(t) for t in list(zip(*self._train_outputs, strict=True))[:2])
            losses = torch.stack([loss for _, _, loss in self._train_outputs])
            sizes = torch.tensor([len(y) for _, y, _ in self._train_outputs], device=losses.device)
            self._train_outputs.clear()
            self.update_metrics("train", logits, targets, losses, sizes)
        return {"train/loss_epoch" if stage == "train" else f"{stage}/loss": getattr(self, f"{stage}_loss"),
                f"{stage}/acc": getattr(self, f"{stage}_acc"),
                **{f"{stage}/{name}": metric for name, metric in getattr(self, f"{stage}_metrics").items()}}

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return probabilities(self.net(batch[0]))

    def on_train_epoch_end(self) -> None:
        if self.train_metrics_from == "eval":
            self.measure_train_split(self.trainer.datamodule.train_eval_dataloader())
        super().on_train_epoch_end()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data_classes = getattr(getattr(self.trainer, "datamodule", None), "num_classes", self.num_classes)
        if data_classes != self.num_classes:
            raise ConfigError(f"model.num_classes={self.num_classes} but the data has {data_classes} classes")
