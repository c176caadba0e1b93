"""toyloops loop fit --config configs/blobs_mlp.yaml   (also validate, test; --help)

The hand trainer's command line: the same config file as ``train.py``, read into a
:class:`~toyloops.engine.loop.HandTrainer` with the config's ``trainer:`` arguments and the
template's callbacks, then called as ``trainer.fit(model, datamodule=data, ckpt_path=...)``.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.loggers import Logger

from toyloops.engine import runs
from toyloops.engine.callbacks import DashboardCallback, EarlyStoppingCheck, LastCheckpoint, RunSummary
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import (
    CHECKPOINT_DEFAULTS,
    DEFAULT_MODEL,
    add_links,
    apply_thread_policy,
)
from toyloops.engine.defaults import TRAINER_DEFAULTS as CONFIG_DEFAULTS
from toyloops.engine.loggers import TensorBoardLogger, into_run_folder, runs_root, writes_run_folder
from toyloops.engine.loop import CONFIG_KEYS as SUPPORTED_TRAINER_KEYS  # what a config's trainer: may set here
from toyloops.engine.loop import HandTrainer
from toyloops.engine.seeding import seed_everything
from toyloops.engine.validation import check_config_file, check_net_fits_data, check_values, links_into_net
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import read_checkpoint

RUN_PREFIX = "loop_version_"
CALLBACKS = "toyloops.engine.callbacks"
# train.py's callback groups, parsed with every key, and the keys of each that the hand loop implements
CALLBACK_GROUPS = {"checkpoint": (ModelCheckpoint, ("monitor", "mode")),
                   "last_checkpoint": (LastCheckpoint, ("every_n_train_steps",)),
                   "lr_monitor": (LearningRateMonitor, ())}
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"  # the one trainer.callbacks entry a config may add


class LoopDashboard(DashboardCallback):
    engine = "loop"  # the HParams tab's engine column


def build_parser() -> ArgumentParser:
    """The ``train.py`` config as the hand trainer reads it, from the same signatures as LightningCLI."""
    parser = ArgumentParser(prog="toyloops loop {fit,validate,test}", exit_on_error=False, allow_abbrev=False,
                            description="The hand-written training loop, driven by a train.py config.")
    parser.add_argument("--config", action=ActionConfigFile, help="a run config (YAML), as for train.py")
    parser.add_argument("--seed_everything", type=int)
    # every L.Trainer key, typed as LightningCLI types them: a config of either engine parses (a Lightning run's
    # config.yaml, a sweep's best.yaml); HandTrainer refuses a key it does not implement unless at its default
    parser.add_class_arguments(L.Trainer, "trainer", instantiate=False, fail_untyped=False, sub_configs=True)
    parser.add_subclass_arguments(L.LightningModule, "model", default=DEFAULT_MODEL)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    for key, (callback, _) in CALLBACK_GROUPS.items():
        parser.add_class_arguments(callback, key, instantiate=False, fail_untyped=False)
    parser.add_class_arguments(LoopDashboard, "dashboard")
    for key, kind in (("optimizer", dict | None), ("lr_scheduler", dict | None), ("weights_only", bool | None)):
        parser.add_argument(f"--{key}", type=kind, default=None, help="as train.py's; the hand loop: none only")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="resume (fit) or evaluate (validate/test) this checkpoint; 'last' = newest run's")
    parser.set_defaults({**CONFIG_DEFAULTS, **CHECKPOINT_DEFAULTS})
    add_links(parser)
    return parser


def check_implemented(cfg: Any, parser: ArgumentParser) -> None:
    """train.py's callback keys (and its top-level optimizer, lr_scheduler, weights_only) the hand loop does not
    implement are refused unless at train.py's defaults, in one line naming the key."""
    defaults = parser.get_defaults()
    for group, (_, implemented) in CALLBACK_GROUPS.items():
        for key, value in vars(cfg[group]).items():
            if key not in implemented and value != defaults[group][key]:
                raise ConfigError(f"{group}.{key}={value!r}: the hand loop does not implement it (it takes "
                                  f"{', '.join(f'{group}.{k}' for k in implemented) or 'none of these'}); use train.py")
    for key in ("optimizer", "lr_scheduler", "weights_only"):
        if cfg.get(key) is not None:
            raise ConfigError(f"{key}={cfg[key]!r}: the hand loop does not implement it; use train.py")


def entries(value: Any, done_here: str = "") -> list[Any]:
    """A ``trainer.callbacks`` or ``trainer.plugins`` value as a list, less the template's own entries that the
    hand loop does itself (``done_here``: the progress bar it prints, the atomic checkpoint writes it makes),
    which a Lightning run's config.yaml lists."""
    value = [] if value is None else value if isinstance(value, list) else [value]
    return [spec for spec in value if not (done_here and getattr(spec, "class_path", None) == done_here)]


def early_stopping(callbacks: Any) -> list[Callback]:
    """The EarlyStopping that ``trainer.callbacks`` lists, built (the one callback a config may add here)."""
    specs = [] if callbacks is None else callbacks if isinstance(callbacks, list) else [callbacks]
    for spec in specs:
        if getattr(spec, "class_path", None) != EARLY_STOPPING:
            raise ConfigError(f"trainer.callbacks={getattr(spec, 'class_path', spec)}: the hand loop runs "
                              f"{EARLY_STOPPING} only; use train.py for other callbacks")
    if len(specs) > 1:
        raise ConfigError(f"trainer.callbacks lists {len(specs)} EarlyStopping callbacks: the hand loop runs one")
    return [instantiate_class((), spec) for spec in specs]


def build(args: list[str], parser: ArgumentParser | None = None) -> tuple[Any, Any]:
    """Arguments (after the subcommand) to ``(config, objects)`` in LightningCLI's order (``ToyCLI``):
    config files checked, parsed, values and trainer checked, seeded, instantiated, net fitted to data."""
    args, parser = runs.with_shipped_configs(args), parser or build_parser()
    for path in runs.config_files(args):
        check_config_file(path)
    cfg = parser.parse_args(args)
    check_values(cfg)
    check_implemented(cfg, parser)
    apply_thread_policy()
    try:
        HandTrainer(**trainer_options(cfg), logger=False)  # the trainer's own checks, before any folder exists
    except ConfigError as err:
        if "does not implement it" not in str(err):
            raise
        raise ConfigError(f"{err}  (hand-loop trainer keys: {', '.join(SUPPORTED_TRAINER_KEYS)})") from None
    return cfg, instantiate(cfg, parser)


def instantiate(cfg: Any, parser: ArgumentParser) -> Any:
    """A parsed config's objects: seeded first (init draws from it), the net fitted to the data."""
    seed_everything(cfg.seed_everything)
    with links_into_net():
        objects = parser.instantiate(cfg)
    check_net_fits_data(objects.model, objects.data)
    return objects


def trainer_options(cfg: Any) -> dict[str, Any]:
    """The config's ``trainer:`` as HandTrainer's arguments, without the logger (:func:`run_logger` builds it)."""
    options = {key: value for key, value in vars(cfg.trainer).items() if key != "logger"}
    plugins = entries(cfg.trainer.plugins, f"{CALLBACKS}.AtomicCheckpointIO") or None  # its saves are atomic already
    profiler = cfg.trainer.profiler
    return {**options, "callbacks": early_stopping(entries(cfg.trainer.callbacks, f"{CALLBACKS}.ProgressBar")),
            "plugins": plugins, "num_sanity_val_steps": 0,
            "profiler": instantiate_class((), profiler) if hasattr(profiler, "class_path") else profiler}


def run_logger(cfg: Any, folder: Path) -> Logger | bool:
    """``trainer.logger`` built to write into the run's ``folder``, as train.py's (:mod:`toyloops.engine.loggers`)."""
    spec = cfg.trainer.logger
    into_run_folder(spec, folder, folder.name)
    if spec is True or spec is None:  # L.Trainer's default: TensorBoard, here into the run folder
        return TensorBoardLogger(save_dir=str(folder.parent), name="", version=folder.name, default_hp_metric=False)
    return instantiate_class((), spec) if hasattr(spec, "class_path") else spec


def run_root(cfg: Any) -> Path:
    """The folder a run's version folders go into (:func:`~toyloops.engine.loggers.runs_root`), the logger's
    settings written to match."""
    return runs_root(cfg.trainer.logger, Path(cfg.trainer.default_root_dir or "."), runs.run_name(cfg.get("config")))


@contextmanager
def held(folder: runs.RunFolder, config: str):  # noqa: ANN201 - a context manager
    """The folder's path, its ``config.yaml`` written; released after the block (removed if it fails: ``release``)."""
    try:
        write_atomic(folder.path / "config.yaml", config.encode())
        yield folder.path
    except BaseException:
        folder.release(failed=True)
        raise
    folder.release(failed=False)


def run(args: list[str] | None = None, callbacks: tuple[Callback, ...] = ()) -> dict[str, Any]:
    """Parse ``fit|validate|test --config ...`` and run it; returns the metrics and paths.
    ``callbacks`` join the template's (a sweep's pruning)."""
    args, parser = runs.with_run_config(list(sys.argv[1:] if args is None else args)), build_parser()
    if args[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return {}
    if not args or args[0] not in ("fit", "validate", "test"):
        raise ConfigError(f"first argument must be fit, validate or test, got {args[0] if args else 'nothing'!r}")
    stage, (cfg, objects) = args[0], build(args[1:], parser)
    model, datamodule, options = objects.model, objects.data, trainer_options(cfg)
    config = parser.dump(cfg)  # as given: run again, it makes a run folder of its own beside this one
    root = run_root(cfg)
    ckpt = runs.resolve_ckpt(cfg.ckpt_path, root, RUN_PREFIX) if cfg.ckpt_path else None
    checkpoint = read_checkpoint(ckpt) if ckpt else None  # a bad file fails before any folder exists

    if stage != "fit":
        if checkpoint is None:
            raise ConfigError(f"{stage} needs --ckpt_path (a checkpoint of either engine, or 'last')")
        hparams = checkpoint.get("hyper_parameters") or {}
        if hparams.get("net"):  # as LightningCLI: the checkpoint's own model
            model = type(model)(**{k: v for k, v in hparams.items() if k in inspect.signature(type(model)).parameters})
            check_net_fits_data(model, datamodule)
        trainer = HandTrainer(**{**options, "logger": False, "enable_model_summary": False})
        evaluate = trainer.validate if stage == "validate" else trainer.test
        metrics = evaluate(model, datamodule=datamodule, ckpt_path=ckpt)[0]
        with held(runs.open_eval(ckpt, root, stage), config) as folder:  # in the checkpoint's run, as LightningCLI
            print(runs.record_eval(folder, stage, ckpt, metrics), flush=True)
        return metrics

    if checkpoint is not None:
        runs.check_resume_config(ckpt, cfg)  # the checkpoint itself: in fit
    with held(runs.open_run(root, RUN_PREFIX, ckpt, checkpoint["global_step"] if checkpoint else 0), config) as folder:
        checkpoints = folder / "checkpoints"
        logger = run_logger(cfg, folder)
        if not writes_run_folder(cfg.trainer.logger):  # MLflow, W&B, none: the run folder holds the rest
            options["default_root_dir"] = str(folder)
        trainer = HandTrainer(**{**options, "logger": logger, "callbacks": [
            *options["callbacks"], ModelCheckpoint(str(checkpoints), "best", cfg.checkpoint.monitor,
                                                   mode=cfg.checkpoint.mode),
            LastCheckpoint(str(checkpoints), cfg.last_checkpoint.every_n_train_steps), objects.dashboard,
            LearningRateMonitor(), EarlyStoppingCheck(), RunSummary(), *callbacks]})
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
    best = trainer.checkpoint_callback.best_model_score
    return {**trainer.progress.callback_metrics, "best": None if best is None else best.item(),
            "global_step": trainer.global_step, "best_checkpoint": checkpoints / "best.ckpt",
            "last_checkpoint": checkpoints / "last.ckpt"}


def _trainer_keys_hint(message: str) -> str:
    unknown = "--trainer." in message or "'trainer' does not accept" in message
    return f"{message}  (hand-loop trainer keys: {', '.join(SUPPORTED_TRAINER_KEYS)})" if unknown else message


def main(args: list[str] | None = None) -> None:
    """Command-line entry: user errors end in one line on stderr and a non-zero exit."""
    runs.main(run, args, hint=_trainer_keys_hint)


if __name__ == "__main__":
    main()
