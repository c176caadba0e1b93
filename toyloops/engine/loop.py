"""python -m toyloops.engine.loop fit --config configs/blobs_mlp.yaml   (also validate, test; --help)

What Lightning's Trainer does for ``train.py``, written out in plain PyTorch. The model is the
same :class:`~toyloops.core.classifier.Classifier`, driven as a plain ``nn.Module`` (as Lightning's "build
your own trainer" example drives a LightningModule): ``model.model_step`` computes each batch and
``model.configure_optimizers`` builds the optimizer and scheduler. Each function below stands for
the Lightning loop or hook it is named after:

    fit                   Trainer.fit (fit_loop.run)
      on_fit_start        DashboardCallback.on_fit_start (the model graph)
      train_epoch         fit_loop.advance -> training_epoch_loop.run
        training_step     LightningModule.training_step, zero_grad and backward (automatic optimization)
        optimizer_step    clip_gradients, then optimizer.step under the precision plugin
        update_lr_schedulers   training_epoch_loop.update_lr_schedulers
      validation_loop     the evaluation loop (also ``validate`` and ``test``)
      on_validation_end   EarlyStopping.on_validation_end (when it checks after validation)
      on_train_epoch_end  epoch metrics, images, ReduceLROnPlateau, EarlyStopping, ModelCheckpoint, LastCheckpoint
        early_stopping_check  EarlyStopping._run_early_stopping_check, from trainer.callbacks
      on_fit_end          DashboardCallback.on_fit_end, RunSummary
    dump_checkpoint / restore   the checkpoint connector: Lightning's format, both directions

It reads the same config, builds the same data and model, draws from the random generator in the
same order and logs the same TensorBoard tags at the same steps: on CPU its weights are
bit-identical to Lightning's (``tests/test_loop.py``).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from toyloops.core.classifier import Classifier
from toyloops.core.module import is_log_step
from toyloops.engine import runs
from toyloops.engine.checkpoints import (
    SECTION,
    check_resume,
    check_weights,
    save_checkpoint,
    toyloops_section,
    write_atomic,
)
from toyloops.engine.dashboard import FLUSH_SECS, Dashboard, log_graph, log_hparams
from toyloops.engine.defaults import (
    DEFAULT_MODEL,
    LOG_DIR,
    MONITOR,
    MONITOR_MODE,
    TRAINER_DEFAULTS,
    add_links,
    apply_thread_policy,
    keep_built_implementation,
)
from toyloops.engine.seeding import seed_everything, set_rng_state
from toyloops.engine.validation import check_config_file, check_net_fits_data, check_values, links_into_net
from toyloops.rules.errors import ConfigError, check_finite
from toyloops.rules.specs import fusing_allowed, read_checkpoint

RUN_PREFIX = "loop_version_"
# The Trainer arguments the hand loop implements; their types and defaults come from L.Trainer.
SUPPORTED_TRAINER_KEYS = ("max_epochs", "precision", "gradient_clip_val", "gradient_clip_algorithm", "accelerator",
                          "devices", "check_val_every_n_epoch", "log_every_n_steps", "limit_train_batches",
                          "limit_val_batches", "limit_test_batches", "default_root_dir", "enable_progress_bar",
                          "enable_model_summary", "callbacks")
# What the Trainer does when one of them is left at None.
TRAINER_NONE_MEANS = {"max_epochs": 1000, "precision": "32-true", "gradient_clip_algorithm": "norm",
                      "check_val_every_n_epoch": 1, "log_every_n_steps": 50, "limit_train_batches": 1.0,
                      "limit_val_batches": 1.0, "limit_test_batches": 1.0, "enable_progress_bar": True,
                      "enable_model_summary": True}
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"  # the one trainer.callbacks entry the hand loop runs


def trainer_options(**values: Any) -> Namespace:
    """The hand loop's ``trainer:`` settings, each unset one as ``L.Trainer`` would take it."""
    defaults = {key: TRAINER_NONE_MEANS.get(key) for key in SUPPORTED_TRAINER_KEYS}
    defaults.update(accelerator="auto", devices="auto", log_every_n_steps=TRAINER_DEFAULTS["trainer.log_every_n_steps"])
    return Namespace({**defaults, **{key: value for key, value in values.items() if value is not None}})


@dataclass
class LoopState:
    """The fit loop's progress (Lightning keeps it in ``trainer.fit_loop`` and ModelCheckpoint)."""

    epoch: int = 0  # epochs completed: the next one to run
    global_step: int = 0  # optimizer steps taken
    best: float | None = None  # best score of the checkpoint monitor so far
    early_stopping: dict[str, Any] = field(default_factory=dict)  # EarlyStopping's state: wait_count, best_score
    callback_metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each logged tag


@dataclass
class Precision:
    """Device, autocast and GradScaler: Lightning's accelerator and precision plugin."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, trainer: Namespace) -> Precision:
        if trainer.devices not in (1, "1", "auto"):
            raise ConfigError(f"trainer.devices={trainer.devices!r}: the hand loop runs one process; "
                              "use train.py for several")
        runs.check_precision(trainer.precision, trainer.accelerator)
        cuda = trainer.accelerator in ("gpu", "cuda") or (trainer.accelerator == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if cuda else "cpu")
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(trainer.precision))
        # fp16 gradients can underflow: scale the loss up, unscale before the step (no-op otherwise).
        return cls(device, dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))

    def autocast(self):  # noqa: ANN201 - a context manager
        return nullcontext() if self.autocast_dtype is None else torch.autocast(self.device.type, self.autocast_dtype)


@dataclass
class Fit:
    """What ``fit`` sets up and its steps share: the hand-written Trainer's attributes."""

    model: Classifier
    datamodule: L.LightningDataModule
    trainer: Namespace
    precision: Precision
    optimizer: torch.optim.Optimizer
    scheduler: dict[str, Any] | None  # Lightning's lr_scheduler config: scheduler, interval, monitor
    writer: SummaryWriter
    run_dir: Path
    dashboard: Dashboard | None = None
    every_n_train_steps: int | None = None
    early_stopping: Namespace | None = None  # EarlyStopping's init_args from trainer.callbacks
    monitor: tuple[str, str] = (MONITOR, MONITOR_MODE)  # ModelCheckpoint's monitor and mode
    should_stop: bool = False  # trainer.should_stop: set by EarlyStopping, ends fit after this epoch
    epoch_end: Callable[[int, dict[str, float]], None] | None = None  # after each epoch: (epoch, val metrics)
    state: LoopState = field(default_factory=LoopState)
    stop: runs.StopRequest = field(default_factory=runs.StopRequest)  # SIGTERM/SIGINT, acted on between steps

    def __post_init__(self) -> None:
        self.train_batches, self.val_batches = self.datamodule.train_dataloader(), self.datamodule.val_dataloader()


def fit(model: Classifier, datamodule: L.LightningDataModule, trainer: Namespace, run_dir: Path,
        checkpoint: dict[str, Any] | None = None, dashboard: Dashboard | None = None,
        every_n_train_steps: int | None = None, config_text: str = "",
        monitor: tuple[str, str] = (MONITOR, MONITOR_MODE),
        epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> LoopState:
    """Train ``model`` as ``Trainer.fit`` would; ``checkpoint`` (a hand-loop one) resumes a run.
    ``epoch_end(epoch, val_metrics)`` is called after each epoch's checkpoints (a sweep's pruning)."""
    precision = Precision.create(trainer)
    model.to(precision.device)  # before the optimizer state exists, so its tensors follow the weights
    optimizer, scheduler = configure_optimizers(model, trainer)
    loop = Fit(model, datamodule, trainer, precision, optimizer, scheduler, open_writer(run_dir), run_dir, dashboard,
               every_n_train_steps, early_stopping_settings(trainer.callbacks), monitor, epoch_end=epoch_end)
    try:
        if checkpoint is not None:
            restore(loop, checkpoint)
        if config_text:
            write_atomic(run_dir / "config.yaml", config_text.encode())
        on_fit_start(loop)
        with loop.stop:
            while loop.state.epoch < trainer.max_epochs and not loop.should_stop:
                train_epoch(loop)
                metrics = {}
                if (loop.state.epoch + 1) % trainer.check_val_every_n_epoch == 0 and trainer.limit_val_batches != 0:
                    metrics = validation_loop(model, loop.val_batches, precision, "val", trainer.limit_val_batches)
                    log_metrics(loop, metrics)
                    on_validation_end(loop)
                update_lr_schedulers(loop, "step", plateau=True)  # the last batch's, after its validation
                on_train_epoch_end(loop, metrics)
                if loop.stop.signum:  # the epoch's checkpoint is the resume point
                    raise runs.Stopped(loop.stop.signum, loop.state.global_step,
                                       loop.run_dir / "checkpoints/last.ckpt")
        on_fit_end(loop)
    finally:
        loop.writer.close()  # also on failure: its thread must not write into a folder being removed
    return loop.state


def open_writer(run_dir: Path) -> SummaryWriter:
    """The run's TensorBoard writer (TensorBoardLogger.experiment), its thread flushing every
    FLUSH_SECS; flushed at each epoch end and before each checkpoint, closed by ``fit``."""
    return SummaryWriter(str(run_dir), flush_secs=FLUSH_SECS)


def configure_optimizers(model: Classifier, trainer: Namespace) -> tuple[torch.optim.Optimizer, dict[str, Any] | None]:
    """The model's ``configure_optimizers``, read as Lightning reads its return value (after
    ``setup``, where the model learns whether it may fuse its optimizer, as in Lightning)."""
    model.fused_optimizer = fusing_allowed(trainer.precision, trainer.gradient_clip_val)
    config = model.configure_optimizers()
    optimizer = config if isinstance(config, torch.optim.Optimizer) else config["optimizer"]
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ConfigError("model.optimizer=LBFGS calls the model again inside its step (a closure); the hand loop "
                          "does not: use train.py")
    if isinstance(config, torch.optim.Optimizer):
        return config, None
    scheduler = config.get("lr_scheduler")
    return config["optimizer"], scheduler if isinstance(scheduler, dict) or scheduler is None \
        else {"scheduler": scheduler, "interval": "epoch"}


def on_fit_start(loop: Fit) -> None:
    """The data's baselines (RunSummary.on_train_start) and the model graph, once per run."""
    if loop.state.global_step == 0:
        for tag, value in runs.baseline_scalars(loop.datamodule).items():
            loop.writer.add_scalar(tag, value, 0)
    if loop.dashboard and loop.dashboard.graph and loop.state.global_step == 0:
        log_graph(loop.writer, loop.model.net, loop.val_batches.x[:2])


def train_epoch(loop: Fit) -> None:
    """One pass over the train split, as Lightning's training epoch loop makes it."""
    state, scheduler = loop.state, loop.scheduler
    loop.model.train()
    if scheduler is None or scheduler["interval"] == "epoch":  # LearningRateMonitor, per epoch
        log_learning_rate(loop)
    loop.train_batches.set_epoch(state.epoch)  # order from seed + epoch; keeps a mid-epoch resume's place
    n_batches = num_batches(len(loop.train_batches), loop.trainer.limit_train_batches)
    for batch in loop.train_batches:
        log_now = is_log_step(state.global_step, loop.trainer.log_every_n_steps)
        if log_now and (scheduler is None or scheduler["interval"] == "step"):  # LearningRateMonitor, per step
            log_learning_rate(loop)
        loss = training_step(loop, batch)  # the loss as a number: the finite check has read it
        optimizer_step(loop)
        update_lr_schedulers(loop, "step")
        if loop.train_batches.batches_done < n_batches:  # at the last batch, only after validation (in fit)
            update_lr_schedulers(loop, "step", plateau=True)  # a per-step ReduceLROnPlateau, on the latest val/loss
        state.global_step += 1
        if log_now:
            log_metrics(loop, {"train/loss": loss}, step=state.global_step - 1)
        if loop.train_batches.batches_done >= n_batches:  # limit_train_batches
            break
        if loop.stop.signum or (loop.every_n_train_steps and state.global_step % loop.every_n_train_steps == 0):
            loop.writer.flush()  # what was logged up to here reaches the file before the resume point does
            save_checkpoint(dump_checkpoint(loop), loop.run_dir / "checkpoints/last.ckpt")  # a mid-epoch resume point
            if loop.stop.signum:
                raise runs.Stopped(loop.stop.signum, state.global_step, loop.run_dir / "checkpoints/last.ckpt")
    update_lr_schedulers(loop, "epoch")  # at the epoch's last batch, before validation, as Lightning does


def training_step(loop: Fit, batch: tuple[Tensor, Tensor]) -> float:
    """The model's step in the precision's autocast, a stop at a non-finite loss, zero_grad,
    backward; returns the loss as a number."""
    x, y = batch_to_device(batch, loop.precision.device)
    with loop.precision.autocast():  # forward and loss in low precision; weights stay fp32
        loss = loop.model.model_step((x, y), "train")
    value = check_finite(loss, loop.state.global_step, loop.state.epoch)  # StopOnNonFiniteLoss: before the update
    loop.optimizer.zero_grad(set_to_none=True)
    loop.precision.scaler.scale(loss).backward()
    return value


def batch_to_device(batch: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Lightning's ``strategy.batch_to_device``: the batch onto the model's device (a batch already
    there is passed through: ``.to`` on it is a no-op that still costs ~10 us a step)."""
    x, y = batch
    return (x if x.device == device else x.to(device, non_blocking=True),
            y if y.device == device else y.to(device, non_blocking=True))


def optimizer_step(loop: Fit) -> None:
    """Unscale, clip, step: Lightning's ``clip_gradients`` and ``optimizer_step``."""
    scaler, clip = loop.precision.scaler, loop.trainer.gradient_clip_val
    if clip:
        scaler.unscale_(loop.optimizer)  # clip in real units, not scaled ones
        params = [p for group in loop.optimizer.param_groups for p in group["params"]]
        if loop.trainer.gradient_clip_algorithm == "norm":
            nn.utils.clip_grad_norm_(params, clip)
        else:
            nn.utils.clip_grad_value_(params, clip)
    scaler.step(loop.optimizer)  # skipped when fp16 gradients overflowed
    scaler.update()


def update_lr_schedulers(loop: Fit, interval: str, plateau: bool = False) -> None:
    """Step the scheduler when its interval has come; ReduceLROnPlateau only after validation, on
    the latest value of its monitor (skipped before there is one, unless ``strict``)."""
    config = loop.scheduler
    if config is None or config["interval"] != interval:
        return
    scheduler = config["scheduler"]
    if plateau != isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return
    if not plateau:
        scheduler.step()
    elif config["monitor"] in loop.state.callback_metrics:
        scheduler.step(loop.state.callback_metrics[config["monitor"]])
    elif config.get("strict", True):
        raise ConfigError(f"ReduceLROnPlateau monitors {config['monitor']}, which this run does not log")


def validation_loop(model: Classifier, batches, precision: Precision, stage: str,
                    limit: int | float) -> dict[str, float]:
    """The evaluation loop: eval mode, no grad, ``model_step`` per batch, metrics computed once."""
    model.eval()
    with torch.no_grad():
        for batch in islice(batches, num_batches(len(batches), limit)):
            with precision.autocast():
                model.model_step(batch_to_device(batch, precision.device), stage)
    model.train()
    return compute_epoch_metrics(model, stage)


def compute_epoch_metrics(model: Classifier, stage: str) -> dict[str, float]:
    """``self.log(tag, metric, on_epoch=True)`` at epoch end: compute each metric, then reset it."""
    metrics = {}
    for tag, metric in model.epoch_metrics(stage).items():
        metrics[tag] = metric.compute().item()
        metric.reset()
    return metrics


def on_train_epoch_end(loop: Fit, val_metrics: dict[str, float]) -> None:
    """Train accuracy, images, ReduceLROnPlateau, then ModelCheckpoint (best) and LastCheckpoint."""
    state, epoch = loop.state, loop.state.epoch
    if getattr(loop.model, "train_metrics_from", None) == "eval":  # the Classifier's own on_train_epoch_end
        loop.model.measure_train_split(loop.datamodule.train_eval_dataloader())
    log_metrics(loop, compute_epoch_metrics(loop.model, "train"))
    if loop.dashboard and getattr(loop.model, "num_classes", None) is not None:  # class images
        val = (loop.val_batches.x, loop.val_batches.y)
        loop.dashboard.epoch_end(loop.writer, loop.model.net, val, epoch, state.global_step - 1,
                                 last=epoch + 1 == loop.trainer.max_epochs)
    loop.writer.flush()
    update_lr_schedulers(loop, "epoch", plateau=True)
    if check_on_train_epoch_end(loop):
        early_stopping_check(loop)
    state.epoch += 1
    monitor, mode = loop.monitor
    score = val_metrics.get(monitor) if monitor.startswith("val/") else state.callback_metrics.get(monitor)
    improved = score is not None and (state.best is None or (score > state.best if mode == "max"
                                                             else score < state.best))
    if improved:
        state.best = score
    checkpoint = dump_checkpoint(loop)
    save_checkpoint(checkpoint, loop.run_dir / "checkpoints/last.ckpt")  # first: the resume point
    if improved:
        save_checkpoint(checkpoint, loop.run_dir / "checkpoints/best.ckpt")
    if loop.trainer.enable_progress_bar:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in state.callback_metrics.items() if "/" in k)
        print(f"epoch {epoch:3d}  {shown}", flush=True)
    if loop.epoch_end:
        loop.epoch_end(epoch, val_metrics)


def early_stopping_settings(callbacks: Any) -> Namespace | None:
    """The init_args (defaults filled in) of the EarlyStopping that ``trainer.callbacks`` lists, if
    any: the one callback the hand loop runs, written out below."""
    specs = [] if callbacks is None else callbacks if isinstance(callbacks, list) else [callbacks]
    for spec in specs:
        if getattr(spec, "class_path", None) != EARLY_STOPPING:
            raise ConfigError(f"trainer.callbacks={getattr(spec, 'class_path', spec)}: the hand loop runs "
                              f"{EARLY_STOPPING} only; use train.py for other callbacks")
    if len(specs) > 1:
        raise ConfigError(f"trainer.callbacks lists {len(specs)} EarlyStopping callbacks: the hand loop runs one")
    return specs[0].init_args if specs else None


def check_on_train_epoch_end(loop: Fit) -> bool:
    """EarlyStopping.setup: check at every train epoch end when every epoch validates, else after
    each validation."""
    rule = loop.early_stopping
    if rule is None:
        return False
    return rule.check_on_train_epoch_end if rule.check_on_train_epoch_end is not None \
        else loop.trainer.check_val_every_n_epoch == 1


def on_validation_end(loop: Fit) -> None:
    if loop.early_stopping is not None and not check_on_train_epoch_end(loop):
        early_stopping_check(loop)


def early_stopping_check(loop: Fit) -> None:
    """Lightning's EarlyStopping rule, in float32 tensors as it computes it: stop when ``monitor``
    has not improved by more than ``min_delta`` for ``patience`` checks in a row (or is not
    finite, or crossed ``stopping_threshold`` / ``divergence_threshold``)."""
    rule, state = loop.early_stopping, loop.state.early_stopping
    if rule.monitor not in loop.state.callback_metrics:
        if rule.strict:
            raise ConfigError(f"trainer.callbacks.monitor={rule.monitor!r}: EarlyStopping monitors a metric this run "
                              f"does not log; it logs {', '.join(loop.state.callback_metrics)}")
        return
    better = torch.gt if rule.mode == "max" else torch.lt
    min_delta = rule.min_delta if rule.mode == "max" else -rule.min_delta
    current = torch.tensor(loop.state.callback_metrics[rule.monitor])
    best = torch.tensor(state.get("best_score", -torch.inf if rule.mode == "max" else torch.inf))
    should_stop = bool((rule.check_finite and not torch.isfinite(current))
                       or (rule.stopping_threshold is not None and better(current, rule.stopping_threshold))
                       or (rule.divergence_threshold is not None and better(-current, -rule.divergence_threshold)))
    if not should_stop and better(current - min_delta, best):  # an improvement: patience starts again
        state.update(best_score=current.item(), wait_count=0)
    elif not should_stop:
        state["wait_count"] = state.get("wait_count", 0) + 1
        should_stop = state["wait_count"] >= rule.patience
    if should_stop:
        loop.should_stop = True
        state["stopped_epoch"] = loop.state.epoch


def stopped_early(state: LoopState, trainer: Namespace) -> tuple[int, str] | None:
    """(epoch, monitor) when EarlyStopping ended the run, for the summary."""
    if "stopped_epoch" not in state.early_stopping:
        return None
    return state.early_stopping["stopped_epoch"], early_stopping_settings(trainer.callbacks).monitor


def on_fit_end(loop: Fit) -> None:
    step = loop.state.global_step - 1
    if loop.dashboard and step >= 0 and getattr(loop.model, "num_classes", None) is not None:
        loop.dashboard.fit_end(loop.writer, loop.model.net, (loop.val_batches.x, loop.val_batches.y),
                               loop.model.num_classes, step)
    config = loop.run_dir / "config.yaml"
    if loop.dashboard and loop.state.best is not None and config.exists():
        final_loss = loop.state.callback_metrics.get("val/loss", float("nan"))
        log_hparams(loop.run_dir, "loop", config.read_text(),
                    {f"{loop.monitor[0]}_best": loop.state.best, "val/loss_final": final_loss}, step)


def log_learning_rate(loop: Fit) -> None:
    """LearningRateMonitor: ``lr-<Optimizer>`` at the current step (``/pg1``, ``/pg2`` ... per
    parameter group when there are several)."""
    groups = loop.optimizer.param_groups
    for i, group in enumerate(groups):
        suffix = f"/pg{i + 1}" if len(groups) > 1 else ""
        loop.writer.add_scalar(f"lr-{type(loop.optimizer).__name__}{suffix}", group["lr"], loop.state.global_step)


def log_metrics(loop: Fit, metrics: dict[str, float], step: int | None = None) -> None:
    """Scalars plus the epoch number, as Lightning's logger connector writes each log (epoch-end
    metrics go to the epoch's last step)."""
    step = loop.state.global_step - 1 if step is None else step
    for tag, value in metrics.items():
        loop.writer.add_scalar(tag, value, step)
    loop.writer.add_scalar("epoch", loop.state.epoch, step)
    loop.state.callback_metrics.update(metrics)


def num_batches(available: int, limit: int | float) -> int:
    """``limit_*_batches`` as the Trainer reads it: a whole number above 1 is a count of batches, a
    number from 0 to 1 a fraction (the parser hands ``1`` over as ``1.0``: all batches)."""
    if isinstance(limit, float) and limit > 1 and limit.is_integer():
        limit = int(limit)
    return min(available, limit) if isinstance(limit, int) else int(available * limit)


# --- checkpoints: Lightning's keys, so either engine (and Classifier.load_from_checkpoint) reads them ---

def dump_checkpoint(loop: Fit) -> dict[str, Any]:
    """What Lightning's checkpoint connector writes, plus toyloops' resume section."""
    model, datamodule, state = loop.model, loop.datamodule, loop.state
    checkpoint = {
        "epoch": state.epoch - 1,  # as Lightning: the epoch the checkpoint was written in
        "global_step": state.global_step,
        "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(),
        "optimizer_states": [loop.optimizer.state_dict()],
        "lr_schedulers": [loop.scheduler["scheduler"].state_dict()] if loop.scheduler else [],
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": dict(datamodule.hparams),
        type(datamodule).__qualname__: datamodule.state_dict(),
        SECTION: toyloops_section("loop", loop=asdict(state), data=loop.train_batches.state_dict()),
    }
    if loop.precision.scaler.is_enabled():
        checkpoint["MixedPrecision"] = loop.precision.scaler.state_dict()  # Lightning's key for the scaler
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def restore(loop: Fit, checkpoint: dict[str, Any]) -> None:
    """Load a :func:`dump_checkpoint` back: weights, optimizer, scheduler, scaler, data order, RNG."""
    loop.model.on_load_checkpoint(checkpoint)
    loop.model.load_state_dict(checkpoint["state_dict"])
    loop.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    keep_built_implementation(loop.optimizer)  # ResumeState.on_train_start in Lightning
    if loop.scheduler:
        loop.scheduler["scheduler"].load_state_dict(checkpoint["lr_schedulers"][0])
    if "MixedPrecision" in checkpoint:
        loop.precision.scaler.load_state_dict(checkpoint["MixedPrecision"])
    section = checkpoint[SECTION]
    loop.train_batches.load_state_dict(section["data"])
    set_rng_state(section["rng"])
    loop.state = LoopState(**section["loop"])


# --- the command line: the same config file as train.py ---------------------------------------

def build_parser() -> ArgumentParser:
    """The ``train.py`` config as the hand loop reads it, from the same signatures as LightningCLI."""
    parser = ArgumentParser(prog="toyloops loop {fit,validate,test}", exit_on_error=False,
                            allow_abbrev=False,
                            description="The hand-written training loop, driven by a train.py config.")
    parser.add_argument("--config", action=ActionConfigFile, help="a run config (YAML), as for train.py")
    parser.add_argument("--seed_everything", type=int)
    skip = set(inspect.signature(L.Trainer).parameters) - set(SUPPORTED_TRAINER_KEYS)
    parser.add_class_arguments(L.Trainer, "trainer", skip=skip, instantiate=False)
    parser.add_subclass_arguments(L.LightningModule, "model", default=DEFAULT_MODEL)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.add_argument("--checkpoint.monitor", type=str, default=MONITOR)
    parser.add_argument("--checkpoint.mode", type=Literal["min", "max"], default=MONITOR_MODE)
    parser.add_argument("--last_checkpoint.every_n_train_steps", type=int | None, default=None,
                        help="also save last.ckpt every N optimizer steps (resume mid-epoch)")
    parser.add_class_arguments(Dashboard, "dashboard")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="resume (fit) or evaluate (validate/test) this checkpoint; 'last' = newest run's")
    parser.set_defaults(TRAINER_DEFAULTS)
    add_links(parser)
    return parser


def run(args: list[str] | None = None,
        epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Parse ``fit|validate|test --config ...`` and run it; returns the metrics and paths."""
    args = runs.with_shipped_configs(list(sys.argv[1:] if args is None else args))
    parser = build_parser()
    if args[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return {}
    if not args or args[0] not in ("fit", "validate", "test"):
        raise ConfigError(f"first argument must be fit, validate or test, got {args[0] if args else 'nothing'!r}")
    for path in runs.config_files(args):
        check_config_file(path)
    stage, cfg = args[0], parser.parse_args(args[1:])
    check_values(cfg)
    apply_thread_policy()
    seed_everything(cfg.seed_everything)  # before any object is built: init draws from it
    with links_into_net():
        objects = parser.instantiate(cfg)
    model, datamodule = objects.model, objects.data
    trainer = trainer_options(**vars(cfg.trainer))
    check_net_fits_data(model, datamodule)
    if trainer.enable_model_summary:
        print(f"{type(model.net).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    root = Path(trainer.default_root_dir or ".") / LOG_DIR / runs.run_name(cfg.get("config"))
    ckpt = runs.resolve_ckpt(cfg.ckpt_path, root, RUN_PREFIX) if cfg.ckpt_path else None
    checkpoint = read_checkpoint(ckpt) if ckpt else None  # a bad file fails before any folder exists

    if stage != "fit":
        if checkpoint is None:
            raise ConfigError(f"{stage} needs --ckpt_path (a checkpoint of either engine, or 'last')")
        hparams = checkpoint.get("hyper_parameters") or {}
        if hparams.get("net"):  # as LightningCLI: the checkpoint's own model
            model = type(model)(**{k: v for k, v in hparams.items() if k in inspect.signature(type(model)).parameters})
            check_net_fits_data(model, datamodule)
        check_weights(checkpoint, model, ckpt)
        model.load_state_dict(checkpoint["state_dict"])
        if type(datamodule).__qualname__ in checkpoint:  # the train-split statistics must be these data's
            datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
        precision = Precision.create(trainer)
        split = "val" if stage == "validate" else "test"
        batches = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
        limit = trainer.limit_val_batches if split == "val" else trainer.limit_test_batches
        metrics = validation_loop(model.to(precision.device), batches, precision, split, limit)
        folder = runs.open_eval(ckpt, root, stage)  # into the checkpoint's run, as the LightningCLI does
        try:
            write_atomic(folder.path / "config.yaml", parser.dump(cfg).encode())
            print(runs.record_eval(folder.path, stage, ckpt, metrics), flush=True)
        except BaseException:
            folder.release(failed=True)
            raise
        folder.release(failed=False)
        return metrics

    if checkpoint is not None:
        check_resume(checkpoint, "loop", ckpt)
        runs.check_resume_config(ckpt, cfg)
        check_weights(checkpoint, model, ckpt)
    run_folder = runs.open_run(root, RUN_PREFIX, ckpt, checkpoint["global_step"] if checkpoint else 0)
    try:
        state = fit(model, datamodule, trainer, run_folder.path, checkpoint=checkpoint, dashboard=objects.dashboard,
                    every_n_train_steps=cfg.last_checkpoint.every_n_train_steps, config_text=parser.dump(cfg),
                    monitor=(cfg.checkpoint.monitor, cfg.checkpoint.mode), epoch_end=epoch_end)
    except BaseException:
        run_folder.release(failed=True)
        raise
    run_folder.release(failed=False)
    checkpoints = run_folder.path / "checkpoints"
    print(runs.summary("toyloops hand loop", state.best, checkpoints / "best.ckpt", checkpoints / "last.ckpt",
                       run_folder.path, getattr(datamodule, "baselines", None),
                       stopped_early(state, trainer), cfg.checkpoint.monitor,
                       runs.compare_to_truth(datamodule, model)),
          flush=True)
    return {**state.callback_metrics, "best": state.best, "global_step": state.global_step,
            "best_checkpoint": checkpoints / "best.ckpt", "last_checkpoint": checkpoints / "last.ckpt"}


def _trainer_keys_hint(message: str) -> str:
    unknown = "--trainer." in message or "'trainer' does not accept" in message
    return f"{message}  (hand-loop trainer keys: {', '.join(SUPPORTED_TRAINER_KEYS)})" if unknown else message


def main(args: list[str] | None = None) -> None:
    """Command-line entry: user errors end in one line on stderr and a non-zero exit."""
    runs.main(run, args, hint=_trainer_keys_hint)


if __name__ == "__main__":
    main()
