"""Nets, optimizers and schedulers as plain data (``class_path`` + ``init_args``), and the one rule for reading
them back: a checkpoint is data (``weights_only=True``), so nothing it names is imported or called unless allowed
here: toyloops' nets, those a project registers with :func:`allow_net`, torch's optimizers and schedulers.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from toyloops.rules.errors import ConfigError

__all__ = ["allow_net"]

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
SchedulerCallable = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

NOT_STORED = "not stored: a function, not a class"  # stands for a factory a checkpoint cannot hold
# Schedulers whose arguments are functions or other schedulers: not expressible as plain data.
CALLABLE_SCHEDULERS = ("LambdaLR", "MultiplicativeLR", "CyclicLR", "SequentialLR", "ChainedScheduler")
SPEC_KEYS = ("net", "optimizer", "scheduler")  # hyperparameters that name a class
LEGACY_HPARAM_KEYS = ("hparams", "module_arguments")  # older Lightning's names for hyper_parameters
FUSED_BY_DEFAULT = ("Adam", "AdamW")  # built fused unless the config says otherwise (both engines)

ALLOWED_NETS: dict[str, type[nn.Module]] = {}  # class path -> class; filled by allow_net


def allow_net(cls: type[nn.Module], *aliases: str) -> type[nn.Module]:
    """Let checkpoints rebuild ``cls`` (a net of your project, recording its constructor arguments in
    ``self.init_args``) from their hyperparameters; ``aliases``: further class paths. A class decorator too."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"allow_net({cls!r}): expected an nn.Module subclass")
    for path in (f"{cls.__module__}.{cls.__qualname__}", *aliases):
        ALLOWED_NETS[path] = cls
    return cls


def factory_class(factory: Any) -> type | None:
    """The class a factory builds: itself, or the class inside ``functools.partial(cls, ...)``
    (jsonargparse's partials hold it as their first argument, behind a function of its own)."""
    if isinstance(factory, type):
        return factory
    if isinstance(factory, functools.partial):
        return next((a for a in (factory.func, *factory.args) if isinstance(a, type)), None)
    return None


def describe(obj: Any) -> dict[str, Any] | None:
    """A factory or net as plain data, or None if it has none (a lambda; a net without ``init_args``)."""
    if obj is None or isinstance(obj, dict):
        return obj
    if isinstance(obj, functools.partial | type):
        cls, kwargs = factory_class(obj), getattr(obj, "keywords", {})
    else:
        cls, kwargs = type(obj), getattr(obj, "init_args", None)
    if cls is None or kwargs is None:
        return None
    path = f"{cls.__module__}.{cls.__qualname__}"
    short = next((p for p, c in ALLOWED_NETS.items() if c is cls and p.count(".") == 1), None)
    for home in (torch.optim, torch.optim.lr_scheduler):  # the documented name: torch.optim.AdamW
        if getattr(home, cls.__name__, None) is cls:
            path = f"{home.__name__}.{cls.__name__}"
    return {"class_path": short or path, "init_args": dict(kwargs)}


def resolve(spec: Any, kind: str, where: str) -> type:
    """The class a spec names, if allowed for ``kind`` (net, optimizer, scheduler); else a ConfigError.
    Nothing is imported: optimizers and schedulers are attributes of torch's own modules."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(f"{where}: expected {{class_path, init_args}}, got {type(spec).__name__}")
    path = spec["class_path"]
    module, _, name = path.rpartition(".")
    if kind == "net":
        cls, allowed = ALLOWED_NETS.get(path), f"one of {', '.join(sorted(ALLOWED_NETS))} (see allow_net)"
        if cls is None and module == "toyloops":  # the package's name for its net, as 0.1's checkpoints store it
            cls = next((c for c in ALLOWED_NETS.values() if c.__module__.startswith("toyloops.") and
                        c.__name__ == name), None)
    else:
        home, base = ((torch.optim, torch.optim.Optimizer) if kind == "optimizer" else
                      (torch.optim.lr_scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                                  torch.optim.lr_scheduler.ReduceLROnPlateau)))
        cls = getattr(home, name, None) if module == home.__name__ and name not in CALLABLE_SCHEDULERS else None
        cls = cls if isinstance(cls, type) and issubclass(cls, base) else None
        allowed = f"a class of {home.__name__}" + (f" other than {', '.join(CALLABLE_SCHEDULERS)}"
                                                   if kind == "scheduler" else "")
    if cls is None:
        raise ConfigError(f"{where}.class_path={path!r} is not allowed: expected {allowed}")
    check_plain(spec.get("init_args") or {}, f"{where}.init_args")
    return cls


def build(spec: dict[str, Any] | None, kind: str, where: str) -> Any:
    """The factory (optimizer, scheduler) or the object (net) a spec describes."""
    if spec is None:
        return None
    factory = functools.partial(resolve(spec, kind, where), **(spec.get("init_args") or {}))
    return factory() if kind == "net" else factory


def check_plain(value: Any, where: str) -> None:
    """Numbers, booleans, None, strings that are not import paths, and lists/dicts of them."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif isinstance(value, str) and "." in value and all(part.isidentifier() for part in value.split(".")):
        raise ConfigError(f"{where}={value!r}: a stored value may not name Python code")
    elif not isinstance(value, (bool, int, float, str, type(None))):
        raise ConfigError(f"{where}: {type(value).__name__} is not a plain value")


def fusing_allowed(precision: object, gradient_clip_val: float | None) -> bool:
    """A fused optimizer unscales its own gradients, which Lightning refuses to clip under mixed precision."""
    return not (gradient_clip_val and str(precision) in ("16-mixed", "bf16-mixed"))


def build_optimizer(factory: OptimizerCallable, params: Iterable, fused: bool = True) -> torch.optim.Optimizer:
    """``factory(params)``, fused for Adam/AdamW when the factory sets neither ``fused`` nor
    ``foreach`` (None, as jsonargparse fills them in, is not setting them), asks for no
    ``differentiable`` step and ``fused`` (:func:`fusing_allowed`) allows it."""
    params = list(params)
    cls, given = factory_class(factory), factory.keywords if isinstance(factory, functools.partial) else {}
    chosen = {key for key in ("fused", "foreach") if given.get(key) is not None}
    if given.get("fused") and not fused:  # Lightning would stop at the first clip with a RuntimeError
        raise ConfigError("model.optimizer.init_args.fused=True: a fused optimizer cannot have its gradients "
                          "clipped under 16-mixed/bf16-mixed; set fused: false or trainer.gradient_clip_val: null")
    devices = {t.device.type for p in params for t in (p["params"] if isinstance(p, dict) else [p])}
    if isinstance(cls, type) and cls.__name__ in FUSED_BY_DEFAULT and cls.__module__.startswith("torch.optim") \
            and fused and not chosen and not given.get("differentiable") and devices <= {"cpu", "cuda"}:
        return factory(params, fused=True)
    return factory(params)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Any checkpoint as plain data; a missing, truncated or hostile file is a ConfigError naming it."""
    if isinstance(path, str | os.PathLike) and os.path.exists(path) and not os.path.isdir(path) \
            and not os.path.isfile(path):  # a pipe's open would block; a file object is read as given
        raise ConfigError(f"ckpt_path={str(path)!r} is not a regular file (a pipe, socket or device): expected a "
                          "checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"ckpt_path={str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"ckpt_path={str(path)!r} is a folder, not a checkpoint file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        weights_only = str(err).startswith("Weights only load failed")
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), None)
        if weights_only and detail:  # a pickle that names code to run
            reason = f"refused, it needs code to load: {detail.split('. ')[0]}"
        elif weights_only:  # torch's own advice fills the first lines; the cause comes after them
            cause = next((line for line in lines if line.startswith("Unsupported") or "load key" in line),
                         "not plain data")
            reason = f"{type(err).__name__}: {cause}"
        else:
            reason = f"{type(err).__name__}: {lines[0] if lines else 'empty or truncated file'}"
        raise ConfigError(f"ckpt_path={str(path)!r} is not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"ckpt_path={str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def read_checkpoint(path: str | Path, given: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model checkpoint (either engine's, or a plain Trainer's), checked before anything is built from it:
    plain data, weights, hyperparameters naming allowed classes (``given``: the ones the caller passes)."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"ckpt_path={str(path)!r} has no state_dict: not a Lightning or toyloops checkpoint "
                          "(a bare state_dict loads with model.net.load_state_dict)")
    for key in [k for k in ("hyper_parameters", *LEGACY_HPARAM_KEYS) if k in checkpoint]:  # Lightning merges them
        if not isinstance(checkpoint[key], dict):
            raise ConfigError(f"ckpt_path={str(path)!r}: its {key} are not a mapping")
        for name, value in [(n, v) for n, v in checkpoint[key].items() if n not in given]:
            where = f"ckpt_path={str(path)!r}: {key}.{name}"
            if name == "_class_path":  # which LightningModule wrote it: LightningCLI parses the rest into that
                if not isinstance(value, str) or not imported_subclass(value, L.LightningModule):
                    raise ConfigError(f"{where}={value!r}: expected an imported LightningModule class")
                continue
            if name in SPEC_KEYS and value not in (None, NOT_STORED):
                resolve(value, name, where)
            else:
                check_plain(value, where)
    check_structure(checkpoint, path)
    net = (checkpoint.get("hyper_parameters") or {}).get("net")
    if isinstance(net, dict) and "net" not in given:
        check_sizes(net, checkpoint["state_dict"], path)
    version = checkpoint.get("pytorch-lightning_version", "0")
    if not (isinstance(version, str) and re.fullmatch(r"\d+(\.\d+)*(\S*)", version)):
        raise ConfigError(f"ckpt_path={str(path)!r}: its pytorch-lightning_version {version!r} is not a version")
    return checkpoint


# What a resume or an evaluation reads, by the type it must have: Lightning's keys, toyloops' own
# section and its parts (an int where a count is read, a tensor where a state is).
STRUCTURE = {"": {"state_dict": dict, "optimizer_states": list, "lr_schedulers": list, "loops": dict, "callbacks": dict,
                  "epoch": int, "global_step": int, "toyloops": dict},
             "toyloops": {"engine": str, "rng": dict, "loop": dict, "data": dict},
             "toyloops.rng": {"torch": torch.Tensor, "cuda": list, "python": (list, tuple), "numpy": (list, tuple)},
             "toyloops.loop": {"epoch": int, "global_step": int, "callback_metrics": dict},
             "toyloops.data": {"epoch": int, "batches_done": int}}


def check_structure(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Each section a resume or an evaluation reads is of its type (:data:`STRUCTURE`, optimizer and scheduler
    states mappings, a data module's names to tensors); else a ConfigError naming section, type and expected."""
    def refuse(where: str, value: Any, expected: Any) -> None:
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise ConfigError(f"ckpt_path={str(path)!r}: its {where} is a {type(value).__name__}, expected {names}")

    for prefix, types in STRUCTURE.items():
        part = functools.reduce(lambda node, key: node.get(key, {}) if isinstance(node, dict) else {},
                                prefix.split(".") if prefix else [], checkpoint)
        for key, expected in types.items():
            if isinstance(part, dict) and key in part and (not isinstance(part[key], expected) or (
                    expected is int and isinstance(part[key], bool))):
                refuse(f"{prefix}.{key}".lstrip("."), part[key], expected)
    for key in ("optimizer_states", "lr_schedulers"):
        for i, item in enumerate(checkpoint.get(key) or []):
            if not isinstance(item, dict):
                refuse(f"{key}[{i}]", item, dict)
    for key, state in checkpoint.items():
        if key.endswith("DataModule") and not (isinstance(state, dict) and all(
                isinstance(value, torch.Tensor) for value in state.values())):
            refuse(f"{key} state", state, dict)


def check_sizes(spec: dict[str, Any], state: dict[str, Any], path: str | Path) -> None:
    """The stored net's sizes agree with the checkpoint's tensors, checked on the ``meta`` device
    (shapes without memory) before any net is built: a stored size cannot decide an allocation."""
    with torch.device("meta"):
        expected = {f"net.{name}": tensor.shape for name, tensor in build(spec, "net", "net").state_dict().items()}
    for name, shape in expected.items():
        stored = state.get(name)
        if not isinstance(stored, torch.Tensor) or stored.shape != shape:
            got = tuple(stored.shape) if isinstance(stored, torch.Tensor) else "missing"
            raise ConfigError(f"ckpt_path={str(path)!r}: hyper_parameters.net says {name} is {tuple(shape)}, "
                              f"its weights hold {got}")


def imported_subclass(path: str, base: type) -> bool:
    """Whether ``path`` names a subclass of ``base`` in a module already imported, or in toyloops' own
    package (the only code this imports)."""
    module, _, name = path.rpartition(".")
    if module.split(".")[0] == "toyloops" and module not in sys.modules and importlib.util.find_spec(module):
        importlib.import_module(module)
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and issubclass(cls, base)


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """0.1's model hyperparameters as today's models take them: 0.1 had one Classifier whose
    ``objective: regression`` is today's Regressor, which keeps only what it takes (net, optimizer, ...)."""
    regression = hparams.get("objective") == "regression"
    keep = (*SPEC_KEYS, "scheduler_interval", "decay_biases") if regression else hparams
    module = "toyloops.core.regressor.Regressor" if regression else "toyloops.core.classifier.Classifier"
    return {"_class_path": module, **{key: value for key, value in hparams.items()
                                      if key in keep and key != "objective"}}


def checked_for_loading(checkpoint_path: Any, kwargs: dict[str, Any]) -> Any:
    """What a LightningModule's ``load_from_checkpoint`` may read, after :func:`read_checkpoint`
    checked it (a file object is read once and checked as bytes); sets ``weights_only=True`` in
    ``kwargs``. ``weights_only=False`` skips the check, at the caller's own risk."""
    if kwargs.get("weights_only") is False:
        return checkpoint_path
    if kwargs.get("hparams_file"):
        raise ConfigError("hparams_file is not supported: a checkpoint carries its own hyperparameters")
    if not isinstance(checkpoint_path, (str, Path)):
        checkpoint_path = io.BytesIO(checkpoint_path.read())
    read_checkpoint(checkpoint_path, given=tuple(kwargs))
    if isinstance(checkpoint_path, io.BytesIO):
        checkpoint_path.seek(0)
    kwargs["weights_only"] = True
    return checkpoint_path


def check_data_settings(path: str | Path, name: str, names: set[str], optional: set[str]) -> None:
    """The checkpoint's data-module settings are plain data and exactly ``names`` (less any of
    ``optional``, which a checkpoint may lack); else a ConfigError saying it holds no ``name``."""
    settings = load_checkpoint(path).get("datamodule_hyper_parameters")
    if not isinstance(settings, dict) or not set(settings) <= names or names - set(settings) - optional:
        raise ConfigError(f"ckpt_path={str(path)!r} holds no {name}: it was trained on other data, or without a "
                          "data module")
    check_plain(settings, "datamodule_hyper_parameters")
