"""Lightning callbacks the template turns on by default (see ``toyloops/cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from toyloops.errors import check_finite
from toyloops.seeding import rng_state, set_rng_state


class ResumeState(Callback):
    """Saves the random-number state (Python, NumPy, torch) with every checkpoint and restores it.

    Lightning's checkpoints leave it out, so without this dropout after a resume draws other masks
    than the uninterrupted run would have. (The data order needs nothing extra: the batch
    iterator's own ``state_dict`` rides in Lightning's fit-loop state.)
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = rng_state()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if "rng" in checkpoint:
            set_rng_state(checkpoint["rng"])


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first NaN/Inf loss, before its backward pass can touch the weights.

    The last checkpoint written before it stays the last good one. (Under 16-mixed the loss stays
    finite while the GradScaler skips steps with overflowing gradients; those do not trigger this.)
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        check_finite(loss, trainer.global_step, trainer.current_epoch)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, rewritten at every epoch end (or every N steps): always the newest state.

    Lightning's own ``save_last`` rewrites last.ckpt only when the monitored metric improved, so
    after a plateau "last" silently lags behind; a resume point has to be the latest state.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None,
                 every_n_epochs: int | None = None) -> None:
        """Args: every_n_train_steps: also save mid-epoch, every that many optimizer steps."""
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs,
                         enable_version_counter=False)


class RunSummary(Callback):
    """Prints where the run went at the end of ``fit``: best score, checkpoints, logs."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lines = ["", "== toyloops run summary =="]
        for ckpt in trainer.checkpoint_callbacks:
            if isinstance(ckpt, LastCheckpoint):
                lines.append(f"last checkpoint: {ckpt.best_model_path}")
            elif isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_score is not None:
                lines.append(f"best {ckpt.monitor}: {ckpt.best_model_score.item():.4f}")
                lines.append(f"best checkpoint: {ckpt.best_model_path}")
        log_dir = trainer.logger.log_dir if trainer.logger else None  # not trainer.log_dir: it broadcasts
        if log_dir:
            lines.append(f"logs: {log_dir}")
            lines.append(f"view: tensorboard --logdir {Path(log_dir).parent}")
        print("\n".join(lines), flush=True)
