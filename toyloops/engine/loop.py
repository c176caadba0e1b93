"""``HandTrainer``: what ``L.Trainer`` does, written out in plain PyTorch, with the Trainer's shape.

Swap ``L.Trainer(...)`` for ``HandTrainer(...)`` (same arguments): ``fit`` / ``validate`` / ``test`` /
``predict`` drive the LightningModule through the hooks Lightning calls, to bit-identical weights on
CPU. Methods carry the names of Lightning's hooks and steps; where Lightning's name differs:

    fit_loop.run                              fit_loop
    fit_loop.epoch_loop.run                   training_epoch_loop
    validate_loop.run / test_loop.run         evaluation_loop
    fit_loop.on_advance_end                   on_train_epoch_end
    ModelCheckpoint / LearningRateMonitor     model_checkpoint / log_learning_rate
    call._call_callback_hooks + module hook   call

``self.log`` and ``self.trainer`` reach the trainer through :mod:`~.loop_logging`; the command line: :mod:`~.loop_cli`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities import move_data_to_device
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn, TrainerState
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from toyloops.core.module import is_log_step
from toyloops.engine import checkpoints as ckpt
from toyloops.engine import loop_logging, runs
from toyloops.engine.callbacks import flush_loggers
from toyloops.engine.loop_logging import LoggedValues, TrainerView, batch_size
from toyloops.engine.seeding import set_rng_state
from toyloops.engine.validation import CONFIG_KEYS as CONFIG_KEYS  # what a config's trainer: may set (loop_cli's)
from toyloops.engine.validation import as_list, num_batches, optimizer_and_scheduler, trainer_arguments
from toyloops.rules.errors import ConfigError, check_finite

__all__ = ["HandTrainer"]

WRITTEN_OUT = (ModelCheckpoint, LearningRateMonitor)  # their rules are methods here, not their hooks


def profiled(method):  # noqa: ANN001, ANN201 - a decorator
    """The method runs inside ``trainer.profile("[HandTrainer].<its name>")``."""
    @functools.wraps(method)
    def step(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN001
        with self.profile(f"[HandTrainer].{method.__name__}"):
            return method(self, *args, **kwargs)
    return step


@dataclass
class LoopState:
    """The fit loop's progress (Lightning keeps it in ``trainer.fit_loop``)."""

    epoch: int = 0  # epochs completed: the next one to run
    global_step: int = 0  # optimizer steps taken
    callback_metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each logged tag


class HandTrainer:
    """``L.Trainer``'s arguments, methods and attributes over a loop written out by hand."""

    def __init__(self, **kwargs: Any) -> None:
        for name, value in trainer_arguments(kwargs).items():  # refuses what is not implemented here
            setattr(self, name, value)
        self.precision = str(self.precision)
        runs.check_precision(self.precision, self.accelerator)
        cuda = self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available())
        self.strategy = SingleDeviceStrategy(torch.device("cuda" if cuda else "cpu"))
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)
        # fp16 gradients can underflow: the loss is scaled up, the gradients unscaled before the step
        self.scaler = torch.amp.GradScaler(self.strategy.root_device.type, enabled=self.autocast_dtype == torch.float16)
        self.default_root_dir = str(self.default_root_dir or os.getcwd())
        self.callbacks = as_list(self.callbacks)
        logger = TensorBoardLogger(self.default_root_dir) if self.logger in (True, None) else self.logger
        self.loggers = [] if logger is False else as_list(logger)
        self.logger = self.loggers[0] if self.loggers else None
        self.state, self.progress, self.should_stop, self.sanity_checking = TrainerState(), LoopState(), False, False
        self.lightning_module = self.datamodule = self.optimizer = self.scheduler = None
        self.logged, self.stop = LoggedValues(), runs.StopRequest()
        self.view = TrainerView(self)  # held here: a module keeps a weak reference to its fabric

    global_step = property(lambda self: self.progress.global_step)
    current_epoch = property(lambda self: self.progress.epoch)
    global_rank, local_rank, world_size, is_global_zero = 0, 0, 1, True
    callback_metrics = property(lambda self: {k: torch.tensor(v) for k, v in self.progress.callback_metrics.items()})
    checkpoint_callbacks = property(lambda self: [c for c in self.callbacks if isinstance(c, ModelCheckpoint)])
    checkpoint_callback = property(lambda self: next(iter(self.checkpoint_callbacks), None))
    early_stopping_callback = property(lambda self: next((c for c in self.callbacks if isinstance(c, EarlyStopping)),
                                                         None))
    num_training_batches = property(lambda self: num_batches(len(self.train_batches), self.limit_train_batches))
    log_dir = property(lambda self: getattr(self.logger, "log_dir", None) or self.default_root_dir)
    train_dataloader = property(lambda self: getattr(self, "train_batches", None))  # what fit trains on

    def fit(self, model: L.LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: L.LightningDataModule | None = None, ckpt_path: str | Path | None = None) -> None:
        if isinstance(train_dataloaders, L.LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        with self.attached(model, datamodule, TrainerFn.FITTING, ckpt_path) as checkpoint:
            if self.enable_model_summary:
                print(f"{type(getattr(model, 'net', model)).__name__}: "
                      f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
            self.train_batches = train_dataloaders or datamodule.train_dataloader()
            own_val = datamodule is not None and is_overridden("val_dataloader", datamodule, L.LightningDataModule)
            self.val_batches = val_dataloaders or (datamodule.val_dataloader() if own_val else None)
            if not is_overridden("validation_step", model, L.LightningModule) or self.limit_val_batches == 0:
                self.val_batches = None  # as Lightning: no validation without batches, a validation_step or a limit
            self.configure_optimizers(model)
            if checkpoint is not None:
                self.restore(checkpoint)
            status, self.stop = "failed", runs.StopRequest()  # SIGTERM/SIGINT: a resume point, then Stopped
            try:
                with self.stop:
                    self.fit_loop(model)
                status = "success"
            finally:  # closed on failure too: no writer thread may write into a folder being removed
                for logger in self.loggers:
                    logger.finalize(status)

    @contextmanager
    def attached(self, model: L.LightningModule, datamodule: Any, fn: TrainerFn, ckpt_path: Any = None):  # noqa: ANN201
        """For one call, ``model``'s ``self.trainer`` and ``self.log`` reach this trainer; the set-up and tear-down
        hooks; ``ckpt_path`` checked and yielded (loaded here for an evaluation)."""
        if not model.automatic_optimization:
            raise ConfigError("manual optimization (automatic_optimization=False) is not implemented: use L.Trainer")
        resume = "loop" if fn == TrainerFn.FITTING else None
        checkpoint = ckpt.read_checked(ckpt_path, model, resume) if ckpt_path else None
        self.state, self.lightning_module, self.datamodule = TrainerState(fn=fn), model, datamodule
        self.hooked = [c for c in self.callbacks if not isinstance(c, (*WRITTEN_OUT, EarlyStopping))]
        model.fabric = self.view  # public: LightningModule.log and .trainer then go to the view
        if datamodule is not None:
            datamodule.trainer = self
            datamodule.prepare_data()
            datamodule.setup(fn.value)
        model.prepare_data()
        self.call("setup", fn.value)
        model.to(self.strategy.root_device)  # before the optimizer state exists, so it follows the weights
        if checkpoint is not None and fn != TrainerFn.FITTING:
            self.restore_model(checkpoint)
            if type(datamodule).__qualname__ in checkpoint:
                datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
        try:
            yield checkpoint
        finally:
            self.call("teardown", fn.value)
            model.fabric = None

    def call(self, hook: str, *args: Any) -> None:
        """A hook on the callbacks, the module, then EarlyStopping (after the module has logged its values)."""
        model = self.lightning_module
        for callback in self.hooked:
            getattr(callback, hook)(self, model, *args)
        getattr(model, hook)(*args)
        for callback in self.callbacks:
            if isinstance(callback, EarlyStopping):
                getattr(callback, hook)(self, model, *args)

    def configure_optimizers(self, model: L.LightningModule) -> None:
        """The module's ``configure_optimizers``: one optimizer, at most one scheduler (with Lightning's defaults)."""
        self.optimizer, self.scheduler = optimizer_and_scheduler(model.configure_optimizers())

    def fit_loop(self, model: L.LightningModule) -> None:
        """Epochs until ``max_epochs`` or a stop: train, validate, epoch end; the fit's hooks around them."""
        self.call("on_fit_start")
        loop_logging.log_hyperparams(self)
        if self.num_sanity_val_steps and self.val_batches is not None:
            self.sanity_checking = True  # a few validation batches first; their scores are dropped
            self.evaluation_loop(model, "validation", self.val_batches, self.num_sanity_val_steps)
            self.sanity_checking = False
        self.call("on_train_start")
        while self.progress.epoch < self.max_epochs and not self.should_stop:
            with self.profile("run_training_epoch"):
                self.training_epoch_loop(model)
            val_metrics = {}
            if (self.progress.epoch + 1) % self.check_val_every_n_epoch == 0 and self.val_batches is not None:
                val_metrics = self.evaluation_loop(model, "validation", self.val_batches, self.limit_val_batches)
            self.update_lr_schedulers("step", plateau=True)  # the last batch's, after its validation
            self.on_train_epoch_end(model, val_metrics)
            self.stop_if_signalled()  # the epoch's last checkpoint is the resume point
        self.call("on_train_end")
        self.call("on_fit_end")

    def training_epoch_loop(self, model: L.LightningModule) -> None:
        progress, scheduler, batches = self.progress, self.scheduler, self.train_batches
        model.train()
        self.call("on_train_epoch_start")
        if scheduler is None or scheduler["interval"] == "epoch":  # LearningRateMonitor, per epoch
            self.log_learning_rate()
        for sampler in (getattr(batches, "sampler", None), getattr(batches, "batch_sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):  # the order from seed + epoch, as Lightning sets it
                sampler.set_epoch(progress.epoch)
        n_batches = num_batches(len(batches), self.limit_train_batches)
        every_n = [c.every_n_train_steps for c in self.checkpoint_callbacks if getattr(c, "every_n_train_steps", 0)]
        served = iter(batches)
        for i in range(len(batches)):
            with self.profile("[_TrainingEpochLoop].train_dataloader_next"):
                batch = next(served, None)
            if batch is None:
                break
            with self.profile("run_training_batch"):
                batch_idx = getattr(batches, "batches_done", i + 1) - 1  # a resumed epoch continues its count
                log_now = is_log_step(progress.global_step, self.log_every_n_steps)
                if log_now and (scheduler is None or scheduler["interval"] == "step"):  # LearningRateMonitor
                    self.log_learning_rate()
                self.call("on_train_batch_start", batch, batch_idx)
                loss = self.training_step(model, self.batch_to_device(batch), batch_idx)
                self.optimizer_step(model)
                self.update_lr_schedulers("step")
                if batch_idx + 1 < n_batches:  # at the last batch, only after validation (in fit_loop)
                    self.update_lr_schedulers("step", plateau=True)  # per-step ReduceLROnPlateau, the latest value
                progress.global_step += 1
                self.call("on_train_batch_end", loss, batch, batch_idx)
                self.log_metrics(self.logged.read(), step=progress.global_step - 1, write=log_now)
            if batch_idx + 1 >= n_batches:  # limit_train_batches
                break
            if self.stop.signum or any(progress.global_step % n == 0 for n in every_n):
                self.model_checkpoint(None)  # a mid-epoch resume point
                self.stop_if_signalled()
        self.update_lr_schedulers("epoch")  # at the epoch's last batch, before validation, as Lightning does

    def profile(self, action: str):  # noqa: ANN201 - a context manager, Lightning's action names where they match
        return nullcontext() if self.profiler is None else self.profiler.profile(action)

    @profiled
    def batch_to_device(self, batch: Any) -> Any:
        return move_data_to_device(batch, self.strategy.root_device)

    def autocast(self):  # noqa: ANN201 - a context manager
        """The precision plugin's forward context: low-precision forward and loss, fp32 weights."""
        dtype, device = self.autocast_dtype, self.strategy.root_device
        return nullcontext() if dtype is None else torch.autocast(device.type, dtype)

    @profiled
    def training_step(self, model: L.LightningModule, batch: Any, batch_idx: int) -> Tensor:
        with self.autocast():
            output = model.training_step(batch, batch_idx)
        loss = output["loss"] if isinstance(output, dict) else output
        check_finite(loss, self.global_step, self.current_epoch)  # StopOnNonFiniteLoss: before the update
        self.optimizer.zero_grad(set_to_none=True)
        self.call("on_before_backward", loss)
        self.scaler.scale(loss).backward()
        self.call("on_after_backward")
        return loss.detach()

    @profiled
    def optimizer_step(self, model: L.LightningModule) -> None:
        self.call("on_before_optimizer_step", self.optimizer)
        if self.gradient_clip_val:
            self.scaler.unscale_(self.optimizer)  # clip in real units, not scaled ones
            clip = nn.utils.clip_grad_norm_ if self.gradient_clip_algorithm == "norm" else nn.utils.clip_grad_value_
            clip([p for group in self.optimizer.param_groups for p in group["params"]], self.gradient_clip_val)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()

    @profiled
    def update_lr_schedulers(self, interval: str, plateau: bool = False) -> None:
        """The scheduler, when its interval has come; ReduceLROnPlateau (``plateau``) only after validation, on
        its monitor's latest value (skipped before there is one, unless ``strict``)."""
        config, metrics = self.scheduler, self.progress.callback_metrics
        if config is None or config["interval"] != interval or plateau != isinstance(
                config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            return
        if not plateau:
            self.lightning_module.lr_scheduler_step(config["scheduler"], None)
        elif config["monitor"] in metrics:
            self.lightning_module.lr_scheduler_step(config["scheduler"], metrics[config["monitor"]])
        elif config["strict"]:
            raise ConfigError(f"ReduceLROnPlateau monitors {config['monitor']}, which this run does not log")

    def evaluation_loop(self, model: L.LightningModule, stage: str, batches: Any, limit: int | float) -> dict:
        model.eval()
        self.call(f"on_{stage}_epoch_start")
        self.logged.start_means()
        with torch.no_grad():
            for batch_idx, batch in enumerate(islice(batches, num_batches(len(batches), limit))):
                self.logged.batch_size = batch_size(batch)
                with self.autocast():
                    getattr(model, f"{stage}_step")(self.batch_to_device(batch), batch_idx)
        metrics = self.logged.means()
        self.call(f"on_{stage}_epoch_end")
        metrics.update(self.logged.read())
        if not self.sanity_checking:
            self.log_metrics(metrics)
        self.call(f"on_{stage}_end")
        model.train()
        return metrics

    def on_train_epoch_end(self, model: L.LightningModule, val_metrics: dict[str, float]) -> None:
        epoch = self.progress.epoch
        self.call("on_train_epoch_end")
        self.log_metrics(self.logged.read())
        self.update_lr_schedulers("epoch", plateau=True)
        self.progress.epoch += 1
        self.model_checkpoint(val_metrics)
        if self.enable_progress_bar:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in self.progress.callback_metrics.items() if "/" in k)
            print(f"epoch {epoch:3d}  {shown}", flush=True)

    def model_checkpoint(self, val_metrics: dict[str, float] | None,
                         save: Callable[[dict[str, Any], Path], None] = ckpt.save_checkpoint) -> None:
        """Each ModelCheckpoint's rule: without a monitor, the latest state (``val_metrics`` None: a
        mid-epoch save, these only); with one, the best (by this epoch's validation, for val/ tags).
        ``save(checkpoint, path)`` writes a file (the ensemble holds its members' until they end)."""
        saving = []  # (the new file, the one it replaces); without a monitor first: the resume point
        for callback in sorted(self.checkpoint_callbacks if self.enable_checkpointing else [],
                               key=lambda callback: callback.monitor is not None):
            monitor, best = callback.monitor, callback.best_model_score
            scores = val_metrics if monitor and monitor.startswith("val/") else self.progress.callback_metrics
            score = None if monitor is None or val_metrics is None else scores.get(monitor)
            if monitor is None or (score is not None and (best is None or (
                    score > best if callback.mode == "max" else score < best))):
                metrics = {"epoch": self.current_epoch - 1, "step": self.global_step, **self.callback_metrics}
                folder = Path(callback.dirpath or Path(self.log_dir) / "checkpoints")
                saving.append((folder / Path(callback.format_checkpoint_name(metrics)).name, callback.best_model_path))
                callback.best_model_path = str(saving[-1][0])
                callback.best_model_score = best if score is None else torch.tensor(score)
        if saving:
            flush_loggers(self)  # what was logged so far reaches the files before the checkpoint does
            checkpoint = self.dump_checkpoint()
            for path, previous in saving:
                save(checkpoint, path)
                if previous and Path(previous) != path and Path(previous).parent == path.parent:
                    Path(previous).unlink(missing_ok=True)  # save_top_k=1: the file it replaces, in its folder

    def stop_if_signalled(self) -> None:
        """After a SIGTERM/SIGINT: Stopped, naming the latest checkpoint (relative to the working folder when in it)."""
        if self.stop.signum:
            path = next((Path(c.best_model_path) for c in self.checkpoint_callbacks if c.monitor is None), None)
            raise runs.Stopped(self.stop.signum, self.global_step, path.relative_to(Path.cwd())
                               if path and path.is_relative_to(Path.cwd()) else path)

    log_learning_rate = profiled(loop_logging.log_learning_rate)
    log_metrics = profiled(loop_logging.log_metrics)

    def dump_checkpoint(self) -> dict[str, Any]:
        checkpoint = ckpt.dump_lightning_keys(self)
        data = getattr(self.train_batches, "state_dict", dict)()  # the batch iterator's place in its epoch
        checkpoint[ckpt.SECTION] = ckpt.toyloops_section("loop", loop=asdict(self.progress), data=data)
        self.lightning_module.on_save_checkpoint(checkpoint)
        return checkpoint

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load a :meth:`dump_checkpoint` back: weights, optimizer, scheduler, scaler, callbacks, data order, RNG."""
        self.restore_model(checkpoint)
        ckpt.restore_lightning_keys(self, checkpoint)
        section = checkpoint[ckpt.SECTION]
        if hasattr(self.train_batches, "load_state_dict"):
            self.train_batches.load_state_dict(section["data"])
        set_rng_state(section["rng"])
        known = {f.name for f in fields(LoopState)}  # 0.1 kept its best score here too (now in ModelCheckpoint)
        self.progress = LoopState(**{key: value for key, value in section["loop"].items() if key in known})

    def restore_model(self, checkpoint: dict[str, Any]) -> None:
        self.lightning_module.on_load_checkpoint(checkpoint)
        self.lightning_module.load_state_dict(checkpoint["state_dict"])

    def validate(self, model: L.LightningModule, dataloaders: Any = None, ckpt_path: str | Path | None = None,
                 verbose: bool = True, datamodule: L.LightningDataModule | None = None) -> list[dict[str, float]]:
        with self.attached(model, datamodule, TrainerFn.VALIDATING, ckpt_path):
            batches = dataloaders or datamodule.val_dataloader()
            return [self.evaluation_loop(model, "validation", batches, self.limit_val_batches)]

    def test(self, model: L.LightningModule, dataloaders: Any = None, ckpt_path: str | Path | None = None,
             verbose: bool = True, datamodule: L.LightningDataModule | None = None) -> list[dict[str, float]]:
        with self.attached(model, datamodule, TrainerFn.TESTING, ckpt_path):
            batches = dataloaders or datamodule.test_dataloader()
            return [self.evaluation_loop(model, "test", batches, self.limit_test_batches)]

    def predict(self, model: L.LightningModule, dataloaders: Any = None, datamodule: Any = None,
                return_predictions: bool | None = None, ckpt_path: str | Path | None = None) -> list[Any]:
        with self.attached(model, datamodule, TrainerFn.PREDICTING, ckpt_path), torch.no_grad(), self.autocast():
            batches = dataloaders or datamodule.predict_dataloader()
            model.eval()
            return [model.predict_step(self.batch_to_device(batch), i) for i, batch in
                    enumerate(islice(batches, num_batches(len(batches), self.limit_predict_batches)))]

