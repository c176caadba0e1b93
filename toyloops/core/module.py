"""``ToyModule``: what every toyloops LightningModule shares — a net given to it, an optimizer and a
scheduler from the config, and hyperparameters stored as plain data so a checkpoint rebuilds it.
:class:`~toyloops.core.classifier.Classifier` and :class:`~toyloops.core.regressor.Regressor` add
their loss and metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from toyloops.rules.errors import ConfigError, checked
from toyloops.rules.specs import (
    NOT_STORED,
    OptimizerCallable,
    SchedulerCallable,
    build,
    build_optimizer,
    checked_for_loading,
    describe,
    fusing_allowed,
)


class ToyModule(L.LightningModule):
    """A net plus its optimizer and scheduler, and the hooks every subclass shares; a subclass defines
    ``model_step(batch, stage)`` (the loss, with the stage's metric updates) and ``epoch_metrics``."""

    def __init__(self, net: nn.Module | dict | None, optimizer: OptimizerCallable | dict | None,
                 scheduler: SchedulerCallable | dict | None, scheduler_interval: Literal["epoch", "step"],
                 decay_biases: bool, **settings: Any) -> None:
        """Args as the subclasses document them; ``settings`` are their own plain hyperparameters."""
        super().__init__()
        checked(type(self), scheduler_interval=scheduler_interval, decay_biases=decay_biases, **settings)
        self.net = build(net, "net", "model.net") if isinstance(net, dict) else net
        if not isinstance(self.net, nn.Module):
            raise ConfigError("model.net is missing: give the net (a checkpoint of a net built live does not "
                              "store it; pass net= to load_from_checkpoint)")
        optimizer = optimizer or {"class_path": "torch.optim.AdamW", "init_args": {}}  # PyTorch's AdamW defaults
        self.optimizer_factory, self.scheduler_factory = (
            build(factory, kind, f"model.{kind}") if isinstance(factory, dict) else factory
            for factory, kind in ((optimizer, "optimizer"), (scheduler, "scheduler")))
        self.scheduler_interval, self.decay_biases = scheduler_interval, decay_biases
        # Plain data only, so a checkpoint loads with weights_only=True and rebuilds this model: a net
        # without a spec (one of the user's own) is left out, a factory that is a function is a note.
        net_spec = describe(self.net)
        specs = {kind: describe(factory) or (NOT_STORED if factory is not None else None)
                 for kind, factory in (("optimizer", optimizer), ("scheduler", scheduler))}
        self.save_hyperparameters({"_class_path": f"{type(self).__module__}.{type(self).__qualname__}",  # for the CLI
                                   **({"net": net_spec} if net_spec else {}), **specs,
                                   "scheduler_interval": scheduler_interval, "decay_biases": decay_biases,
                                   **settings})
        self.fused_optimizer = True  # decided in setup, once the precision and clipping are known

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> ToyModule:
        """Lightning's loader, reading the file as data only and refusing hyperparameters that name
        code other than allowed nets and torch's optimizers and schedulers (a ConfigError naming the
        file; :func:`~toyloops.rules.specs.checked_for_loading`)."""
        return super().load_from_checkpoint(checked_for_loading(checkpoint_path, kwargs), *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        self.fused_optimizer = fusing_allowed(getattr(trainer, "precision", None),
                                              getattr(trainer, "gradient_clip_val", None))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """The optimizer, and the scheduler with when to step it."""
        if NOT_STORED in (self.optimizer_factory, self.scheduler_factory):
            raise ConfigError("this model's optimizer or scheduler was a function a checkpoint cannot store: "
                              "pass optimizer= and scheduler= to load_from_checkpoint to train it further")
        params = self.parameters() if self.decay_biases else [  # weight decay on weight matrices only
            {"params": [p for p in self.parameters() if p.ndim >= 2]},
            {"params": [p for p in self.parameters() if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = build_optimizer(self.optimizer_factory, params, fused=self.fused_optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config.update(monitor="val/loss", strict=False)  # skipped, not an error, before the first validation
        return {"optimizer": optimizer, "lr_scheduler": config}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.model_step(batch, "train")
        if is_log_step(self.trainer.global_step, self.trainer.log_every_n_steps):  # no self.log cost otherwise
            self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self.log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics("test")

    def log_epoch_metrics(self, stage: str) -> None:
        """Each of the stage's metrics, logged once per epoch, computed and reset here: a module driven
        through Fabric (the hand trainer) may log numbers and tensors only."""
        for tag, metric in self.epoch_metrics(stage).items():
            self.log(tag, metric.compute(), on_step=False, on_epoch=True)
            metric.reset()


def is_log_step(global_step: int, log_every_n_steps: int) -> bool:
    """The steps whose training loss Lightning's logger connector writes (both engines log on these)."""
    return (global_step + 1) % log_every_n_steps == 0
