"""Every check a config passes before a run starts, written once for both engines: values the
parser accepts but a run cannot use, config files, jsonargparse's errors as one line, and what of
``L.Trainer`` and ``configure_optimizers`` the hand trainer implements.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch import nn

from toyloops.engine.defaults import DATA_TO_NET
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import resolve

MAX_CONFIG_BYTES, MAX_CONFIG_ALIASES = 1_000_000, 20  # 20 aliases expand a file 5**4 times at most
TRAINER_DEFAULTS = {name: p.default for name, p in inspect.signature(L.Trainer).parameters.items()}
# L.Trainer's arguments the hand trainer implements (first those a config's trainer: may set); others must keep their
# default.
CONFIG_KEYS = ("max_epochs", "precision", "gradient_clip_val", "gradient_clip_algorithm", "accelerator", "devices",
               "check_val_every_n_epoch", "log_every_n_steps", "limit_train_batches", "limit_val_batches",
               "limit_test_batches", "default_root_dir", "enable_progress_bar", "enable_model_summary", "callbacks")
SUPPORTED_TRAINER_KEYS = (*CONFIG_KEYS, "limit_predict_batches", "enable_checkpointing", "num_sanity_val_steps",
                          "logger", "profiler")
# What the Trainer does with an argument left at None.
NONE_MEANS = {"max_epochs": 1000, "precision": "32-true", "gradient_clip_algorithm": "norm", "log_every_n_steps": 50,
              "limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_test_batches": 1.0,
              "limit_predict_batches": 1.0, "enable_progress_bar": True, "enable_model_summary": True,
              "enable_checkpointing": True, "num_sanity_val_steps": 2, "val_check_interval": 1.0}


def check_net_fits_data(model: nn.Module, datamodule: object, linked: bool = True) -> None:
    """Fail at construction when the net predicts another number of classes than the data has, or
    (``linked``: a config's links) the data provides a size the net (``model.net``) has no argument for."""
    net = getattr(model, "net", None)
    for source, name in DATA_TO_NET if linked and isinstance(net, nn.Module) else ():
        if hasattr(datamodule, source) and name not in inspect.signature(type(net)).parameters:
            raise ConfigError(f"model.net={type(model.net).__name__} does not fit data={type(datamodule).__name__}: "
                              f"the data provides {source} but the net takes no {name} (token sequences need "
                              "toyloops.TransformerClassifier; 2-D points need LogisticRegression or MLP)")
    model_classes, data_classes = getattr(model, "num_classes", None), getattr(datamodule, "num_classes", None)
    if not type(model).__module__.startswith("toyloops.") and None in (model_classes, data_classes):
        return  # a LightningModule of one's own, or its data, that does not say how many classes
    if model_classes is None and data_classes is not None:
        raise ConfigError(f"model={type(model).__name__} predicts values but data={type(datamodule).__name__} has "
                          f"{data_classes} classes: use model.class_path: toyloops.Classifier")
    if data_classes is None and model_classes is not None:
        raise ConfigError(f"model={type(model).__name__} does not fit data={type(datamodule).__name__}: regression "
                          "data needs model.class_path: toyloops.Regressor (and a net such as LinearRegression)")
    if model_classes != data_classes:
        raise ConfigError(f"model.num_classes={model_classes} but the data has {data_classes} classes")


def unlinkable(message: str) -> str | None:
    """jsonargparse's complaint when a link targets an argument the configured net lacks, as one line."""
    match = re.search(r"Expected key (\S+) to be in data", message)
    if not match:
        return None
    arg = match[1].rsplit(".", 1)[-1]
    return (f"model.net takes no {arg} argument, but the data links its {arg} into it: give the net that "
            "argument, or use one of toyloops' nets")


@contextmanager
def links_into_net() -> Iterator[None]:
    """Instantiating the config's objects, with the link complaint as one line, and so a class's
    ValueError from its constructor (the arguments it refuses: a project's own classes raise it)."""
    try:
        yield
    except AssertionError as err:
        if unlinkable(str(err)) is None:
            raise
        raise ConfigError(unlinkable(str(err))) from None
    except ValueError as err:  # jsonargparse raises its own, from the constructor's (through nested classes)
        refused = err
        while refused.__cause__ is not None:
            refused = refused.__cause__
        if refused is err or type(refused) is not ValueError or not str(refused).strip() or unlinkable(str(err)):
            raise
        raise ConfigError(str(refused).strip().splitlines()[0]) from refused


def check_values(config: Any) -> None:
    """Values both engines refuse, with one line naming the key: legal to the parser, but they would
    crash later, be silently replaced, or mean different things in the two engines."""
    seed = config.get("seed_everything")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed_everything={seed!r}: expected an int in [0, 2**32) (NumPy's seed range)")
    trainer = config.trainer
    for key in ("max_epochs", "check_val_every_n_epoch", "log_every_n_steps"):
        value = trainer.get(key)
        if value is not None and value < 1:
            raise ConfigError(f"trainer.{key}={value}: expected an int >= 1"
                              + (" (toy runs end: -1, 'no limit', is not offered)" if key == "max_epochs" else ""))
    clip, algorithm = trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm")
    if clip is not None and not 0 <= clip < math.inf:
        raise ConfigError(f"trainer.gradient_clip_val={clip}: expected a finite number >= 0 (0 or null: no clipping)")
    if algorithm not in (None, "norm", "value"):
        raise ConfigError(f"trainer.gradient_clip_algorithm={algorithm!r}: expected 'norm' or 'value'")
    if str(trainer.get("accelerator")) not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={trainer.get('accelerator')!r}: expected auto, cpu, gpu or cuda")
    if trainer.get("limit_train_batches") == 0:
        raise ConfigError("trainer.limit_train_batches=0 trains nothing: expected > 0")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is not None and not (0 <= value <= 1 or (value > 1 and value % 1 == 0)):
            raise ConfigError(f"trainer.{key}={value}: expected a fraction in [0, 1] or a whole number of batches")
    model = config.model.get("init_args") or config.model  # model: {class_path, init_args}
    # The tags toyloops' Classifier (with its metrics) or Regressor logs; none for a module of one's own.
    model_class = config.model.get("class_path") or "toyloops.Classifier"
    score = {"Classifier": "acc", "Regressor": "mae"}.get(model_class.rpartition(".")[2])
    tags = [] if not model_class.startswith("toyloops.") or score is None else [
        "train/loss", "train/loss_epoch", "val/loss",
        *(f"{stage}/{name}" for stage in ("train", "val") for name in (score, *(model.get("metrics") or [])))]
    monitor = (config.get("checkpoint") or {}).get("monitor")
    if monitor is not None and tags and monitor not in tags:
        raise ConfigError(f"checkpoint.monitor={monitor!r}: expected one of {', '.join(tags)}")
    for spec in as_list(trainer.get("callbacks")):
        if str(getattr(spec, "class_path", "")).endswith(".EarlyStopping") and tags:  # else Lightning fails an epoch in
            if spec.init_args.monitor not in tags:
                raise ConfigError(f"trainer.callbacks.monitor={spec.init_args.monitor!r}: EarlyStopping can monitor "
                                  f"{', '.join(tags)}")
            if spec.init_args.mode not in ("min", "max"):
                raise ConfigError(f"trainer.callbacks.mode={spec.init_args.mode!r}: expected min or max")
            check_early_stopping(spec.init_args, trainer)
    every = (config.get("last_checkpoint") or {}).get("every_n_train_steps")
    if every is not None and every < 0:
        raise ConfigError(f"last_checkpoint.every_n_train_steps={every}: expected an int >= 1 (or 0/null: off)")
    for kind in ("optimizer", "scheduler"):
        spec = model.get(kind)
        if spec is not None:
            spec = spec.as_dict() if hasattr(spec, "as_dict") else spec
            cls = resolve(spec, kind, f"model.{kind}")  # torch's own classes, plain arguments: nothing to call
            init_args = spec.get("init_args") or {}
            for key, value in init_args.items():
                if isinstance(value, float) and (not math.isfinite(value) or (key == "lr" and value < 0)):
                    raise ConfigError(f"model.{kind}.init_args.{key}={value}: expected a finite number"
                                      + (" >= 0" if key == "lr" else ""))
            try:  # torch checks its own arguments when it builds and steps one: do both now, on a stand-in
                optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)])
                if kind == "optimizer":
                    cls([torch.zeros(1, requires_grad=True)], **init_args)
                else:
                    scheduler = cls(optimizer, **init_args)
                    optimizer.step()
                    scheduler.step(0.0) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) \
                        else scheduler.step()
            except (ValueError, ZeroDivisionError, NotImplementedError) as err:
                raise ConfigError(f"model.{kind}={spec['class_path']}: {str(err) or type(err).__name__}") from None


def check_early_stopping(init_args: Any, trainer: Any) -> None:
    """EarlyStopping settings under which an epoch's end finds no value to compare (Lightning: a RuntimeError
    mid-run), refused before anything is built in both engines: a ``val/`` tag checked at every training
    epoch's end while validation runs only every few epochs. (A ``train/loss`` that an epoch too short
    never writes: :class:`~toyloops.engine.callbacks.EarlyStoppingCheck`, once the epoch's length is known.)"""
    monitor, every = init_args.monitor, trainer.get("check_val_every_n_epoch") or 1
    if monitor.startswith("val/") and init_args.get("check_on_train_epoch_end") and every > 1:
        raise ConfigError(f"trainer.callbacks.check_on_train_epoch_end=True: EarlyStopping on {monitor} would check "
                          f"at every epoch's end, but validation runs every {every} epochs "
                          "(trainer.check_val_every_n_epoch); leave it unset (it then checks after each validation)")


def check_config_file(path: str | Path, flag: str = "--config") -> None:
    """A config file (or inline YAML given as ``--config``; a sweep's ``--space``: ``flag``) is small, UTF-8, with
    each key once, a few aliases and finite numbers: checked before it is parsed (an alias bomb takes gigabytes)."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            return  # a pipe (--config <(...)) can be read once only: by the parser
        data = path.read_bytes() if path.is_file() else str(path).encode()  # a file, or inline YAML
    except OSError:
        return  # the parser reports a file it cannot read
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{flag} {path}: {len(data):,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = data.decode("utf-8")
        aliases = sum(isinstance(token, yaml.AliasToken) for token in yaml.scan(text))
        root = yaml.compose(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{flag} {path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError:
        return  # malformed YAML: the parser reports it with its position
    if aliases > MAX_CONFIG_ALIASES:
        raise ConfigError(f"{flag} {path}: {aliases} YAML aliases; a config may use at most {MAX_CONFIG_ALIASES}")
    nodes, seen = [root] if root is not None else [], set()
    while nodes:
        node = nodes.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [key.value for key, _ in node.value]
            twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
            if twice is not None:
                raise ConfigError(f"{flag} {path}: key {twice!r} appears twice in one mapping "
                                  f"(line {node.start_mark.line + 1})")
            nodes += [value for _, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            nodes += node.value
        elif node.tag == "tag:yaml.org,2002:float" and node.value.lower().lstrip("+-") in (".nan", ".inf"):
            raise ConfigError(f"{flag} {path}: {node.value} at line {node.start_mark.line + 1}: expected a "
                              "finite number")


def one_line(message: str) -> str:
    """Condense jsonargparse's nested, multi-line errors to 'key.path: what was expected/given'."""
    line = _one_line(message)
    nested = re.search(r"NestedArg\(key='([^']+)'", line)  # all it says: a class takes no such option
    return f"{line.split(':')[0]}.{nested[1]}: no such option" if nested else line


def _one_line(message: str) -> str:
    if unlinkable(message):
        return unlinkable(message)
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


def trainer_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every ``L.Trainer`` argument, ``kwargs`` over the defaults (None read as the Trainer reads it); one the
    hand trainer does not implement, given other than its default, is refused in one line."""
    for name, value in kwargs.items():
        if name not in SUPPORTED_TRAINER_KEYS and value != TRAINER_DEFAULTS.get(name, ...):
            raise ConfigError(f"trainer.{name}={value!r}: the hand trainer does not implement it; use L.Trainer")
    arguments = {name: NONE_MEANS.get(name) if value is None else value
                 for name, value in {**TRAINER_DEFAULTS, **kwargs}.items()}
    if arguments["devices"] not in (1, "1", "auto"):
        raise ConfigError(f"trainer.devices={arguments['devices']!r}: the hand trainer runs one process; use L.Trainer")
    return arguments


def as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def optimizer_and_scheduler(config: Any) -> tuple[torch.optim.Optimizer, dict[str, Any] | None]:
    """What ``configure_optimizers`` returned, read as Lightning reads it: the optimizer, and the scheduler's
    config with Lightning's defaults; what the hand trainer does not implement is refused in one line."""
    if isinstance(config, list | tuple) and len(config) == 2 and all(isinstance(c, list | tuple) for c in config):
        config = {"optimizer": config[0], "lr_scheduler": config[1]}  # ([optimizers], [schedulers])
    config = config if isinstance(config, dict) else {"optimizer": config}
    optimizers, schedulers = as_list(config["optimizer"]), as_list(config.get("lr_scheduler"))
    scheduler = {"interval": "epoch", "frequency": 1, "strict": True, "monitor": None, **(
        s if isinstance(s, dict) else {"scheduler": s})} if (s := next(iter(schedulers), None)) else None
    lacking = (f"several optimizers ({len(optimizers)}) or schedulers ({len(schedulers)})"
               if len(optimizers) != 1 or len(schedulers) > 1 else
               "LBFGS (its step calls the model again)" if isinstance(optimizers[0], torch.optim.LBFGS) else
               "lr_scheduler frequency != 1" if scheduler and scheduler["frequency"] != 1 else None)
    if lacking:
        raise ConfigError(f"configure_optimizers: {lacking} is not implemented by the hand trainer: use L.Trainer")
    return optimizers[0], scheduler


def num_batches(available: int, limit: int | float) -> int:
    """``limit_*_batches``: a whole number above 1 counts batches, one from 0 to 1 (``1.0``: all) is a fraction."""
    limit = int(limit) if isinstance(limit, float) and limit > 1 and limit.is_integer() else limit
    return min(available, limit) if isinstance(limit, int) else int(available * limit)
