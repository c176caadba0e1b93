"""toyloops sweep --config blobs_mlp --space mlp --trials 20 --workers 2 [--objective val/loss --direction minimize]

An Optuna search (TPE, random, grid or CMA-ES; median pruner) over any config keys by the config's objective
(``checkpoint.monitor`` and ``checkpoint.mode``) or ``--objective``s (two or more: a Pareto front); each trial a
TensorBoard run. The study (a journal file ``logs/sweeps/<name>/study.journal`` or an RDB ``--storage``) records its
objectives, config and space; the same command continues it. A dead worker's trial is failed and queued again by
Optuna's ``RetryHeartbeatStaleTrialCallback`` (on the heartbeat (RDB) or its free lock file (journal)), and the retry
resumes from that trial's last.ckpt in its folder. The end: results.csv, best.yaml (or the Pareto front) and Optuna's
plots (docs/experiments.md).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from toyloops.engine import runs
from toyloops.engine.defaults import LOG_DIR, MONITOR
from toyloops.engine.runs import Interrupted, Stopped, flat
from toyloops.rules.errors import ConfigError, ToyloopsError
from toyloops.tools import workers
from toyloops.tools.space import OWNED_KEYS, WHERE, as_args, check_corners, read_space, shipped_spaces, suggest
from toyloops.tools.study import (
    PARAMS,
    SAMPLERS,
    Objective,
    bind,
    goals_record,
    monitor_args,
    objective,
    objectives,
    open_study,
    recorded_goals,
)
from toyloops.tools.sweep_results import log_pruned_hparams, report
from toyloops.tools.workers import check_args  # seeds checks its runs' configs as a sweep does

ENGINES = ("lightning", "loop")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Test hook: "T:E" makes trial number T's worker SIGKILL itself once epoch E's checkpoints are written ("T:start":
# as the trial starts; "T:E:coordinator": it SIGKILLs its coordinator then), so the kill tests place a real kill
# without timing (a retry has another number).
KILL_ENV = "TOYLOOPS_SWEEP_TEST_SIGKILL"
# Each trial runs quietly; a user's --key value after them wins.
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# RetryHeartbeatStaleTrialCallback, fail_stale_trials and the plots are marked experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class CommandParser(argparse.ArgumentParser):
    """What sweep and seeds share: their argparse settings, ``--config``, ``--engine`` and ``--name``."""

    def __init__(self, prog: str, description: str, name: str, engines: tuple[str, ...] = ENGINES,
                 **config: Any) -> None:
        super().__init__(prog=prog, description=description, allow_abbrev=False, exit_on_error=False)
        self.add_argument("--config", action="append", help="a run config (path or shipped name)", **config)
        self.add_argument("--engine", choices=engines, default=engines[0])
        self.add_argument("--name", default=None, help=name)

    def parse_command(self, args: list[str], owned: Callable[[str], bool], what: str) -> tuple[Any, list[str]]:
        """The command's options, and the ``--key value`` pairs it hands each ``what`` (run or trial)."""
        try:
            opts, extra = self.parse_known_args(args)
        except argparse.ArgumentError as err:
            raise ConfigError(str(err)) from None
        runs.check_pass_through(extra, owned, what, self.prog)
        return opts, extra


def run_args(configs: list[str], extra: list[str]) -> list[str]:
    return [*(arg for config in configs for arg in ("--config", config)), *QUIET, *extra]


class FitResult(NamedTuple):
    best: float  # best score of the objective
    run_dir: Path
    config_text: str  # the run's full, resolved config (its config.yaml)


def fit_run(engine: str, args: list[str], trial: optuna.Trial | None = None,
            epoch_end: Callable[[int, float | None], None] | None = None, monitor: str = MONITOR,
            watch: tuple[str, ...] = (), record: Callable[[int, dict[str, float]], None] | None = None,
            saved: Callable[[int], None] | None = None) -> FitResult:
    """``fit`` in this process; with ``trial``, ``monitor`` is reported at each epoch end and the trial
    pruned by the study's pruner. ``epoch_end(epoch, score)`` runs after the report, before a prune;
    before both, ``record(epoch, values)`` gets the epoch's value of each name in ``watch`` (``params``:
    the model's parameter count), a name the run does not log being one line. ``saved(epoch)`` runs once
    that epoch's checkpoints are written (as the next epoch starts, in either engine)."""
    from lightning.pytorch.callbacks import Callback

    def watched(trainer: Any, module: Any) -> dict[str, float]:
        values = {}
        for name in watch:
            metric = trainer.callback_metrics.get(name)
            value = sum(p.numel() for p in module.parameters()) if name == PARAMS else metric
            if value is None:
                raise NotLogged(f"--objective {name}: the run logs no {name} at its epoch ends (it logs: "
                                f"{', '.join(sorted(trainer.callback_metrics))}, or use {PARAMS})")
            values[name] = float(value)
        return values

    def at_epoch_end(epoch: int, score: float | None) -> None:  # Optuna's pruning rule, in either engine
        prune = trial is not None and score is not None and (trial.report(score, step=epoch) or trial.should_prune())
        if epoch_end:
            epoch_end(epoch, score)
        if prune:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

    class EpochEnd(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning's hook
            if saved and trainer.current_epoch > 0:
                saved(trainer.current_epoch - 1)

        def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning's hook
            score = trainer.callback_metrics.get(monitor)
            if not trainer.sanity_checking and record:
                record(trainer.current_epoch, watched(trainer, pl_module))
            if not trainer.sanity_checking:
                at_epoch_end(trainer.current_epoch, None if score is None else score.item())

    if engine == "loop":
        from toyloops.engine import loop_cli

        result = loop_cli.run(["fit", *args], callbacks=(EpochEnd(),))
        best, run_dir = result["best"], Path(result["last_checkpoint"]).parent.parent
    else:
        from toyloops.engine.callbacks import LastCheckpoint
        from toyloops.engine.cli import ToyCLI

        class SweepCLI(ToyCLI):
            def instantiate_trainer(self, **kwargs: Any):  # noqa: ANN202 - a Trainer
                trainer = super().instantiate_trainer(**kwargs)
                trainer.callbacks.append(EpochEnd())  # after ModelCheckpoint (Lightning puts it last): epoch saved
                return trainer

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=workers.ARGS_WARNING)
            # a space that chooses the batch size makes some trials' epochs shorter than the logging interval:
            # their train/loss is logged less often, which the sweep's ranking (a val metric) does not read
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval")
            cli = SweepCLI(["fit", *args])
        best = next((c.best_model_score.item() for c in cli.trainer.checkpoint_callbacks
                     if not isinstance(c, LastCheckpoint) and c.best_model_score is not None), None)
        run_dir = Path(cli.trainer.logger.log_dir)
    if best is None:
        raise ConfigError(f"{run_dir}: the run logged no {monitor} (check trainer.limit_val_batches)")
    return FitResult(best, run_dir, (run_dir / "config.yaml").read_text())


class Worker:
    """One worker process: runs trials until the study has ``trials`` finished ones."""

    def __init__(self, opts: argparse.Namespace, folder: Path, space: dict[str, BaseDistribution],
                 base_args: list[str], goals: list[Objective]) -> None:
        self.opts, self.folder, self.space, self.base_args, self.goals = opts, folder, space, base_args, goals
        self.goal, self.current = goals[0], None  # the trial this worker runs
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=opts.max_retry,
                                                                      inherit_intermediate_values=True)
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._lock = self._turn = None
        if not opts.storage:  # the journal: a lock file a live worker holds; the OS frees it when it dies
            (folder / "workers").mkdir(exist_ok=True)
            self._lock = open(folder / "workers" / f"{self.name}.lock", "a")  # noqa: SIM115 - held for life
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            # Workers take turns from counting the trials to their new trial's first line (which names
            # its worker): no two start the study's last trial, and a nameless RUNNING trial is an orphan.
            self._turn = open(folder / "workers" / "turn.lock", "a")  # noqa: SIM115 - held for life

    def take_turn(self, take: bool = True) -> None:
        if self._turn:
            fcntl.flock(self._turn, fcntl.LOCK_EX if take else fcntl.LOCK_UN)

    def close(self) -> None:  # the OS lets go of the locks anyway when the process ends
        for handle in filter(None, (self._lock, self._turn)):
            handle.close()

    def run(self, study: optuna.Study) -> None:
        # A failed trial is one line of ours (objective), and under TOYLOOPS_DEBUG=1 its traceback too.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        while True:
            self.take_turn()
            try:
                self.reap(study)
                trials = study.get_trials(deepcopy=False)
                finished = sum(t.state in FINISHED for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                failed = sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials)
                if finished >= self.opts.trials:
                    return
                if failed >= self.opts.trials:
                    last = next(t.user_attrs["error"] for t in reversed(trials) if "error" in t.user_attrs)
                    raise ToyloopsError(f"{failed} trials failed (the last: {last}); narrow the space")
                if finished + running < self.opts.trials:
                    try:
                        study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))  # gives the turn back
                    except Stopped:  # its run saved a resume point: queued again, the next command resumes it
                        self.requeue(study)
                        raise
                    continue
            finally:
                self.take_turn(False)
            # The running trials may finish the study; a queued retry (WAITING) runs only if one fails.
            time.sleep(min(1.0, self.opts.heartbeat))

    def requeue(self, study: optuna.Study) -> None:
        frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == self.current), None)
        if frozen is not None and frozen.state == TrialState.FAIL:
            self.retry(study, frozen)

    def reap(self, study: optuna.Study) -> None:
        """Mark the trials of dead workers failed, and queue them again (Optuna's retry callback)."""
        if self.opts.storage:
            optuna.storages.fail_stale_trials(study)  # the heartbeat's rule
            return
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("worker")  # None: its worker died before naming itself (see take_turn)
            if owner is None or (owner != self.name and not self.alive(owner)):
                try:
                    frozen = study.tell(trial.number, state=TrialState.FAIL)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another worker reaped it first
                    continue
                who = owner or "(it died before naming itself)"
                print(f"sweep: trial {trial.number} lost its worker {who}: marked failed, queued again",
                      file=sys.stderr, flush=True)
                self.retry(study, frozen)

    def alive(self, owner: str) -> bool:
        path = self.folder / "workers" / f"{owner}.lock"
        if not path.exists():
            return owner.rsplit("-", 1)[0] != socket.gethostname()  # another machine's: cannot tell, assume so
        return workers.held(path)

    def objective(self, trial: optuna.Trial) -> float | list[float]:
        kill = os.environ.get(KILL_ENV)
        if kill == f"{trial.number}:start":  # the test hook's other place: before the trial names its worker
            os.kill(os.getpid(), signal.SIGKILL)
        trial.set_user_attr("worker", self.name)
        self.take_turn(False)
        self.current = trial.number
        params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        run_root, resume, seen = self.home(trial)
        args = [*self.base_args, *as_args(params), "--trainer.default_root_dir", str(run_root), *resume]
        history = dict(trial.user_attrs.get("history", {}))  # a retry's: its first try's epochs

        def epoch_end(epoch: int, score: float | None) -> None:
            if score is not None:
                seen.append(score)

        def saved(epoch: int) -> None:  # the test hook: a kill once epoch's resume point is on disk
            if kill == f"{trial.number}:{epoch}":
                os.kill(os.getpid(), signal.SIGKILL)
            if kill == f"{trial.number}:{epoch}:coordinator":  # the coordinator dies; this worker waits to die with it
                os.kill(os.getppid(), signal.SIGKILL)
                threading.Event().wait()

        def record(epoch: int, values: dict[str, float]) -> None:
            history[str(epoch)] = values
            trial.set_user_attr("history", history)

        print(f"sweep: trial {trial.number} {json.dumps(params)}", flush=True)
        several = len(self.goals) > 1  # Optuna prunes one objective only
        try:
            result = fit_run(self.opts.engine, args, None if several else trial, epoch_end, self.goal.name,
                             tuple(g.name for g in self.goals) if several else (), record if several else None, saved)
        except optuna.TrialPruned:
            log_pruned_hparams(run_root, self.opts.engine, seen, self.goal)
            raise
        except (Stopped, NotLogged):
            raise
        except ToyloopsError as err:  # the trial's own error, as one line; the sweep goes on
            trial.set_user_attr("error", str(err))
            print(f"sweep: trial {trial.number} failed ({run_root}): {err}", file=sys.stderr, flush=True)
            if os.environ.get("TOYLOOPS_DEBUG") == "1":
                traceback.print_exception(err)
            raise TrialFailed(str(err)) from err
        trial.set_user_attr("config", result.config_text)
        trial.set_user_attr("run_dir", str(result.run_dir))
        if not several:
            return result.best
        epochs = sorted(history, key=int)  # the others at the epoch of the first's best (its best checkpoint)
        best = (max if self.goal.mode == "max" else min)(epochs, key=lambda e: history[e][self.goal.name])
        return [result.best, *(history[best][goal.name] for goal in self.goals[1:])]

    def home(self, trial: optuna.Trial) -> tuple[Path, list[str], list[float]]:
        """The trial's folder, and what it resumes: a retry of a trial whose worker died goes on in that
        trial's folder, from its last.ckpt (``--ckpt_path last``), with its reported epochs."""
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        first = optuna.storages.RetryFailedTrialCallback.retried_trial_number(frozen)
        run_root = self.folder / "trials" / f"{trial.number if first is None else first:04d}"
        if first is None or not any(run_root.glob("logs/*/*version_*/checkpoints/last.ckpt")):
            return run_root, [], []
        print(f"sweep: trial {trial.number} retries trial {first} from its last.ckpt ({run_root})", flush=True)
        return run_root, ["--ckpt_path", "last"], [v for _, v in sorted(frozen.intermediate_values.items())]


class NotLogged(ConfigError):
    """An objective the runs do not log: every trial would fail alike, so the sweep ends."""


class TrialFailed(Exception):
    """A trial's run failed with a user's error (not a stop: a stop ends the sweep)."""


def parse(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser("toyloops sweep", "Optuna sweep over a run config; any other --key value goes to every "
                           "trial.", "study name and folder logs/sweeps/<name>")
    parser.add_argument("--space", help=f"search space YAML (a path or {', '.join(shipped_spaces())})")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should reach")
    parser.add_argument("--workers", type=int, default=1,
                        help="local worker processes (1: the trials run in this process)")
    parser.add_argument("--storage", default=None, help="an RDB URL (postgresql://...); default: a journal file")
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="RDB heartbeat seconds; a trial silent for twice this is failed and retried")
    parser.add_argument("--max_retry", type=int, default=2, help="retries of a trial whose worker died")
    parser.add_argument("--objective", action="append", help="a logged metric to optimise (default: the config's "
                        f"checkpoint.monitor), or {PARAMS} (the parameter count); twice or more: the Pareto front")
    parser.add_argument("--direction", action="append", choices=("minimize", "maximize"),
                        help="one per --objective, in order (default: the config's checkpoint.mode; params: minimize)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                        help="tpe (default), random, grid (a discrete space) or cmaes (one objective)")
    parser.add_argument("--worker_index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--population", type=int, default=1,
                        help="trials asked together and trained as one ensemble (per-member hyperparameters only)")
    opts, extra = parser.parse_command(args, lambda key: key in OWNED_KEYS or bool(WHERE.search(key)), "trial")
    for key, what in (("config", "a run config: a path or a shipped name"),
                      ("space", f"a search space YAML: a path or {', '.join(shipped_spaces())}")):
        if getattr(opts, key) is None:
            raise ConfigError(f"--{key}: required ({what})")
    for key in ("trials", "workers", "max_retry"):
        if getattr(opts, key) < (0 if key == "max_retry" else 1):
            raise ConfigError(f"--{key}={getattr(opts, key)}: expected an int >= {0 if key == 'max_retry' else 1}")
    if not opts.heartbeat > 0:
        raise ConfigError(f"--heartbeat={opts.heartbeat}: expected seconds > 0")
    if opts.population < 1 or (opts.population > 1 and (opts.workers > 1 or len(opts.objective or ()) > 1)):
        raise ConfigError(f"--population={opts.population}: expected an int >= 1, with --workers 1 and one "
                          "--objective (one ensemble, ranked by one number)")
    opts.name = runs.check_folder_name(opts.name or f"{runs.run_name(opts.config)}-{Path(opts.space).stem}")
    return opts, extra


def run(args: list[str] | None = None) -> dict[str, Any]:
    args = list(sys.argv[1:] if args is None else args)
    opts, extra = parse(args)
    if opts.worker_index:
        workers.die_with_coordinator()
    command = "toyloops sweep " + shlex.join(args[:-2] if opts.worker_index else args)
    try:
        space = read_space(opts.space)
        base_args = run_args(opts.config, extra)
        folder = Path(LOG_DIR) / "sweeps" / opts.name
        goals = record = config = None
        if opts.worker_index == 0:  # the command: the config, alone and with each corner of the space, before any trial
            runs.check_writable(folder)
            config = check_args(opts.engine, base_args)
            goals = objectives(opts.objective, opts.direction, objective(config))
            if monitor_args(opts, goals[0]):
                base_args += monitor_args(opts, goals[0])
                config = check_args(opts.engine, base_args)
            check_corners(opts.space, space, config, lambda params:
                          check_args(opts.engine, [*base_args, *params]))
            workers.check_workers(opts.workers)
            record = {"config": json.loads(json.dumps({k: v for k, v in flat(config).items() if k != "config"},
                                                      default=str)),
                      "space": {key: optuna.distributions.distribution_to_json(d) for key, d in space.items()},
                      "objective": goals_record(goals)}
        study = open_study(opts, folder, goals, space)
        if goals is None:
            goals = recorded_goals(study.user_attrs["objective"])
            base_args += monitor_args(opts, goals[0])
        else:
            bind(study, opts.name, record)
        folder.mkdir(parents=True, exist_ok=True)
        if opts.worker_index == 0:
            print(f"sweep {opts.name}: {opts.trials} trials by {', '.join(map(str, goals))} ({opts.sampler}), "
                  f"{opts.workers} worker(s), storage {opts.storage or folder / 'study.journal'}", flush=True)
        failure = None
        if opts.worker_index or opts.workers == 1:  # a worker: trials, one after another, in this process
            worker = Worker(opts, folder, space, base_args, goals)
            try:
                from toyloops.tools import population  # --population K: trials K at a time, as ensembles

                if not population.run(opts, folder, space, base_args, goals[0], config, study, worker.name):
                    worker.run(study)
            except ToyloopsError as err:  # every trial failing: still write what there is, then say so
                if opts.worker_index:
                    raise
                failure = err
            finally:
                worker.close()
            if opts.worker_index:
                return {}
        else:  # the command: K worker processes, then the report
            codes = workers.wait(workers.start(args, opts.workers))
            for index, code in ((i, c) for i, c in enumerate(codes, 1) if c):
                print(f"sweep: worker {index} ended with exit code {code}; its trial, if any, was queued again",
                      file=sys.stderr, flush=True)
            finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
            if finished < opts.trials:
                failure = ToyloopsError(f"the workers ended with {finished} of {opts.trials} trials finished (see "
                                        "their errors above); run the same command again to continue the study")
        out = report(study, folder, space, goals)
        if failure:
            raise failure
        return out
    except (Stopped, Interrupted, KeyboardInterrupt) as err:  # each trial is a fit, but a sweep resumes as a sweep
        raise Stopped(getattr(err, "signum", signal.SIGINT), where="during the sweep (its trial is marked failed and "
                      "queued again, to resume from its resume point); "
                      f"to continue the sweep, run the same command again: {command}") from None


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)
