"""What both engines read the same way from a run config: links, template defaults, types."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable

import torch

from toyloops.errors import ConfigError

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
SchedulerCallable = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

LOG_DIR = "logs"
LOG_EVERY_N_STEPS = 10
MONITOR, MONITOR_MODE = "val/acc", "max"

# Facts the data module owns -> where the model takes them. A data module that lacks a fact
# (sequences have no num_features) leaves that link out, so one list serves every net.
DATA_TO_MODEL = (
    ("num_classes", "model.num_classes"),
    ("num_classes", "model.net.init_args.num_classes"),
    ("num_features", "model.net.init_args.in_features"),
    ("vocab_size", "model.net.init_args.vocab_size"),
    ("seq_len", "model.net.init_args.seq_len"),
)


def default_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """AdamW with PyTorch's defaults (a config normally names its own)."""
    return torch.optim.AdamW(params)


def add_links(parser) -> None:  # noqa: ANN001 - a jsonargparse ArgumentParser
    """Link the seed and the data's facts into the model, as both engines do."""
    parser.link_arguments("seed_everything", "data.init_args.seed")  # one seed drives everything
    for source, target in DATA_TO_MODEL:
        parser.link_arguments(f"data.{source}", target, apply_on="instantiate")


def check_net_fits_data(net: object, datamodule: object) -> None:
    """Fail at construction when the data provides a size the net has no argument for.

    (Sequence data with an MLP would otherwise fail at the first step with a dtype error.)
    """
    params = inspect.signature(type(net)).parameters
    for source, target in DATA_TO_MODEL:
        name = target.rsplit(".", 1)[-1]
        if target.startswith("model.net.") and hasattr(datamodule, source) and name not in params:
            raise ConfigError(
                f"model.net={type(net).__name__} does not fit data={type(datamodule).__name__}: the data provides "
                f"{source} but the net takes no {name} (token sequences need toyloops.TransformerClassifier; "
                "2-D points need LogisticRegression or MLP)"
            )


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
