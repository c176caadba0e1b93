"""Lightning callbacks the template turns on by default (see ``toyloops/engine/cli.py``)."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from toyloops.engine.checkpoints import SECTION, save_checkpoint, toyloops_section
from toyloops.engine.dashboard import Dashboard, log_graph, log_hparams
from toyloops.engine.defaults import PROGRESS_BAR_MIN_INTERVAL_S, PROGRESS_BAR_REFRESH_RATE, keep_built_implementation
from toyloops.engine.loggers import run_dir
from toyloops.engine.runs import EVAL_FOLDER, Stopped, StopRequest, record_eval, summary, write_table
from toyloops.engine.seeding import set_rng_state
from toyloops.rules.errors import ConfigError, check_finite


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM progress bar, its training bar redrawn at most every ``min_interval`` seconds and at
    each epoch's end (why: docs/performance.md); ``refresh_rate`` paces the validation, test and predict bars."""

    def __init__(self, min_interval: float = PROGRESS_BAR_MIN_INTERVAL_S,
                 refresh_rate: int = PROGRESS_BAR_REFRESH_RATE, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._drawn_at = -math.inf

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, now = self.train_progress_bar, time.monotonic()
        bar.n = batch_idx + 1  # counted every batch; on_train_epoch_end draws the epoch's last count
        if self.is_enabled and now - self._drawn_at >= self.min_interval:
            self._drawn_at = now
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # one redraw: the count and the metrics


class ResumeState(Callback):
    """What Lightning's checkpoints leave out: toyloops' section (the engine, the random-number state, restored
    on resume, so dropout draws the masks the uninterrupted run would), the optimizer implementation this run
    built, and the loggers' events written out before every checkpoint (docs/reliability.md)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        flush_loggers(trainer)
        checkpoint[SECTION] = toyloops_section("lightning")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == "fit" and SECTION in checkpoint:
            set_rng_state(checkpoint[SECTION]["rng"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers if trainer.ckpt_path else []:  # restored by now, as in loop.restore
            keep_built_implementation(optimizer)


def flush_loggers(trainer: L.Trainer) -> None:
    """Each logger's events onto disk through its experiment's public ``flush()`` (a SummaryWriter's returns
    once its thread wrote out every event); one without (CSV saves at every log) is left as it is."""
    if trainer.is_global_zero:  # other ranks log nothing
        for logger in trainer.loggers:
            flush = getattr(logger.experiment, "flush", None)
            if callable(flush):
                flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writes through :func:`toyloops.engine.checkpoints.save_checkpoint`: atomic on any
    filesystem (fsspec's move from ``$TMPDIR`` truncates and copies when ``logs/`` is on another one)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        save_checkpoint(checkpoint, path)


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first NaN/Inf loss, before its backward pass can touch the weights."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        check_finite(loss, trainer.global_step, trainer.current_epoch)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at every training epoch end, validated or not (or every N steps), and the resume point
    SIGTERM and SIGINT leave (:class:`toyloops.engine.runs.StopRequest`); Lightning's ``save_last`` lags
    behind after a plateau, and its SIGTERM exits 0 with nothing saved (docs/reliability.md)."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None,
                 every_n_epochs: int | None = None) -> None:
        """Args: every_n_train_steps: also save mid-epoch, every that many optimizer steps."""
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs,
                         enable_version_counter=False, save_on_train_epoch_end=True)
        self.every_n_train_steps = every_n_train_steps  # public: the hand trainer's mid-epoch saves read it
        self.stop = StopRequest()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop.__enter__()  # in place of Lightning's SIGTERM handler, which it restores at teardown

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop.__exit__()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.stop.__exit__()
        if trainer.strategy.launcher is not None:  # DDP: end the ranks this process started, hung ones too
            trainer.strategy.launcher.kill(signal.SIGKILL)

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        # Under DDP the signal may reach one rank only; the ranks agree, then all save and stop together.
        requested = self.stop.signum is not None
        return trainer.strategy.reduce_boolean_decision(requested, all=False) if trainer.world_size > 1 else requested

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if batch_idx + 1 < trainer.num_training_batches and self._stop_requested(trainer):  # mid-epoch: save here
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt")
            raise Stopped(self.stop.signum or signal.SIGTERM, trainer.global_step, Path(self.dirpath) / "last.ckpt")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._stop_requested(trainer):  # this epoch's last.ckpt is the resume point
            raise Stopped(self.stop.signum or signal.SIGTERM, trainer.global_step, Path(self.dirpath) / "last.ckpt")


class EarlyStoppingCheck(Callback):
    """Before the first step, in both engines: an EarlyStopping on ``train/loss`` when an epoch has fewer steps
    than ``log_every_n_steps`` is one line. The template's modules write that step value on logging steps only,
    so some epoch ends without one (Lightning: a RuntimeError at that epoch's end); ``train/loss_epoch``, the
    epoch's mean, is there at every epoch's end."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps, every = trainer.num_training_batches, trainer.log_every_n_steps
        for callback in trainer.callbacks:
            if isinstance(callback, EarlyStopping) and callback.monitor == "train/loss" and steps < every:
                raise ConfigError(f"trainer.callbacks.monitor='train/loss': an epoch here has {steps} steps and "
                                  f"train/loss is written every {every} (trainer.log_every_n_steps), so some epoch "
                                  f"ends without one for EarlyStopping; set log_every_n_steps <= {steps} or monitor "
                                  "train/loss_epoch (the epoch's mean)")


class RunSummary(Callback):
    """Logs the data's baselines when training starts, and prints where the run went at the end of
    ``fit``: best score next to those baselines, checkpoints, logs."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # once per run, not again on resume
            baselines = getattr(trainer.datamodule, "baselines", None) or {}  # none: the data does not know them
            for logger in trainer.loggers:
                logger.log_metrics({f"baseline/{name}": value for name, value in baselines.items()}, step=0)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = next((c.best_model_path for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        best = next((c for c in trainer.checkpoint_callbacks if not isinstance(c, LastCheckpoint)
                     and c.best_model_score is not None), None)
        log_dir = run_dir(trainer)
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)
                        and c.stopping_reason_message is not None), None)  # set when it stopped the run
        truth = getattr(trainer.datamodule, "compare_to_truth", None)  # the data's own word on the trained net
        print(summary("toyloops run summary", best.best_model_score.item() if best else None,
                      best.best_model_path if best else None, last, Path(log_dir or "."),
                      getattr(trainer.datamodule, "baselines", None),
                      (stopper.stopped_epoch, stopper.monitor) if stopper else None,
                      best.monitor if best else "val/acc", truth and truth(pl_module.net),
                      tensorboard=isinstance(trainer.logger, TensorBoardLogger),
                      logger=type(trainer.logger).__name__ if trainer.logger else "off"),
              flush=True)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # not the validation inside fit
            self._record_eval(trainer, "validate", "val/")

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_eval(trainer, "test", "test/")

    def _record_eval(self, trainer: L.Trainer, stage: str, prefix: str) -> None:
        if trainer.ckpt_path and Path(trainer.default_root_dir).parent.name == EVAL_FOLDER:  # see runs.open_eval
            metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
            print(record_eval(Path(trainer.default_root_dir), stage, Path(trainer.ckpt_path), metrics), flush=True)


class DashboardCallback(Dashboard, Callback):
    """Lightning's side of :class:`toyloops.engine.dashboard.Dashboard` (same arguments, same images).
    It draws a module's ``net`` on the data's ``splits["val"]`` (toyloops' and ``toyloops init``'s own
    have both); a module or data without them gets the scalars only."""

    @staticmethod
    def drawable(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        return isinstance(getattr(pl_module, "net", None), torch.nn.Module) and \
            "val" in (getattr(trainer.datamodule, "splits", None) or {})

    engine = "lightning"  # the HParams tab's engine column

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.graph and isinstance(trainer.logger, TensorBoardLogger) and self.drawable(trainer, pl_module):
            log_graph(trainer.logger.experiment, pl_module.net, trainer.datamodule.splits["val"][0][:2])

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The last epoch's events onto disk before this one trains, as the hand loop flushes at its
        # epoch end (Lightning logs an epoch's metrics after every on_train_epoch_end hook).
        flush_loggers(trainer)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(trainer.logger, TensorBoardLogger) and getattr(pl_module, "num_classes", None) is not None \
                and self.drawable(trainer, pl_module):
            last = trainer.current_epoch + 1 == trainer.max_epochs
            self.epoch_end(trainer.logger.experiment, pl_module.net, trainer.datamodule.splits["val"],
                           trainer.current_epoch, trainer.global_step - 1, last)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger):
            return
        writer, step = trainer.logger.experiment, trainer.global_step - 1
        if getattr(pl_module, "num_classes", None) is not None and self.drawable(trainer, pl_module):
            self.fit_end(writer, pl_module.net, trainer.datamodule.splits["val"], pl_module.num_classes, step)
        best = next((c for c in trainer.checkpoint_callbacks
                     if not isinstance(c, LastCheckpoint) and c.best_model_score is not None), None)
        config = Path(trainer.logger.log_dir) / "config.yaml"
        if best is not None and config.exists():
            final_loss = trainer.callback_metrics.get("val/loss", torch.tensor(float("nan"))).item()
            log_hparams(config.parent, self.engine, config.read_text(),
                        {f"{best.monitor}_best": best.best_model_score.item(), "val/loss_final": final_loss}, step)


class PredictionWriter(BasePredictionWriter):
    """``predict`` writes ``predictions.csv`` (index, target, predicted, p_0..p_C-1 for classes) into its own run
    folder (docs/outputs.md); it never overwrites a file toyloops did not write."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: list,
                           batch_indices: list) -> None:
        if trainer.world_size > 1:
            raise ConfigError("predict writes one CSV from one process: run it with --trainer.devices 1")
        probs = torch.cat(predictions).cpu()
        targets = torch.cat([y for _, y in trainer.predict_dataloaders]) if trainer.predict_dataloaders else None
        path = Path(trainer.log_dir) / self.filename  # this predict run's own folder, made by toyloops
        if path.exists():  # only without a logger: log_dir is then a folder of the user's
            raise ConfigError(f"{path} exists and toyloops did not write it: move it, or predict with the "
                              "TensorBoard logger on (predictions then go into the run's own folder)")
        if probs.ndim == 1:  # a regression: one predicted value a sample
            header = ["index", "target", "predicted"]
            rows = [[i, f"{targets[i]:.6f}" if targets is not None else "", f"{p:.6f}"] for i, p in enumerate(probs)]
        else:  # class probabilities
            header = ["index", "target", "predicted", *(f"p_{c}" for c in range(probs.shape[1]))]
            rows = [[i, int(targets[i]) if targets is not None else "", int(p.argmax()),
                     *(f"{v:.6f}" for v in p.tolist())] for i, p in enumerate(probs)]
        write_table(path, [header, *rows])
        print(f"\npredictions: {path} ({len(rows)} rows)", flush=True)  # on a line of its own, after the bar
