"""The errors toyloops reports to a user as one line (the entry points print them and exit non-zero).

Anything else that escapes a run is a bug and keeps its traceback (see :func:`toyloops.engine.runs.main`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ToyloopsError(Exception):
    """Base of the errors a user can act on; the message names the key, the value and what is allowed."""


class ConfigError(ToyloopsError, ValueError):
    """A config or command-line value the run cannot use; the message names it and what is allowed."""


class NonFiniteLossError(ToyloopsError, RuntimeError):
    """The training loss became NaN or infinite; training stopped before the step that would use it."""


def check_finite(loss: torch.Tensor, step: int, epoch: int) -> float:
    """The loss as a number; :class:`NonFiniteLossError` for a NaN/Inf one, before it reaches the weights."""
    value = loss.item()  # one host sync a step, and a single op (a tensor check would be several)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss is {value} at step {step} (epoch {epoch}); training stopped before that step's "
            "update. Lower the learning rate or clip gradients (trainer.gradient_clip_val)."
        )
    return value


def check_positive(name: str, value: float) -> None:
    """A ConfigError naming ``name`` unless ``value`` > 0."""
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
