"""The LightningCLI behind ``train.py``: template defaults and data -> model links.

Defaults a user gets without writing them: TensorBoard under ``logs/<config name>/``,
ModelCheckpoint (best by ``val/acc`` + last), a learning-rate monitor, the run's config saved
next to its logs, and a one-paragraph summary at the end of ``fit``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from toyloops.config import LOG_DIR, LOG_EVERY_N_STEPS, MONITOR, MONITOR_MODE, add_links, one_line
from toyloops.module import Classifier


class _DropTips(logging.Filter):
    """Lightning advertises cloud products at every start; a template stays quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropTips())


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


class ToyCLI(LightningCLI):
    """``LightningCLI`` for :class:`Classifier` with any toyloops data module."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            Classifier, L.LightningDataModule, subclass_mode_data=True, args=args, run=run, **kwargs
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": MONITOR,
            "checkpoint.mode": MONITOR_MODE,
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:03d}",
        })
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({
            "seed_everything": 0,
            "trainer.log_every_n_steps": LOG_EVERY_N_STEPS,
            "trainer.logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": LOG_DIR, "name": "", "default_hp_metric": False},
            },
            "trainer.callbacks": [{"class_path": "toyloops.cli.RunSummary"}],
        })
        add_links(parser)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # our constructors name the argument, its value and what is allowed
            raise ConfigError(one_line(str(err))) from err

    def before_instantiate_classes(self) -> None:
        # Name the TensorBoard run after the config file: logs/blobs_mlp/version_0/...
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None) if logger else None
        if init_args is not None and "name" in init_args and not init_args.name:
            files = config.get("config") or []
            init_args.name = Path(str(files[0])).stem if files else "default"


class ConfigError(Exception):
    """A config value that the classes it configures reject."""


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py``: user errors end in one line on stderr and exit code 2."""
    try:
        ToyCLI(args=args, parser_kwargs={"exit_on_error": False})
    except ArgumentError as err:
        sys.exit(f"error: {one_line(str(err))}  (see --help)")
    except ConfigError as err:
        sys.exit(f"error: {err}")
