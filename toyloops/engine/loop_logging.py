"""How a LightningModule's ``self.log`` and ``self.trainer`` reach :class:`~toyloops.engine.loop.HandTrainer`:
:class:`TrainerView` is the Fabric its public ``fabric`` property takes (``docs/decisions.md``), then the logger
connector (:func:`log_metrics`, :func:`log_learning_rate`). Fabric drops ``on_step`` / ``on_epoch``, so a value
follows Lightning's default for its hook: as it is, or in an evaluation step averaged over samples at epoch end.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor


def forward(name: str) -> property:
    return property(lambda view: getattr(view.hand_trainer, name))


class TrainerView(Fabric):
    """What a driven module's ``self.trainer`` and ``self.log`` reach."""

    def __init__(self, trainer: Any) -> None:
        super().__init__(accelerator="cpu", devices=1)
        self.hand_trainer = trainer

    def log_dict(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.hand_trainer.logged.collect(metrics, self.hand_trainer.progress.callback_metrics)

    (global_step, current_epoch, datamodule, precision, gradient_clip_val, gradient_clip_algorithm, log_every_n_steps,
     max_epochs, should_stop, callback_metrics, logger, loggers, sanity_checking, state, callbacks) = map(forward, (
        "global_step", "current_epoch", "datamodule", "precision", "gradient_clip_val", "gradient_clip_algorithm",
        "log_every_n_steps", "max_epochs", "should_stop", "callback_metrics", "logger", "loggers", "sanity_checking",
        "state", "callbacks"))


class LoggedValues:
    """The values a module logged since the trainer last read them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sums: dict[str, tuple[Tensor, int]] | None = None  # during an evaluation's steps: for the means
        self.batch_size = 1

    def collect(self, metrics: dict[str, Any], latest: dict[str, float]) -> None:
        """A value as it is (also into ``latest``, the trainer's callback metrics), or in an
        evaluation's steps into the sums for its mean."""
        for key, value in metrics.items():
            if self.sums is None:
                self.values[key] = latest[key] = torch.as_tensor(value).item()
                continue
            total, count = self.sums.get(key, (torch.tensor(0.0), 0))
            self.sums[key] = (total + torch.as_tensor(value).float().cpu() * self.batch_size, count + self.batch_size)

    def start_means(self) -> None:
        self.sums, self.values = {}, {}

    def means(self) -> dict[str, float]:
        sums, self.sums = self.sums or {}, None
        return {key: (total / count).item() for key, (total, count) in sums.items()}

    def read(self) -> dict[str, float]:
        values, self.values = self.values, {}
        return values


def batch_size(batch: Any) -> int:
    """Lightning's ``extract_batch_size``: the length of the batch's first tensor."""
    while not isinstance(batch, Tensor):
        batch = next(iter(batch.values() if isinstance(batch, dict) else batch))
    return len(batch)


def log_metrics(self: Any, metrics: dict[str, float], step: int | None = None, write: bool = True) -> None:
    """The logger connector: ``callback_metrics`` keeps each value; the loggers get them with
    ``epoch`` at the latest optimizer step (an evaluation outside fit: at the global step)."""
    self.progress.callback_metrics.update(metrics)
    if write and metrics:
        if step is None:
            step = self.global_step - 1 if self.state.fn == TrainerFn.FITTING else self.global_step
        for logger in self.loggers:
            logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=step)
            logger.save()


def log_learning_rate(self: Any) -> None:
    """LearningRateMonitor: ``lr-<Optimizer>`` (``/pg1``, ``/pg2`` ... with several groups) at this step."""
    if any(isinstance(c, LearningRateMonitor) for c in self.callbacks):
        groups, name = self.optimizer.param_groups, f"lr-{type(self.optimizer).__name__}"
        rates = {f"{name}/pg{i + 1}" if len(groups) > 1 else name: g["lr"] for i, g in enumerate(groups)}
        for logger in self.loggers:
            logger.log_metrics(rates, step=self.global_step)
            logger.save()


def log_hyperparams(self: Any) -> None:
    """Lightning's ``_log_hyperparams`` at the start of a run: the module's and the data module's initial
    hyperparameters, merged (``hparams_initial``: public, unlike their ``save_hyperparameters(logger=...)``
    choice, which this therefore does not read), the graph, ``save``."""
    if not self.loggers or not self.enable_autolog_hparams:
        return
    model, data = self.lightning_module, self.datamodule
    hparams = {**model.hparams_initial, **(data.hparams_initial if data is not None else {})}
    hparams = {key: value for key, value in hparams.items() if key != "_class_path"}  # LightningCLI's own
    for logger in self.loggers:
        if hparams:
            logger.log_hyperparams(hparams)
        logger.log_graph(model)
        logger.save()
