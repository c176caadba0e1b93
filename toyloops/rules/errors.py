"""The errors toyloops reports to a user as one line (the entry points print them and exit non-zero).

Anything else that escapes a run is a bug and keeps its traceback (see :func:`toyloops.engine.runs.main`).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

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
        raise NonFiniteLossError(f"loss is {value} at step {step} (epoch {epoch}); training stopped before that step's "
                                 "update. Lower the learning rate or clip gradients (trainer.gradient_clip_val).")
    return value


def check_positive(name: str, value: float) -> None:
    """A ConfigError naming ``name`` unless ``value`` > 0."""
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def checked(cls: type, **values: Any) -> dict[str, Any]:
    """``values``, the constructor arguments of ``cls`` by name, each of its annotated plain type
    (numbers, booleans, strings, choices, lists of them, None; as any ``__init__`` of its classes
    annotates it); else a ConfigError naming the argument, its value, its type and what is allowed.
    Arguments of other types (a net, a tensor, a factory) are left to the code that uses them."""
    ours = [klass for klass in cls.__mro__ if klass.__module__.split(".")[0] not in ("lightning", "torch", "builtins")]
    hints = {name: hint for klass in reversed(ours) if "__init__" in vars(klass)
             for name, hint in typing.get_type_hints(klass.__init__).items()}
    owner = cls.__name__
    for name, value in values.items():
        if name in hints and not fits(value, hints[name]):
            raise ConfigError(f"{owner}.{name}={value!r} ({type(value).__name__}): expected {allowed(hints[name])}")
    return values


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the plain type ``hint`` (an int is a float; a bool is not an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin in (list, Sequence) or hint in (list, Sequence):
        return isinstance(value, (list, tuple)) and all(fits(item, args[0]) for item in value if args)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if hint in (bool, str, type(None)):
        return isinstance(value, hint)
    return True


def allowed(hint: Any) -> str:
    """A type hint as the message names it: ``int or None``, ``one of 'epoch', 'step'``, ``list of float``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(allowed(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, Sequence):
        return f"a list of {allowed(args[0])}"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))
