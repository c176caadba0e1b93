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


class RunSummary(Callback):
    """Prints where the run went at the end of ``fit``: best score, checkpoints, logs."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        lines = ["", "== toyloops run summary =="]
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_score is not None:
            lines.append(f"best {ckpt.monitor}: {ckpt.best_model_score.item():.4f}")
            lines.append(f"best checkpoint: {ckpt.best_model_path}")
        if isinstance(ckpt, ModelCheckpoint) and ckpt.last_model_path:
            lines.append(f"last checkpoint: {ckpt.last_model_path}")
        if trainer.log_dir:
            lines.append(f"logs: {trainer.log_dir}")
            lines.append(f"view: tensorboard --logdir {Path(trainer.log_dir).parent}")
        print("\n".join(lines), flush=True)
