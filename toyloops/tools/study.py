"""A sweep's Optuna study: its objectives (the config's monitor and mode, or ``--objective``/``--direction``),
its sampler, its storage (a journal file, repaired or refused before Optuna appends to it, or an RDB), and the
record that binds a sweep name to its config, space and objectives; Optuna's plots of it."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import MONITOR, MONITOR_MODE
from toyloops.rules.errors import ConfigError

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PARAMS = "params"  # an objective no run logs: the model's parameter count, read at each epoch end


class Objective(NamedTuple):
    name: str  # checkpoint.monitor
    mode: str  # checkpoint.mode: min or max
    direction = property(lambda self: "maximize" if self.mode == "max" else "minimize")
    __str__ = lambda self: f"{self.name} ({self.mode})"  # noqa: E731 - a NamedTuple's method


def objective(config: Any) -> Objective:
    """The objective of a parsed run config (either engine's): its best checkpoint's monitor and mode."""
    checkpoint = config.get("checkpoint") or {}
    return Objective(checkpoint.get("monitor") or MONITOR, checkpoint.get("mode") or MONITOR_MODE)


def objectives(names: list[str] | None, directions: list[str] | None, config_goal: Objective) -> list[Objective]:
    """The sweep's objectives: ``--objective`` (any logged metric, or ``params``) with its ``--direction``, in
    order; without ``--objective``, the config's own. The first picks each trial's best checkpoint."""
    directions = directions or []
    if not names:
        if directions:
            raise ConfigError(f"--direction {directions[0]}: give it with the --objective it applies to "
                              f"(without --objective the sweep ranks by the config's own {config_goal})")
        return [config_goal]
    if directions and len(directions) != len(names):
        raise ConfigError(f"--direction: given {len(directions)} times for {len(names)} --objective; give one per "
                          "objective, in their order, or none")
    if names[0] == PARAMS:
        raise ConfigError(f"--objective {PARAMS}: the first objective must be a logged metric (it picks each "
                          f"trial's best checkpoint); put {PARAMS} second, e.g. --objective val/acc --objective params")
    if len(set(names)) != len(names):
        raise ConfigError(f"--objective {next(n for n in names if names.count(n) > 1)}: given twice")
    goals = []
    for i, name in enumerate(names):
        if directions:
            mode = "max" if directions[i] == "maximize" else "min"
        elif name in (PARAMS, config_goal.name):
            mode = "min" if name == PARAMS else config_goal.mode
        else:
            raise ConfigError(f"--objective {name}: give its --direction (minimize or maximize); only the config's "
                              f"own objective ({config_goal}) and {PARAMS} (min) have one without it")
        goals.append(Objective(name, mode))
    return goals


def monitor_args(opts: argparse.Namespace, goal: Objective) -> list[str]:
    """With ``--objective``, the first objective is each trial's checkpoint monitor: its best checkpoint's score."""
    return ["--checkpoint.monitor", goal.name, "--checkpoint.mode", goal.mode] if opts.objective else []


def goals_record(goals: list[Objective]) -> list[Any]:
    """The objectives as the study records them (one: [name, mode], as sweeps recorded it before there were more)."""
    return list(goals[0]) if len(goals) == 1 else [list(goal) for goal in goals]


def recorded_goals(record: list[Any]) -> list[Objective]:
    return [Objective(*goal) for goal in record] if isinstance(record[0], list) else [Objective(*record)]


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The space's grid for ``--sampler grid``: every choice, every int, every step of a float with a step."""
    points = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            points[key] = list(dist.choices)
        elif dist.step is None or dist.log:
            raise ConfigError(f"--sampler grid: {key} is a continuous range ({dist.low} .. {dist.high}); a grid "
                              "needs a discrete space: give it a step, or choices, or use another --sampler")
        else:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            number = int if isinstance(dist, IntDistribution) else float
            points[key] = [number(dist.low + i * dist.step) for i in range(count)]
    return points


def sampler(opts: argparse.Namespace, space: dict[str, BaseDistribution], goals: int) -> optuna.samplers.BaseSampler:
    """``--sampler``: TPE (``constant_liar``: parallel workers don't all try the same point), random, the
    space's grid (discrete spaces only; at most as many trials as points), or CMA-ES (one objective)."""
    if opts.sampler == "grid":
        points = grid(space)
        size = math.prod(len(values) for values in points.values())
        if opts.trials > size:
            raise ConfigError(f"--trials {opts.trials}: --sampler grid has {size} points in this space; ask for at "
                              f"most {size} trials")
        return optuna.samplers.GridSampler(points)
    if opts.sampler == "cmaes":
        if goals > 1:
            raise ConfigError("--sampler cmaes: CMA-ES optimises one objective; use tpe or random for several")
        return optuna.samplers.CmaEsSampler()
    return optuna.samplers.RandomSampler() if opts.sampler == "random" else optuna.samplers.TPESampler(
        constant_liar=True)


def open_study(opts: argparse.Namespace, folder: Path, goals: Objective | list[Objective] | None = None,
               space: dict[str, BaseDistribution] | None = None) -> optuna.Study:
    """The study created for ``goals`` or continued; with none (a worker process), the one its command made."""
    goals = [goals] if isinstance(goals, Objective) else goals
    chosen = sampler(opts, space or {}, len(goals or []))  # a sampler the space cannot take: before any file
    # A retry goes on from its first try's last.ckpt (sweep.Worker.home), its reported epochs kept.
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=opts.max_retry, inherit_intermediate_values=True)
    if opts.storage:
        try:
            storage = optuna.storages.RDBStorage(opts.storage, heartbeat_interval=opts.heartbeat,
                                                 grace_period=2 * opts.heartbeat,
                                                 heartbeat_stale_trial_callback=retry)
        except (ImportError, ModuleNotFoundError) as err:
            raise ConfigError(f"--storage {opts.storage}: {err}") from None
        except Exception as err:  # SQLAlchemy's OperationalError and friends: a server or URL a user can fix
            if type(err).__module__.split(".")[0] not in ("sqlalchemy", "psycopg2", "psycopg"):
                raise
            raise ConfigError(f"--storage {opts.storage}: {str(err).strip().splitlines()[0]}") from None
    else:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "study.journal"
        lock = JournalFileOpenLock(str(path))  # the open() lock: the one optuna-dashboard takes on this file too
        check_journal(path, lock)
        storage = JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)  # an epoch's checkpoint first
    if goals is None:
        return optuna.load_study(study_name=opts.name, storage=storage, sampler=chosen, pruner=pruner)
    return optuna.create_study(study_name=opts.name, storage=storage, sampler=chosen, pruner=pruner,
                               directions=[goal.direction for goal in goals], load_if_exists=True)


def is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # not UTF-8, not JSON
        return False


def check_journal(path: Path, lock: Any) -> None:
    """Before Optuna appends to a journal: each line a record; a last line a kill or a full disk cut
    short is cut off (or, a whole record, given its newline); anything else is one line naming the file."""
    if os.path.lexists(path) and not path.is_file():
        raise ConfigError(f"{path} is not a file: a sweep's journal is the file Optuna writes (move it away)")
    if not path.is_file():
        return
    lock.acquire()
    try:
        data = path.read_bytes()
        *lines, last = data.split(b"\n")
        for number, line in enumerate([*lines, last], 1):
            if line and not is_record(line) and not (number > len(lines) and line.startswith(b'{"op_code":')):
                raise ConfigError(f"{path}: line {number} is not an Optuna journal record: the file is damaged "
                                  "(move it away to start the study anew)")
        if last:
            whole = is_record(last)
            write_atomic(path, data + b"\n" if whole else data[:-len(last)])
            print(f"sweep: {path} ended in a partial record ({len(last)} bytes): "
                  + ("a whole record, its newline added" if whole else "cut back to its last complete record"),
                  file=sys.stderr, flush=True)
    finally:
        lock.release()


def bind(study: optuna.Study, name: str, record: dict[str, Any]) -> None:
    """The study's first command records its objective, config and space; a command with others is refused."""
    for key, value in record.items():
        old = study.user_attrs.get(key, value)
        if key == "objective" and [d.name.lower() for d in study.directions] != [
                goal.direction for goal in recorded_goals(value)]:
            old = [None, study.directions[0].name.lower()]  # a study recorded before the objective was
        if old != value:
            if isinstance(value, dict):
                diff = next(k for k in sorted(old.keys() | value.keys()) if old.get(k) != value.get(k))
                old, value = f"{diff}: {old.get(diff)!r}", repr(value.get(diff))
            raise ConfigError(f"--name {name}: this sweep ran another {key} ({old} -> {value}); continue it with "
                              "its own config and space, or start a new sweep with another --name")
        if key not in study.user_attrs:
            study.set_user_attr(key, value)


def plots(study: optuna.Study, folder: Path, goals: list[Objective] | None = None) -> list[Path]:
    """Optuna's optimisation-history and parameter-importance plots (matplotlib) as PNG files; with several
    objectives, those of the first and the Pareto front of the first two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    goals = goals or []
    first = {} if len(goals) < 2 else {"target": lambda t: t.values[0], "target_name": goals[0].name}
    charts = {"history.png": lambda s: optuna_plots.plot_optimization_history(s, **first)}
    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
        charts["importance.png"] = lambda s: optuna_plots.plot_param_importances(s, **first)
        if len(goals) > 1:
            charts["pareto.png"] = lambda s: optuna_plots.plot_pareto_front(
                s, targets=lambda t: t.values[:2], target_names=[goal.name for goal in goals[:2]])
    for name, chart in charts.items():
        with warnings.catch_warnings():  # PED-ANOVA's note that a target is minimised: the plots name their target
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator", category=UserWarning)
            figure = chart(study).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        tmp = folder / f".{name}.{os.getpid()}.tmp.png"
        figure.savefig(tmp, dpi=100)
        os.replace(tmp, folder / name)
        plt.close(figure)
    return [folder / name for name in charts]
