"""The LightningCLI behind ``train.py``: template defaults and data -> model links.

Defaults a user gets without writing them: TensorBoard under ``logs/<config name>/``, the best
checkpoint by ``val/acc`` and ``last.ckpt`` (every epoch, or every N steps), a learning-rate
monitor, the run's config saved next to its logs, RNG state in checkpoints, a stop at the first
NaN loss, and a one-paragraph summary at the end of ``fit``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import warnings
from argparse import ArgumentError
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from toyloops.callbacks import (
    DashboardCallback,
    LastCheckpoint,
    PredictionWriter,
    ResumeState,
    RunSummary,
    StopOnNonFiniteLoss,
)
from toyloops.checkpoints import load_checkpoint
from toyloops.config import (
    LOG_DIR,
    LOG_EVERY_N_STEPS,
    MONITOR,
    MONITOR_MODE,
    add_links,
    check_net_fits_data,
    one_line,
    with_config_files,
)
from toyloops.errors import ConfigError, NonFiniteLossError
from toyloops.module import Classifier


class _DropTips(logging.Filter):
    """Lightning advertises cloud products at every start; a template stays quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropTips())


class ToyCLI(LightningCLI):
    """``LightningCLI`` for :class:`Classifier` with any toyloops data module."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # Always on, whatever trainer.callbacks a config lists (those are added to these).
        kwargs.setdefault("trainer_defaults", {"callbacks": [
            ResumeState(), StopOnNonFiniteLoss(), RunSummary(), PredictionWriter()]})
        super().__init__(
            Classifier, L.LightningDataModule, subclass_mode_data=True, args=args, run=run, **kwargs
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": MONITOR,
            "checkpoint.mode": MONITOR_MODE,
            "checkpoint.filename": "best-{epoch:03d}",
        })
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(DashboardCallback, "dashboard")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({
            "seed_everything": 0,
            "trainer.log_every_n_steps": LOG_EVERY_N_STEPS,
            "trainer.logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": LOG_DIR, "name": "", "default_hp_metric": False},
            },
        })
        add_links(parser)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # our constructors name the argument, its value and what is allowed
            raise ConfigError(one_line(str(err))) from err
        check_net_fits_data(self.model.net, self.datamodule)

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters right after parsing: check the run
        # (and the checkpoint) first, so a bad file is one clear line, not a traceback.
        if self.config.get("subcommand"):
            self._prepare_run(self.config[self.config.subcommand])
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        self._prepare_run(self.config[self.subcommand] if self.subcommand else self.config)

    def _prepare_run(self, config) -> None:  # noqa: ANN001 - a jsonargparse Namespace
        """Name the run, check precision, log folder and checkpoint before anything is written."""
        if getattr(self, "_prepared", False):
            return
        self._prepared = True
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None) if logger else None
        if init_args is not None and "name" in init_args and not init_args.name:
            # Name the TensorBoard run after the config file: logs/blobs_mlp/version_0/...
            files = config.get("config") or []
            init_args.name = Path(str(files[0])).stem if files else "default"
        _check_precision(config.trainer)
        self._run_root = None
        if init_args is not None and "save_dir" in init_args:
            self._run_root = Path(init_args.save_dir) / (init_args.get("name") or "")
            _check_writable(init_args.save_dir)
            self._runs_before = set(self._run_root.glob("version_*"))
        if config.get("ckpt_path"):
            config.ckpt_path = self._resolve_ckpt(config.ckpt_path, init_args)

    def _resolve_ckpt(self, ckpt_path: str, init_args) -> str:  # noqa: ANN001 - a jsonargparse Namespace
        """Check the checkpoint now (before anything is written); resume ``fit`` in its own run folder.

        Lightning's own ``last`` looks only in the new run's folder, finds nothing and silently
        starts from scratch; here ``last`` means the newest ``last.ckpt`` of this config's runs,
        and a resumed run keeps writing logs and checkpoints where it left off.
        """
        if ckpt_path == "last":
            runs = sorted(self._run_root.glob("version_*/checkpoints/last.ckpt"),
                          key=lambda p: int(p.parent.parent.name.split("_")[-1]))
            if not runs:
                raise ConfigError(f"ckpt_path='last' but no run has a last.ckpt under {self._run_root}/: "
                                  "nothing to resume (drop --ckpt_path to start a new run)")
            ckpt_path = str(runs[-1])
        elif ckpt_path in ("best", "hpc", "registry"):
            raise ConfigError(f"ckpt_path={ckpt_path!r} is not supported here: give a file path or 'last'")
        load_checkpoint(ckpt_path)  # raises a one-line ConfigError for a missing or unreadable file
        run_dir = Path(ckpt_path).resolve().parent.parent
        if (self.config.get("subcommand") == "fit" and init_args is not None and self._run_root is not None
                and run_dir.parent == self._run_root.resolve() and run_dir.name.startswith("version_")):
            init_args.version = int(run_dir.name.split("_")[-1])
        return ckpt_path

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self._remove_half_made_runs()
            raise

    def _remove_half_made_runs(self) -> None:
        """A run that failed before writing any checkpoint leaves no folder behind."""
        if self._run_root is None or self.trainer.global_rank != 0:
            return
        for run_dir in set(self._run_root.glob("version_*")) - self._runs_before:
            if not any(run_dir.rglob("*.ckpt")):
                shutil.rmtree(run_dir, ignore_errors=True)


def _check_precision(trainer) -> None:  # noqa: ANN001 - a jsonargparse Namespace
    """Lightning silently swaps 16-mixed for bf16-mixed on CPU; a template says so instead."""
    precision, accelerator = str(trainer.precision), str(trainer.accelerator)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in ("16-mixed", "16") and on_cpu:
        raise ConfigError(f"trainer.precision={precision!r} needs a CUDA GPU and this run is on CPU: "
                          "use 'bf16-mixed' or '32-true' (or --trainer.accelerator gpu on a GPU machine)")


def _check_writable(save_dir: str) -> None:
    """Fail now, creating nothing, if the log folder could not be made or written."""
    path = Path(save_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"log folder {save_dir!r} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"log folder {save_dir!r} is not writable ({err.strerror or err})") from None


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py``: user errors end in one line on stderr and a non-zero exit."""
    try:
        # allow_abbrev=False: a misspelt --trainer.max_epoch must not silently mean max_epochs
        ToyCLI(args=args, parser_kwargs={"exit_on_error": False, "allow_abbrev": False})
    except ArgumentError as err:
        message = with_config_files(one_line(str(err)), list(sys.argv[1:] if args is None else args))
        sys.exit(f"error: {message}  (see --help)")
    except (ConfigError, NonFiniteLossError) as err:
        sys.exit(f"error: {err}")
    except OSError as err:  # a failed write (read-only folder, full disk) stops the run loudly
        sys.exit(f"error: {err}")
