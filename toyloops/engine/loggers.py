"""The template's TensorBoard logger (``trainer.logger`` in every run config, see ``toyloops/engine/cli.py``),
and where a run's logger writes: the one rule both engines follow for any Lightning logger."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from toyloops.engine.dashboard import FLUSH_SECS
from toyloops.engine.defaults import LOG_DIR
from toyloops.rules.errors import ConfigError

# Loggers that write into <save_dir>/<name>/<version>/ (Lightning's Trainer.log_dir treats these two so): the run
# folder is theirs. Any other logger (MLflow, W&B) writes where it writes, and the run folder holds the rest.
FOLDER_LOGGERS = (LightningTensorBoardLogger, CSVLogger)


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` without its flush after every log (``save`` writes ``hparams.yaml``
    once); its SummaryWriter writes out every ``flush_secs``, and the callbacks flush at epoch ends and before
    every checkpoint (docs/outputs.md; the cost of that flush: docs/performance.md)."""

    _hparams_saved = False

    def __init__(self, *args: Any, flush_secs: int = FLUSH_SECS, **kwargs: Any) -> None:
        """Lightning's arguments; ``flush_secs`` (and any other SummaryWriter argument) goes to its SummaryWriter."""
        super().__init__(*args, flush_secs=flush_secs, **kwargs)

    @rank_zero_only
    def save(self) -> None:
        if not self._hparams_saved:
            super().save()
            self._hparams_saved = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))


def logger_class(spec: Any) -> type | None:
    """The class a ``trainer.logger`` config names (``class_path``), or None for ``true``/``false``/none."""
    path = spec.get("class_path") if isinstance(spec, dict) else getattr(spec, "class_path", None)
    if not isinstance(path, str):
        return None
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # the parser has imported it already


def writes_run_folder(spec: Any) -> bool:
    """Whether the configured logger's own folder is the run folder (TensorBoard, CSV)."""
    cls = logger_class(spec)
    return cls is not None and issubclass(cls, FOLDER_LOGGERS)


def runs_root(spec: Any, root_dir: Path, run_name: str) -> Path:
    """The folder a run's version folders go into: ``<root_dir>/logs/<run name>``, or for TensorBoard and
    CSV their ``<save_dir>/<name>`` (``save_dir`` at the template's ``logs`` meaning ``<root_dir>/logs``,
    ``name`` unset meaning the run name; both written back into ``spec``)."""
    init_args = getattr(spec, "init_args", None)
    if init_args is None or not writes_run_folder(spec):
        return root_dir / LOG_DIR / run_name
    if init_args.get("sub_dir"):
        raise ConfigError("trainer.logger.init_args.sub_dir is not supported: a run writes into its own folder")
    if init_args.save_dir == LOG_DIR:
        init_args.save_dir = str(root_dir / LOG_DIR)
    init_args.name = init_args.get("name") or run_name
    return Path(init_args.save_dir) / init_args.name


def into_run_folder(spec: Any, folder: Path, version: int | str) -> None:
    """The configured logger writes into the run's ``folder``: TensorBoard's and CSV's ``version``; another
    logger's local files (``save_dir`` left at the template's ``logs``) inside it."""
    init_args = getattr(spec, "init_args", None)
    if init_args is None:
        return
    if writes_run_folder(spec):
        init_args.version = version
    elif init_args.get("save_dir") == LOG_DIR:  # the template's default, carried over to the logger chosen
        init_args.save_dir = str(folder.absolute())  # W&B's service process resolves a relative one in its own cwd


def as_written(spec: Any, folder: Path) -> None:
    """Undo :func:`into_run_folder` on a config about to be saved as the run's ``config.yaml``: a non-folder
    logger's ``save_dir`` back to the template's ``logs`` (meaning "the run folder"), so that the config, run
    again, writes into a run folder of its own and not into this one."""
    init_args = getattr(spec, "init_args", None)
    if init_args is not None and not writes_run_folder(spec) and init_args.get("save_dir") == str(folder.absolute()):
        init_args.save_dir = LOG_DIR


def run_dir(trainer: Any) -> str:
    """A running trainer's run folder: its TensorBoard or CSV logger's ``log_dir``, else ``default_root_dir``
    (where both command lines put the run without such a logger). Unlike ``trainer.log_dir``, no broadcast."""
    logger = trainer.logger
    return logger.log_dir if isinstance(logger, FOLDER_LOGGERS) else trainer.default_root_dir
