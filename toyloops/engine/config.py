"""What both engines read the same way from a run config: links, template defaults, and the
optimizer/scheduler/net specs (``class_path`` + ``init_args``) a checkpoint stores as plain data.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from toyloops.core import nets as models
from toyloops.core.errors import ConfigError

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
SchedulerCallable = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

LOG_DIR = "logs"
MONITOR, MONITOR_MODE = "val/acc", "max"
# Template defaults for Lightning's own keys, set on both engines' parsers.
TRAINER_DEFAULTS = {"seed_everything": 0, "trainer.log_every_n_steps": 10}
# Defaults chosen by measurement (benchmarks/RESULTS.md, "Defaults"): the training progress bar
# redraws at most twice a second and at each epoch's last batch (toyloops.engine.callbacks.ProgressBar;
# a redraw costs ~1 ms: every step, ~200 us a step; every 10th step, still ~100 us);
PROGRESS_BAR_MIN_INTERVAL_S = 0.5
PROGRESS_BAR_REFRESH_RATE = TRAINER_DEFAULTS["trainer.log_every_n_steps"]  # the other bars (validation ...)
# torch.optim.Adam/AdamW are built with fused=True unless a config sets fused or foreach (a
# 20-35% cheaper step for these nets; both engines build the optimizer here, so they stay identical);
FUSED_BY_DEFAULT = ("Adam", "AdamW")
# and one torch thread unless TOYLOOPS_THREADS (or OMP_NUM_THREADS) says otherwise: two OpenMP
# threads on a shared 2-core machine wait on each other, 5-25x slower a step.
THREADS_ENV = "TOYLOOPS_THREADS"

# Facts the data module owns -> where the net takes them. A data module that lacks a fact
# (sequences have no num_features) leaves that link out, so one list serves every net.
DATA_TO_NET = (
    ("num_classes", "num_classes"),
    ("num_features", "in_features"),
    ("vocab_size", "vocab_size"),
    ("seq_len", "seq_len"),
)

# What a stored spec may name: toyloops' nets and torch's optimizers and schedulers, found as
# attributes of modules that are already imported (nothing named in a checkpoint is imported).
SPEC_HOMES = {
    "net": (("toyloops", "toyloops.core.nets"), models, nn.Module),
    "optimizer": (("torch.optim",), torch.optim, torch.optim.Optimizer),
    "scheduler": (("torch.optim.lr_scheduler",), torch.optim.lr_scheduler,
                  (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)),
}
# Schedulers whose arguments are functions or other schedulers: not expressible as plain data.
MAX_CONFIG_BYTES, MAX_CONFIG_ALIASES = 1_000_000, 20  # 20 aliases expand a file 5**4 times at most
CALLABLE_SCHEDULERS = ("LambdaLR", "MultiplicativeLR", "CyclicLR", "SequentialLR", "ChainedScheduler")
NETS = ("LogisticRegression", "LinearRegression", "MLP", "TransformerClassifier")
NOT_STORED = "not stored: a function, not a class"  # stands for a factory a checkpoint cannot hold


def add_links(parser, net_key: str = "model.net.init_args") -> None:  # noqa: ANN001 - a jsonargparse parser
    """Link the seed and the data's facts into the net, as both engines do."""
    parser.link_arguments("seed_everything", "data.init_args.seed")  # one seed drives everything
    for source, target in DATA_TO_NET:
        parser.link_arguments(f"data.{source}", f"{net_key}.{target}", apply_on="instantiate")


def check_net_fits_data(model: nn.Module, datamodule: object, linked: bool = True) -> None:
    """Fail at construction when the net predicts another number of classes than the data has, or
    (``linked``: a config's links) the data provides a size the net has no argument for."""
    params = inspect.signature(type(model.net)).parameters
    for source, name in DATA_TO_NET if linked else ():
        if hasattr(datamodule, source) and name not in params:
            raise ConfigError(
                f"model.net={type(model.net).__name__} does not fit data={type(datamodule).__name__}: the data "
                f"provides {source} but the net takes no {name} (token sequences need toyloops.TransformerClassifier; "
                "2-D points need LogisticRegression or MLP)"
            )
    data_classes = getattr(datamodule, "num_classes", None)
    if (model.objective == "regression") != (data_classes is None):
        raise ConfigError(f"model.objective={model.objective} does not fit data={type(datamodule).__name__}: "
                          "regression data needs model.objective=regression (and a net such as "
                          "toyloops.LinearRegression), class data model.objective=classification")
    if model.num_classes != data_classes:
        raise ConfigError(f"model.num_classes={model.num_classes} but the data has {data_classes} classes")


@contextmanager
def links_into_net() -> Iterator[None]:
    """jsonargparse asserts when a link targets an argument the configured net lacks: say which."""
    try:
        yield
    except AssertionError as err:
        match = re.fullmatch(r"Expected key (\S+) to be in data", str(err).strip())
        if not match:
            raise
        arg = match[1].rsplit(".", 1)[-1]
        raise ConfigError(f"model.net takes no {arg} argument, but the data links its {arg} into it: give the net "
                          "that argument, or use one of toyloops' nets") from None


def apply_thread_policy() -> int:
    """Set torch's intra-op threads from ``TOYLOOPS_THREADS``; 1 when neither it nor
    ``OMP_NUM_THREADS`` is set (torch reads the latter itself). Returns the number in use."""
    value = os.environ.get(THREADS_ENV)
    if value is None:
        if "OMP_NUM_THREADS" in os.environ:
            return torch.get_num_threads()
        value = "1"
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(f"{THREADS_ENV}={value!r}: expected a whole number of threads >= 1")
    torch.set_num_threads(int(value))
    return int(value)


def fusing_allowed(precision: object, gradient_clip_val: float | None) -> bool:
    """Whether a run may train with a fused optimizer: not under mixed precision with gradient
    clipping, where Lightning refuses an optimizer that unscales its own gradients (both engines
    ask this, so they build the same optimizer)."""
    return not (gradient_clip_val and str(precision) in ("16-mixed", "bf16-mixed"))


def build_optimizer(factory: OptimizerCallable, params: Iterable, fused: bool = True) -> torch.optim.Optimizer:
    """``factory(params)``, with ``fused=True`` for the classes in FUSED_BY_DEFAULT when the
    factory (a class or a partial of one) sets neither ``fused`` nor ``foreach`` nor asks for a
    ``differentiable`` step, which torch does not fuse (None, which
    jsonargparse writes for every argument a config leaves out, is not setting them) and
    ``fused`` (:func:`fusing_allowed`) allows it."""
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


def keep_built_implementation(optimizer: torch.optim.Optimizer) -> None:
    """After ``optimizer.load_state_dict``: each group's ``fused`` and ``foreach`` as this run built
    them (:func:`build_optimizer`), not as the checkpoint's run did. ``load_state_dict`` takes the
    saved groups whole, so an unfused checkpoint (one saved before Adam/AdamW were fused, or with
    fused: false) made the step unfused in an optimizer built fused, which tells a GradScaler it
    unscales its own gradients: under 16-mixed, an AssertionError at the first step."""
    for group in optimizer.param_groups:
        for key in ("fused", "foreach"):
            if key in optimizer.defaults and key in group:
                group[key] = optimizer.defaults[key]


def is_log_step(global_step: int, log_every_n_steps: int) -> bool:
    """The steps whose training loss is logged (Lightning's logger connector writes on these)."""
    return (global_step + 1) % log_every_n_steps == 0


def factory_class(factory: Any) -> type | None:
    """The class a factory builds: itself, or the class inside ``functools.partial(cls, ...)``
    (jsonargparse's partials hold it as their first argument, behind a function of its own)."""
    if isinstance(factory, type):
        return factory
    if isinstance(factory, functools.partial):
        return next((a for a in (factory.func, *factory.args) if isinstance(a, type)), None)
    return None


def describe(obj: Any) -> dict[str, Any] | None:
    """A factory or toyloops net as plain data (``class_path`` + ``init_args``), or None if it has none.

    Understands a class, ``functools.partial(cls, **kwargs)`` (what jsonargparse builds from a
    config), a spec dict, and a net that records its ``init_args`` (every toyloops net does).
    """
    if obj is None or isinstance(obj, dict):
        return obj
    if isinstance(obj, functools.partial | type):
        cls, kwargs = factory_class(obj), getattr(obj, "keywords", {})
    else:
        cls, kwargs = type(obj), getattr(obj, "init_args", None)
    if cls is None or kwargs is None:
        return None
    path = f"{cls.__module__}.{cls.__qualname__}"
    for (public, *_), home, _ in SPEC_HOMES.values():  # prefer the documented name: torch.optim.AdamW
        if getattr(home, cls.__name__, None) is cls:
            path = f"{public}.{cls.__name__}"
    return {"class_path": path, "init_args": dict(kwargs)}


def resolve(spec: dict[str, Any], kind: str, where: str) -> type:
    """The class a spec names, if it is on the allow-list for ``kind``; a ConfigError otherwise.

    Its ``init_args`` must be plain values. Nothing is imported: a name resolves only to an
    attribute of toyloops.core.nets, torch.optim or torch.optim.lr_scheduler.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(f"{where}: expected {{class_path, init_args}}, got {type(spec).__name__}")
    modules, home, base = SPEC_HOMES[kind]
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(home, name, None) if module in modules else None
    if not (isinstance(cls, type) and issubclass(cls, base)) or name in CALLABLE_SCHEDULERS \
            or (kind == "net" and name not in NETS):
        allowed = f"one of {', '.join(NETS)}" if kind == "net" else f"a class of {modules[-1]}" + (
            f" other than {', '.join(CALLABLE_SCHEDULERS)}" if kind == "scheduler" else "")
        raise ConfigError(f"{where}.class_path={spec['class_path']!r} is not allowed: expected {allowed}")
    check_plain(spec.get("init_args") or {}, f"{where}.init_args")
    return cls


def build(spec: dict[str, Any] | None, kind: str, where: str) -> Callable | None:
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
    tags = metric_tags(config.model.get("metrics") or [], config.model.get("objective") or "classification")
    monitor = (config.get("checkpoint") or {}).get("monitor")
    if monitor is not None and monitor not in tags:
        raise ConfigError(f"checkpoint.monitor={monitor!r}: expected one of {', '.join(tags)}")
    callbacks = trainer.get("callbacks") or []
    for spec in callbacks if isinstance(callbacks, list) else [callbacks]:
        if str(getattr(spec, "class_path", "")).endswith(".EarlyStopping"):
            check_early_stopping(spec.init_args, tags)
    every = (config.get("last_checkpoint") or {}).get("every_n_train_steps")
    if every is not None and every < 0:
        raise ConfigError(f"last_checkpoint.every_n_train_steps={every}: expected an int >= 1 (or 0/null: off)")
    for kind in ("optimizer", "scheduler"):
        spec = config.model.get(kind)
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


def metric_tags(metrics: Iterable[str], objective: str = "classification") -> list[str]:
    """The tags a Classifier with these ``model.metrics`` logs in training, in both engines."""
    score = "acc" if objective == "classification" else "mae"
    return ["train/loss", "train/loss_epoch", "val/loss",
            *(f"{stage}/{name}" for stage in ("train", "val") for name in (score, *metrics))]


def check_early_stopping(settings: Any, tags: list[str]) -> None:
    """EarlyStopping must monitor a tag the Classifier logs (``tags``), in a direction it knows
    (Lightning would find out an epoch into training, with a traceback)."""
    if settings.monitor not in tags:
        raise ConfigError(f"trainer.callbacks.monitor={settings.monitor!r}: EarlyStopping can monitor "
                          f"{', '.join(tags)}")
    if settings.mode not in ("min", "max"):
        raise ConfigError(f"trainer.callbacks.mode={settings.mode!r}: expected min or max")


def check_config_file(path: str | Path) -> None:
    """A config file (or inline YAML given as ``--config``) is small, UTF-8, with each key once, a
    few aliases and finite numbers. Checked before it is parsed: a 451-byte alias bomb expands to
    gigabytes.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            return  # a pipe (--config <(...)) can be read once only: by the parser
        data = path.read_bytes() if path.is_file() else str(path).encode()  # a file, or inline YAML
    except OSError:
        return  # the parser reports a file it cannot read
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path}: {len(data):,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = data.decode("utf-8")
        aliases = sum(isinstance(token, yaml.AliasToken) for token in yaml.scan(text))
        root = yaml.compose(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError:
        return  # malformed YAML: the parser reports it with its position
    if aliases > MAX_CONFIG_ALIASES:
        raise ConfigError(f"--config {path}: {aliases} YAML aliases; a config may use at most {MAX_CONFIG_ALIASES}")
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
                raise ConfigError(f"--config {path}: key {twice!r} appears twice in one mapping "
                                  f"(line {node.start_mark.line + 1})")
            nodes += [value for _, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            nodes += node.value
        elif node.tag == "tag:yaml.org,2002:float" and node.value.lower().lstrip("+-") in (".nan", ".inf"):
            raise ConfigError(f"--config {path}: {node.value} at line {node.start_mark.line + 1}: expected a "
                              "finite number")


def with_config_files(message: str, args: list[str]) -> str:
    """Name the config file(s) in a YAML syntax error, which jsonargparse reports without them."""
    if "parsing config" not in message:
        return message
    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]
    return f"{message} (in {', '.join(files)})" if files else message


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
