"""The errors toyloops reports to a user as one line (the entry points print them and exit non-zero).

Anything else that escapes a run is a bug and keeps its traceback (see :func:`toyloops.runs.main`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ToyloopsError(Exception):
    """Base of the errors a user can act on; the message names the key, the value and what is allowed."""


class ConfigError(ToyloopsError, ValueError):
    """A config or command-line value the run cannot use; the message names it and what is allowed."""


class NonFiniteLossError(ToyloopsError, RuntimeError):
    """The training loss became NaN or infinite; training stopped before the step that would use it."""


def check_finite(loss: torch.Tensor, step: int, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` for a NaN/Inf loss, before it reaches the weights."""
    if not loss.isfinite().item():  # one host sync a step: free on CPU, ~10 us on a GPU
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {step} (epoch {epoch}); training stopped before that step's "
            "update. Lower the learning rate or clip gradients (trainer.gradient_clip_val)."
        )
