"""A sweep's Optuna study: its objective (the config's monitor and mode), its storage (a journal
file, repaired or refused before Optuna appends to it, or an RDB), and the record that binds a sweep
name to its config, space and objective; Optuna's plots of it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import MONITOR, MONITOR_MODE
from toyloops.rules.errors import ConfigError


class Objective(NamedTuple):
    name: str  # checkpoint.monitor
    mode: str  # checkpoint.mode: min or max
    direction = property(lambda self: "maximize" if self.mode == "max" else "minimize")
    __str__ = lambda self: f"{self.name} ({self.mode})"  # noqa: E731 - a NamedTuple's method


def objective(config: Any) -> Objective:
    """The objective of a parsed run config (either engine's): its best checkpoint's monitor and mode."""
    checkpoint = config.get("checkpoint") or {}
    return Objective(checkpoint.get("monitor") or MONITOR, checkpoint.get("mode") or MONITOR_MODE)


def open_study(opts: argparse.Namespace, folder: Path, goal: Objective | None = None) -> optuna.Study:
    """The study created for ``goal`` or continued; with no goal (a worker process), the one its command made."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=opts.max_retry)
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
    sampler = optuna.samplers.TPESampler(constant_liar=True)  # parallel workers don't all try the same point
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)  # an epoch's checkpoint first
    if goal is None:
        return optuna.load_study(study_name=opts.name, storage=storage, sampler=sampler, pruner=pruner)
    return optuna.create_study(study_name=opts.name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=goal.direction, load_if_exists=True)


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
        if key == "objective" and study.direction.name.lower() != Objective(*value).direction:
            old = [None, study.direction.name.lower()]  # a study recorded before the objective was
        if old != value:
            if isinstance(value, dict):
                diff = next(k for k in sorted(old.keys() | value.keys()) if old.get(k) != value.get(k))
                old, value = f"{diff}: {old.get(diff)!r}", repr(value.get(diff))
            raise ConfigError(f"--name {name}: this sweep ran another {key} ({old} -> {value}); continue it with "
                              "its own config and space, or start a new sweep with another --name")
        if key not in study.user_attrs:
            study.set_user_attr(key, value)


def plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimisation-history and parameter-importance plots (matplotlib) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    charts = {"history.png": optuna_plots.plot_optimization_history}
    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
        charts["importance.png"] = optuna_plots.plot_param_importances
    for name, chart in charts.items():
        figure = chart(study).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        tmp = folder / f".{name}.{os.getpid()}.tmp.png"
        figure.savefig(tmp, dpi=100)
        os.replace(tmp, folder / name)
        plt.close(figure)
    return [folder / name for name in charts]
