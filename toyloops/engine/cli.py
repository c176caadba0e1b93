"""The LightningCLI behind ``train.py``: the template's defaults (TensorBoard under ``logs/<config name>/``, best
and last checkpoints, an LR monitor, RNG state in checkpoints, a stop at the first NaN loss, a summary at the end of
``fit``; docs/outputs.md) and the data -> model links. Run folders and errors: :mod:`toyloops.engine.runs`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only

from toyloops.engine import runs
from toyloops.engine.callbacks import (
    DashboardCallback,
    EarlyStoppingCheck,
    LastCheckpoint,
    PredictionWriter,
    ResumeState,
    RunSummary,
    StopOnNonFiniteLoss,
)
from toyloops.engine.checkpoints import check_resume, check_weights, upgraded, write_atomic
from toyloops.engine.defaults import (
    CHECKPOINT_DEFAULTS,
    DEFAULT_MODEL,
    TRAINER_DEFAULTS,
    add_links,
    apply_thread_policy,
)
from toyloops.engine.loggers import as_written, into_run_folder, run_dir, runs_root, writes_run_folder
from toyloops.engine.validation import as_list, check_config_file, check_net_fits_data, check_values, links_into_net
from toyloops.rules import ignore_library_warnings
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import load_checkpoint, read_checkpoint

RUN_PREFIX = "version_"  # TensorBoardLogger's folder names
CALLBACKS = "toyloops.engine.callbacks"


ignore_library_warnings()
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(lambda record: "Tip:" not in record.getMessage())  # cloud adverts


class RunConfig(SaveConfigCallback):
    """The run's ``config.yaml``, into its run folder whatever the logger (:func:`~toyloops.engine.loggers.run_dir`):
    Lightning's own callback writes into ``trainer.log_dir``, which a logger with no local files (MLflow on a
    tracking server) does not have."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - SaveConfigCallback's
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        path, config = Path(run_dir(trainer)) / self.config_filename, self.config.clone()
        as_written(config.trainer.logger, path.parent)  # reruns into a run folder of its own
        write_atomic(path, self.parser.dump(config, skip_none=False).encode())


class ToyCLI(LightningCLI):
    """``LightningCLI`` for :class:`Classifier` with any toyloops data module."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", RunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # Always on, whatever trainer.callbacks a config lists (those are added to these).
        kwargs.setdefault("trainer_defaults", {
            "callbacks": [ResumeState(), StopOnNonFiniteLoss(), EarlyStoppingCheck(), RunSummary(),
                          PredictionWriter()]})
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False, "allow_abbrev": False})
        given = list(sys.argv[1:] if args is None else args)
        self._subcommand = given[0] if run and given and given[0] in LightningCLI.subcommands() else None
        if self._subcommand:  # the other subcommands' parser kwargs would reach the root parser as unknown ones
            kwargs["parser_kwargs"] = {key: value for key, value in kwargs["parser_kwargs"].items()
                                       if key == self._subcommand or key not in LightningCLI.subcommands()}
        self.run_folder: runs.RunFolder | None = None
        try:
            with warnings.catch_warnings():  # held here too: a test runner resets the filters per test
                ignore_library_warnings()
                super().__init__(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
                                 subclass_mode_data=True, args=args, run=run, **kwargs)
        except BaseException:
            if self.run_folder is not None:
                self.run_folder.release(failed=True)  # a run that wrote no checkpoint leaves no folder
            raise
        if self.run_folder is not None and run:
            self.run_folder.release(failed=False)

    def subcommands(self) -> dict[str, set[str]]:
        """Lightning's subcommands, or only the one a run uses (LightningCLI builds a parser for each, ~0.15 s)."""
        every = LightningCLI.subcommands()
        return {self._subcommand: every[self._subcommand]} if self._subcommand else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(DashboardCallback, "dashboard")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({**CHECKPOINT_DEFAULTS, **TRAINER_DEFAULTS, "model": DEFAULT_MODEL})
        add_links(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:  # noqa: ANN001 - as Lightning's
        args = runs.with_run_config(runs.with_shipped_configs(list(sys.argv[1:] if args is None else args)))
        for path in runs.config_files(args):
            check_config_file(path)  # before the YAML is expanded
        self._args = args
        with warnings.catch_warnings():  # args (not sys.argv's) are always the ones to parse here
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)
        # Before Lightning reads the checkpoint's hyperparameters: check it, then name and claim the run folder.
        self._prepare_run(self.config[self.config.subcommand] if self.config.get("subcommand") else self.config)

    def _prepare_run(self, config) -> None:  # noqa: ANN001 - a jsonargparse Namespace
        check_values(config)
        apply_thread_policy()
        runs.check_precision(config.trainer.precision, config.trainer.accelerator)
        subcommand = self.config.get("subcommand")
        if subcommand in ("validate", "test", "predict") and not config.get("ckpt_path"):
            raise ConfigError(f"{subcommand} needs --ckpt_path (a checkpoint of either engine, or 'last'); "
                              "without one it would score untrained weights")
        logger = config.trainer.logger
        folder_logger = writes_run_folder(logger)  # TensorBoard, CSV: logs/blobs_mlp/version_0/ is theirs
        root_dir = Path(config.trainer.get("default_root_dir") or ".")
        root = runs_root(logger, root_dir, runs.run_name(config.get("config")))
        if config.get("ckpt_path"):
            if config.ckpt_path in ("best", "hpc", "registry"):
                raise ConfigError(f"ckpt_path={config.ckpt_path!r} is not supported here: give a file path or 'last'")
            ckpt = runs.resolve_ckpt(config.ckpt_path, root, RUN_PREFIX)
            checkpoint = read_checkpoint(ckpt)  # a missing, unreadable or hostile file is one line, here
            config.ckpt_path = str(ckpt)
        resume = Path(config.ckpt_path) if subcommand == "fit" and config.get("ckpt_path") else None
        if resume:
            check_resume(checkpoint, "lightning", resume)
            runs.check_resume_config(resume, config)
        for key, kind, default in (("plugins", "CheckpointIO", {"class_path": f"{CALLBACKS}.AtomicCheckpointIO"}),
                                   ("callbacks", "ProgressBar", Namespace(class_path=f"{CALLBACKS}.ProgressBar"))):
            items = as_list(config.trainer.get(key))
            wanted = key == "plugins" or config.trainer.get("enable_progress_bar") is not False
            if wanted and not any(kind in str(getattr(i, "class_path", i)) for i in items):  # else the user's own
                config.trainer[key] = [*items, default]
        if subcommand in ("validate", "test", "predict"):  # into the checkpoint's run, not a new version_N
            warnings.filterwarnings("ignore", message="The dirpath has changed from")  # of course: no training
            if "verbose" in config and not any(arg.startswith("--verbose") for arg in self._args):
                config.verbose = False  # RunSummary prints the one summary
            if rank_zero_only.rank == 0:
                self.run_folder = runs.open_eval(Path(config.ckpt_path), root, subcommand)
                config.trainer.logger = False  # results in files and one summary, not a TensorBoard run each
                config.trainer.default_root_dir = str(self.run_folder.path)
                config.ckpt_path = str(upgraded(Path(config.ckpt_path), self.run_folder.path))
            return
        if rank_zero_only.rank == 0:  # other DDP ranks write nothing of their own
            self.run_folder = runs.open_run(root, RUN_PREFIX, resume, checkpoint["global_step"] if resume else 0)
            if resume:
                config.ckpt_path = str(upgraded(resume, self.run_folder.path))
            into_run_folder(logger, self.run_folder.path, self.run_folder.version)  # a resumed run: where it left off
            if not folder_logger:  # config.yaml, checkpoints and predictions go into the run folder all the same
                config.trainer.default_root_dir = str(self.run_folder.path)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:  # noqa: ANN003 - as Lightning's
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if not trainer.loggers:  # trainer.logger: false: the template's LR monitor has nothing to log to
            trainer.callbacks[:] = [c for c in trainer.callbacks if c is not config.get("lr_monitor")]
        logger = (self.config[self.subcommand] if self.subcommand else self.config).trainer.logger
        if self.subcommand == "fit" and self.run_folder is not None and not writes_run_folder(logger):
            for callback in trainer.checkpoint_callbacks:  # not <run>/<experiment>/<run id>/checkpoints
                callback.dirpath = callback.dirpath or str(self.run_folder.path / "checkpoints")
        return trainer

    def instantiate_classes(self) -> None:
        with links_into_net():
            super().instantiate_classes()
        check_net_fits_data(self.model, self.datamodule)
        if ckpt := (self.config[self.subcommand] if self.subcommand else self.config).get("ckpt_path"):
            check_weights(load_checkpoint(ckpt), self.model, ckpt)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py``: user errors end in one line on stderr and a non-zero exit."""
    runs.main(ToyCLI, args)


if __name__ == "__main__":
    main()
