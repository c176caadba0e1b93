"""``Classifier``: the LightningModule that wraps any net from :mod:`toyloops.core.nets`.

:meth:`Classifier.model_step` is the one definition of what a batch computes; Lightning's hooks
below call it, and so does the hand-written trainer in :mod:`toyloops.engine.loop`, which drives this
same object as a plain ``nn.Module``. Read the two side by side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, Metric

from toyloops.core.errors import ConfigError
from toyloops.core.nets import (
    classification_loss,
    make_accuracy,
    make_metrics,
    metric_scores,
    predicted_class,
    probabilities,
)
from toyloops.engine.checkpoints import read_checkpoint
from toyloops.engine.config import (
    NOT_STORED,
    OptimizerCallable,
    SchedulerCallable,
    build,
    build_optimizer,
    check_net_fits_data,
    describe,
    fusing_allowed,
    is_log_step,
)

DEFAULT_OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {}}  # PyTorch's AdamW defaults


class Classifier(L.LightningModule):
    """Trains any classifier net: loss, accuracy per stage, optimizer and scheduler from config."""

    def __init__(
        self,
        net: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: SchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        decay_biases: bool = True,
        metrics: list[str] | None = None,
        train_metrics: Literal["steps", "eval"] = "steps",
        objective: Literal["classification", "regression"] = "classification",
    ) -> None:
        """Args:
        net: maps a batch of inputs to logits, (B,) for 2 classes or (B, C); or its spec
            (``class_path`` + ``init_args``, as a checkpoint stores it).
        optimizer / scheduler: a class, ``functools.partial(cls, **kwargs)`` or spec; from a config,
            ``class_path`` + ``init_args``. None: AdamW with PyTorch's defaults / no scheduler.
        scheduler_interval: step the scheduler after every ``epoch`` or every optimizer ``step``.
        num_classes: read from ``net.num_classes``; give it only for a net without that attribute.
        label_smoothing: in [0, 1): mix each target with the uniform distribution (both heads).
        class_weights: one weight > 0 per class; the loss is then the weighted mean over samples.
        decay_biases: False gives the optimizer's ``weight_decay`` to weight matrices and embeddings
            only (parameters of 2+ dims): biases and norm scales get none (seed 001's L2).
        metrics: more per-stage metrics than accuracy: any of precision, recall, f1, auroc.
        train_metrics: ``steps`` measures train accuracy (and the rest) on the training steps' own
            outputs; ``eval`` on one pass over the whole train split in eval mode after each epoch
            (seed 001), at the cost of that pass.
        objective: ``regression`` trains a net with one output per sample (``toyloops.LinearRegression``)
            with the mean squared error as loss, and reports the mean absolute error (``*/mae``)
            in place of accuracy; it has no classes, class options or extra metrics.
        """
        super().__init__()
        self.net = build(net, "net", "model.net") if isinstance(net, dict) else net
        if not isinstance(self.net, nn.Module):
            raise ConfigError("model.net is missing: give the net (a checkpoint of a net built live does not "
                              "store it; pass net= to load_from_checkpoint)")
        if objective not in ("classification", "regression"):
            raise ConfigError(f"model.objective={objective!r}: expected classification or regression")
        self.objective = objective
        net_classes = getattr(self.net, "num_classes", None)
        if net_classes is not None and num_classes not in (None, net_classes):
            raise ConfigError(f"num_classes={num_classes} but net {type(self.net).__name__} predicts {net_classes}")
        self.num_classes = num_classes or net_classes
        if objective == "regression" and (self.num_classes is not None or label_smoothing or class_weights or metrics):
            raise ConfigError("model.objective=regression takes a net without classes (toyloops.LinearRegression) and "
                              "no label_smoothing, class_weights or metrics")
        if self.num_classes is None and objective == "classification":
            raise ConfigError(f"model.net={type(self.net).__name__} has no num_classes attribute: give "
                              "model.num_classes")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing={label_smoothing}: expected a number in [0, 1)")
        if class_weights is not None and (len(class_weights) != self.num_classes
                                          or not all(0 < w < math.inf for w in class_weights)):
            raise ConfigError(f"model.class_weights={list(class_weights)}: expected {self.num_classes} finite "
                              "numbers > 0, one per class")
        self.label_smoothing, self.class_weights, self.decay_biases = label_smoothing, class_weights, decay_biases
        optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
        self.optimizer_factory, self.scheduler_factory = (
            build(factory, kind, f"model.{kind}") if isinstance(factory, dict) else factory
            for factory, kind in ((optimizer, "optimizer"), (scheduler, "scheduler")))
        self.scheduler_interval = scheduler_interval
        # Plain data only, so every checkpoint loads with weights_only=True and rebuilds this model
        # (a net or factory that cannot be described is stored as None: pass it when loading).
        net_spec = describe(self.net)  # a net of the user's own is stored by reference only: no "net" key
        # A factory that is not a class or partial of one (a lambda) is stored as a note, and a model
        # rebuilt from it refuses to train until it is given one (it still predicts).
        specs = {kind: describe(factory) or (NOT_STORED if factory is not None else None)
                 for kind, factory in (("optimizer", optimizer), ("scheduler", scheduler))}
        self.save_hyperparameters({**({"net": net_spec} if net_spec else {}), **specs,
                                   "scheduler_interval": scheduler_interval, "num_classes": self.num_classes,
                                   "label_smoothing": label_smoothing, "class_weights": class_weights,
                                   "decay_biases": decay_biases, "metrics": metrics, "train_metrics": train_metrics,
                                   "objective": objective})
        # One metric object per stage; loss means weighted by batch size. The score is accuracy, or
        # the mean absolute error of a regression.
        self.score = "acc" if objective == "classification" else "mae"
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_{self.score}",
                    make_accuracy(self.num_classes) if objective == "classification" else MeanAbsoluteError())
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_metrics, self.val_metrics, self.test_metrics = (
            nn.ModuleDict(make_metrics(self.num_classes or 2, metrics or [])) for _ in range(3))
        if train_metrics not in ("steps", "eval"):
            raise ConfigError(f"model.train_metrics={train_metrics!r}: expected steps or eval")
        self.train_metrics_from = train_metrics
        self._train_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.fused_optimizer = True  # set by the engine before configure_optimizers (config.fusing_allowed)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Classifier:
        """Lightning's loader, for checkpoints of ``train.py``, the hand loop or a plain ``Trainer``.

        Read as data only (``weights_only=True``) unless the caller passes ``weights_only=False``;
        a missing, truncated or hostile file, or hyperparameters naming code outside toyloops'
        nets and torch's optimizers and schedulers, raise :class:`ConfigError` naming the file.
        """
        if kwargs.get("weights_only") is not False:
            if kwargs.get("hparams_file"):
                raise ConfigError("hparams_file is not supported: a checkpoint carries its own hyperparameters")
            if not isinstance(checkpoint_path, (str, Path)):  # a file object: check the same bytes
                checkpoint_path = io.BytesIO(checkpoint_path.read())
            read_checkpoint(checkpoint_path, given=tuple(kwargs))
            if isinstance(checkpoint_path, io.BytesIO):
                checkpoint_path.seek(0)
            kwargs["weights_only"] = True
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """What one batch computes, in every stage and both engines: the loss, and the metric updates."""
        x, y = batch
        logits = self.net(x)
        loss = self.loss(logits, y)
        if stage == "train":  # stashed: torchmetrics counts them once at epoch end (an update costs ~100 us)
            if self.train_metrics_from == "steps":  # 'eval' scores the train split afresh instead
                self._train_outputs.append((logits.detach(), y, loss.detach()))
        else:
            self.update_metrics(stage, logits, y, loss)
        return loss

    def loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        """The task's loss: classification's, with its options, or the mean squared error."""
        if self.objective == "regression":
            return F.mse_loss(outputs, y.to(outputs.dtype))
        return classification_loss(outputs, y, self.label_smoothing, self.class_weights)

    def update_metrics(self, stage: str, logits: Tensor, y: Tensor, loss: Tensor,
                       batch_sizes: Tensor | None = None) -> None:
        """Count a batch into the stage's metrics (or several: their losses stacked, with ``batch_sizes``)."""
        score = getattr(self, f"{stage}_{self.score}")
        score.update(predicted_class(logits) if self.objective == "classification" else logits.float(), y)
        getattr(self, f"{stage}_loss").update(loss, len(y) if batch_sizes is None else batch_sizes)
        for metric in getattr(self, f"{stage}_metrics").values():
            metric.update(metric_scores(logits), y)

    def measure_train_split(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """``train_metrics='eval'``: score the whole train split in eval mode, as seed 001 does, in
        place of the training steps' outputs (each engine calls this before computing train metrics)."""
        self.eval()
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(self.device), y.to(self.device)
                logits = self.net(x)
                self.update_metrics("train", logits, y, self.loss(logits, y))
        self.train()

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        """The stage's metric objects by TensorBoard tag, ready to compute at the end of an epoch
        (train's loss is ``train/loss_epoch``, the sample-weighted mean; ``train/loss`` is per step)."""
        if stage == "train" and self._train_outputs:
            logits, targets, losses = (torch.cat(t) if i < 2 else torch.stack(t)
                                       for i, t in enumerate(zip(*self._train_outputs, strict=True)))
            sizes = torch.tensor([len(y) for _, y, _ in self._train_outputs], device=losses.device)
            self._train_outputs.clear()
            self.update_metrics("train", logits, targets, losses, sizes)
        loss_tag = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        score = f"{stage}_{self.score}"
        return {loss_tag: getattr(self, f"{stage}_loss"), f"{stage}/{self.score}": getattr(self, score),
                **{f"{stage}/{name}": metric for name, metric in getattr(self, f"{stage}_metrics").items()}}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.model_step(batch, "train")
        if is_log_step(self.trainer.global_step, self.trainer.log_every_n_steps):  # no host sync otherwise
            self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        # Logged once per epoch, not per batch: each self.log of a metric object costs ~1 ms.
        for tag, metric in self.epoch_metrics(stage).items():
            self.log(tag, metric, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self.train_metrics_from == "eval":
            self.measure_train_split(self.trainer.datamodule.train_eval_dataloader())
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.objective == "regression":
            raise ConfigError("predict writes class probabilities; a regression has none: use test")
        return probabilities(self.net(batch[0]))

    def setup(self, stage: str) -> None:
        self.fused_optimizer = fusing_allowed(self.trainer.precision, self.trainer.gradient_clip_val)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "num_classes"):  # a plain Trainer, too
            check_net_fits_data(self, datamodule, linked=False)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """The optimizer, and the scheduler with when to step it (both engines read this)."""
        if NOT_STORED in (self.optimizer_factory, self.scheduler_factory):
            raise ConfigError("this model's optimizer or scheduler was a function a checkpoint cannot store: "
                              "pass optimizer= and scheduler= to load_from_checkpoint to train it further")
        params = self.parameters() if self.decay_biases else [
            {"params": [p for p in self.parameters() if p.ndim >= 2]},
            {"params": [p for p in self.parameters() if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = build_optimizer(self.optimizer_factory, params, fused=self.fused_optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # Steps on the latest val/loss; skipped (not an error) before the first validation.
            config.update(monitor="val/loss", strict=False)
        return {"optimizer": optimizer, "lr_scheduler": config}
