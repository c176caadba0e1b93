"""The LightningCLI behind ``train.py``: template defaults and data -> model links.

Defaults a user gets without writing them: TensorBoard under ``logs/<config name>/``,
ModelCheckpoint (best by ``val/acc`` + last), a learning-rate monitor, the run's config saved
next to its logs, and a one-paragraph summary at the end of ``fit``.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

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
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:03d}",
        })
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({
            "seed_everything": 0,
            "trainer.log_every_n_steps": 10,
            "trainer.logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "logs", "name": ""},
            },
            "trainer.callbacks": [{"class_path": "toyloops.cli.RunSummary"}],
        })
        # One seed drives data generation, split and shuffles as well as init.
        parser.link_arguments("seed_everything", "data.init_args.seed")
        # Facts the data owns reach the model; a module lacking one (sequences have no
        # num_features) leaves that link out, so one set of links serves every net.
        for source, target in (
            ("num_classes", "model.num_classes"),
            ("num_classes", "model.net.init_args.num_classes"),
            ("num_features", "model.net.init_args.in_features"),
            ("vocab_size", "model.net.init_args.vocab_size"),
            ("seq_len", "model.net.init_args.seq_len"),
        ):
            parser.link_arguments(f"data.{source}", target, apply_on="instantiate")

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


def one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line errors to 'key.path: what was expected/given'."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    if not keys:  # a constructor's ValueError, wrapped by jsonargparse in a list of union errors
        return reasons[0] if "Errors:" in message and reasons else (lines[0] if lines else message)
    detail = next((line for line in lines if "Got value" in line), None)
    if detail is None:
        expected = [line[2:] for line in lines if line.startswith("- Expected")]
        given = next((line for line in lines if line.startswith("Given value:")), "")
        detail = f"{' or '.join(expected) or lines[-1]}. {given}".strip()
    detail = re.sub(r"<class '([\w.]+)'>", r"\1", re.sub(r'Parser key "[^"]+":\s*', "", detail))
    return f"{'.'.join(dict.fromkeys(keys))}: {detail}"


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py``: user errors end in one line on stderr and exit code 2."""
    try:
        ToyCLI(args=args, parser_kwargs={"exit_on_error": False})
    except ArgumentError as err:
        sys.exit(f"error: {one_line(str(err))}  (see --help)")
    except ConfigError as err:
        sys.exit(f"error: {err}")
