"""A sweep's search space: a YAML file of config keys, each an Optuna distribution, checked as a
config file is (size, aliases, UTF-8, numbers) and refused where it would choose where anything is
written; its corners, checked against the config before any trial."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from toyloops.rules.errors import ConfigError

SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
             "categorical": {"type", "choices"}}
# Keys the sweep sets itself for every trial, and keys that choose where anything is written.
OWNED_KEYS = ("trainer.default_root_dir", "config")
WHERE = re.compile(r"(^|\.)(logger|ckpt_path|\w*dir|\w*dirpath)(\.|$)")
PRIMITIVE = (type(None), bool, int, float, str)


def read_space(path: str | Path) -> dict[str, BaseDistribution]:
    """A space YAML (a path, or a shipped name such as ``mlp``) as Optuna distributions by config key."""
    from toyloops.engine.validation import check_config_file

    shipped = Path(__file__).parent / "spaces" / f"{path}.yaml"
    path = shipped if not Path(path).is_file() and shipped.is_file() else Path(path)
    if not path.is_file():
        raise ConfigError(f"--space {path}: no such file (shipped spaces: {', '.join(shipped_spaces())})")
    check_config_file(path, "--space")
    try:
        space = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"--space {path}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"--space {path}: expected a mapping of config keys to {{type: float|int|categorical, ...}}, "
                          f"got {type(space).__name__ if space is not None else 'an empty file'}")
    return {str(key): distribution(str(key), spec, path) for key, spec in space.items()}


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent / "spaces").glob("*.yaml"))


def distribution(key: str, spec: Any, path: Path) -> BaseDistribution:
    where = f"--space {path}: {key}"
    if key in OWNED_KEYS or WHERE.search(key):
        raise ConfigError(f"{where}: chooses where the trials write, which the sweep sets itself; sweep another key")
    if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
        raise ConfigError(f"{where}={spec!r}: expected {{type: float|int|categorical, ...}}")
    kind = spec["type"]
    unknown = sorted(set(spec) - SPEC_KEYS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} for type {kind} (allowed: "
                          f"{', '.join(sorted(SPEC_KEYS[kind] - {'type'}))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices={choices!r}: expected a non-empty list")
        # Optuna stores None/bool/int/float/str; a list choice ([64, 64]) is stored as its JSON text.
        encoded = [c if isinstance(c, PRIMITIVE) else json.dumps(c) for c in choices]
        if len(set(map(json.dumps, encoded))) != len(encoded):
            raise ConfigError(f"{where}.choices={choices!r}: a choice appears twice")
        return CategoricalDistribution(encoded)
    number = float if kind == "float" else int
    values = {}
    for field in ("low", "high", *(["step"] if spec.get("step") is not None else [])):
        value = spec.get(field)
        if isinstance(value, str) and re.fullmatch(r"[-+]?[\d.]+[eE][-+]?\d+", value):  # YAML 1.1: 1e-3, 1.0e300
            mantissa, _, power = value.lower().partition("e")
            raise ConfigError(f"{where}.{field}={value!r}: YAML reads {value} as a string (write {mantissa}"
                              f"{'' if '.' in mantissa else '.0'}e{'' if power[0] in '+-' else '+'}{power})")
        if isinstance(value, bool) or not isinstance(value, (int, number)) or not math.isfinite(value):
            raise ConfigError(f"{where}.{field}={value!r}: expected "
                              f"{'a finite number' if number is float else 'an int'}")
        values[field] = number(value)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log={log!r}: expected true or false")
    try:  # Optuna's own rules: low <= high, low > 0 on a log scale, step > 0 and not with log
        return (FloatDistribution if kind == "float" else IntDistribution)(
            values["low"], values["high"], log=log, step=values.get("step", None if kind == "float" else 1))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    """Optuna's ``suggest_*`` for one key (a retried trial gets its fixed value back)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    number = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
    return number(key, dist.low, dist.high, step=dist.step, log=dist.log)


def as_args(params: dict[str, Any]) -> list[str]:
    """``--key value`` per parameter, as the config parser reads them (lists as YAML/JSON text)."""
    return [a for key, v in params.items() for a in (f"--{key}", v if isinstance(v, str) else json.dumps(v))]


def corners(space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """Parameter sets that together use every categorical choice and both ends of every range."""
    count = max([2] + [len(d.choices) for d in space.values() if isinstance(d, CategoricalDistribution)])
    return [{key: d.choices[i % len(d.choices)] if isinstance(d, CategoricalDistribution)
             else (d.low if i % 2 == 0 else d.high) for key, d in space.items()} for i in range(count)]


def check_corners(name: str, space: dict[str, BaseDistribution], config: Any,
                  build: Callable[[list[str]], Any]) -> None:
    """``build`` (the sweep's config check) with each corner's ``--key value`` pairs, before any trial: a bad
    key or value is one line; ``config`` (the parsed config without the space) names what a section takes."""
    from toyloops.engine import runs

    keys = {key.replace(".init_args", "") for key in runs.flat(config)}
    for params in corners(space):
        try:
            build(as_args(params))
        except Exception as err:
            message = runs.user_message(err, [], lambda line: line)
            if message is None:  # a bug: its traceback
                raise
            unknown = next((key for key in space if key.replace(".init_args", "") not in keys), None)
            if unknown:  # jsonargparse names an unknown key, but not what its section takes
                parent = unknown.rpartition(".")[0]
                known = [k.rpartition(".")[2] for k in sorted(keys) if k.rpartition(".")[0] == parent.replace(
                    ".init_args", "")] or ["no such section"]
                message = f"{unknown}: no such key ({parent} takes: {', '.join(known)})"
            raise ConfigError(f"--space {name}: a trial's config is not valid with {json.dumps(params)}: "
                              f"{message}") from None
