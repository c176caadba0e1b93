"""toyloops sweep --config blobs_mlp --space mlp --trials 20 --workers 2 [--trainer.max_epochs 5 ...]

An Optuna search (TPE, median pruner) over any config keys by the config's objective (``checkpoint.monitor``
and ``checkpoint.mode``); each trial a TensorBoard run. The study (a journal file ``logs/sweeps/<name>/study.journal``
or an RDB ``--storage``) records its objective, config and space; the same command continues it. A dead worker's
trial is failed and queued again by Optuna's ``RetryHeartbeatStaleTrialCallback``: on the heartbeat (RDB) or its
free lock file (journal). The end: results.csv, best.yaml and Optuna's plots (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import LOG_DIR, MONITOR
from toyloops.engine.runs import Interrupted, Stopped, flat, write_table
from toyloops.rules.errors import ConfigError, ToyloopsError
from toyloops.tools.space import OWNED_KEYS, WHERE, as_args, corners, read_space, shipped_spaces, suggest
from toyloops.tools.study import Objective, bind, objective, open_study, plots

ENGINES = ("lightning", "loop")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Test hook: "T:E" makes trial number T's worker SIGKILL itself at the end of epoch E ("T:start": as the
# trial starts), so the kill tests place a real kill without timing (a retry has another number).
KILL_ENV = "TOYLOOPS_SWEEP_TEST_SIGKILL"
# Each trial runs quietly; a user's --key value after them wins.
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# Trials hand LightningCLI their arguments from Python while sys.argv holds the sweep's own.
ARGS_WARNING = "LightningCLI's args parameter is intended"
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
            epoch_end: Callable[[int, float | None], None] | None = None, monitor: str = MONITOR) -> FitResult:
    """``fit`` in this process; with ``trial``, ``monitor`` is reported at each epoch end and the trial
    pruned by the study's pruner. ``epoch_end(epoch, score)`` runs after the report, before a prune."""
    from lightning.pytorch.callbacks import Callback

    def at_epoch_end(epoch: int, score: float | None) -> None:  # Optuna's pruning rule, in either engine
        prune = trial is not None and score is not None and (trial.report(score, step=epoch) or trial.should_prune())
        if epoch_end:
            epoch_end(epoch, score)
        if prune:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

    class EpochEnd(Callback):
        def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning's hook
            score = trainer.callback_metrics.get(monitor)
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
            warnings.filterwarnings("ignore", message=ARGS_WARNING)
            cli = SweepCLI(["fit", *args])
        best = next((c.best_model_score.item() for c in cli.trainer.checkpoint_callbacks
                     if not isinstance(c, LastCheckpoint) and c.best_model_score is not None), None)
        run_dir = Path(cli.trainer.logger.log_dir)
    if best is None:
        raise ConfigError(f"{run_dir}: the run logged no {monitor} (check trainer.limit_val_batches)")
    return FitResult(best, run_dir, (run_dir / "config.yaml").read_text())


def check_args(engine: str, args: list[str]) -> Any:
    """Parse and build (no training, no run folder) a config with these arguments, and return it
    parsed: an unknown key or a value the config cannot take is a one-line error here, before any run."""
    from toyloops.engine.validation import check_config_file, check_net_fits_data, check_values, links_into_net

    args = runs.with_shipped_configs(args)
    for path in runs.config_files(args):
        check_config_file(path)
    if engine == "loop":
        from toyloops.engine.loop_cli import build

        return build(args)[0]

    from toyloops.engine.cli import ToyCLI

    class CheckOnly(ToyCLI):
        def _prepare_run(self, config) -> None:  # noqa: ANN001 - no run folder: nothing is written
            check_values(config)
            runs.check_precision(config.trainer.precision, config.trainer.accelerator)

        def instantiate_classes(self) -> None:
            with links_into_net():
                objects = self.parser.instantiate_classes(self.config)
            check_net_fits_data(objects.model, objects.data)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARGS_WARNING)
        return CheckOnly(args, run=False).config


class Worker:
    """One worker process: runs trials until the study has ``trials`` finished ones."""

    def __init__(self, opts: argparse.Namespace, folder: Path, space: dict[str, BaseDistribution],
                 base_args: list[str], goal: Objective) -> None:
        self.opts, self.folder, self.space, self.base_args, self.goal = opts, folder, space, base_args, goal
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
                    study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))  # gives the turn back
                    continue
            finally:
                self.take_turn(False)
            # The running trials may finish the study; a queued retry (WAITING) runs only if one fails.
            time.sleep(min(1.0, self.opts.heartbeat))

    def reap(self, study: optuna.Study) -> None:
        """Mark the trials of dead workers failed, and queue them again (Optuna's retry callback)."""
        if self.opts.storage:
            optuna.storages.fail_stale_trials(study)  # the heartbeat's rule
            return
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.opts.max_retry)
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
                retry(study, frozen)

    def alive(self, owner: str) -> bool:
        path = self.folder / "workers" / f"{owner}.lock"
        if not path.exists():
            return owner.rsplit("-", 1)[0] != socket.gethostname()  # another machine's: cannot tell, assume so
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def objective(self, trial: optuna.Trial) -> float:
        kill, seen = os.environ.get(KILL_ENV), []
        if kill == f"{trial.number}:start":  # the test hook's other place: before the trial names its worker
            os.kill(os.getpid(), signal.SIGKILL)
        trial.set_user_attr("worker", self.name)
        self.take_turn(False)
        params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        run_root = self.folder / "trials" / f"{trial.number:04d}"
        args = [*self.base_args, *as_args(params), "--trainer.default_root_dir", str(run_root)]

        def epoch_end(epoch: int, score: float | None) -> None:
            if score is not None:
                seen.append(score)
            if kill == f"{trial.number}:{epoch}":
                os.kill(os.getpid(), signal.SIGKILL)

        print(f"sweep: trial {trial.number} {json.dumps(params)}", flush=True)
        try:
            result = fit_run(self.opts.engine, args, trial, epoch_end, self.goal.name)
        except optuna.TrialPruned:
            log_pruned_hparams(run_root, self.opts.engine, seen, self.goal)
            raise
        except Stopped:
            raise
        except ToyloopsError as err:  # the trial's own error, as one line; the sweep goes on
            trial.set_user_attr("error", str(err))
            print(f"sweep: trial {trial.number} failed ({run_root}): {err}", file=sys.stderr, flush=True)
            if os.environ.get("TOYLOOPS_DEBUG") == "1":
                traceback.print_exception(err)
            raise TrialFailed(str(err)) from err
        trial.set_user_attr("config", result.config_text)
        trial.set_user_attr("run_dir", str(result.run_dir))
        return result.best


class TrialFailed(Exception):
    """A trial's run failed with a user's error (not a stop: a stop ends the sweep)."""


def log_pruned_hparams(run_root: Path, engine: str, scores: list[float], goal: Objective) -> None:
    """A pruned run ends before its fit_end: register it in the HParams tab here, with its best so far."""
    from toyloops.engine.dashboard import log_hparams

    for config in run_root.glob("logs/*/*version_*/config.yaml"):
        log_hparams(config.parent, engine, config.read_text(),
                    {f"{goal.name}_best": (max if goal.mode == "max" else min)(scores, default=math.nan),
                     "val/loss_final": math.nan}, max(len(scores) - 1, 0))


def best_config(text: str) -> str:
    """A trial's resolved config, made to run as a new run of its own (not in the trial's folder)."""
    config = yaml.safe_load(text)
    trainer = config.get("trainer") or {}
    for key in ("default_root_dir", *(q[len("--trainer."):] for q in QUIET[::2])):
        trainer.pop(key, None)  # the sweep's, not the trial's: defaults again
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].update(save_dir=LOG_DIR, name=None, version=None)
    config.pop("ckpt_path", None)
    return yaml.safe_dump(config, sort_keys=False)


def report(study: optuna.Study, folder: Path, space: dict[str, BaseDistribution], goal: Objective) -> dict[str, Any]:
    """results.csv, best.yaml, history.png and importance.png in ``folder``; the printed summary."""
    trials = study.get_trials(deepcopy=False)
    write_table(folder / "results.csv", [
        ["number", "state", goal.name, *space, "epochs_reported", "duration_s", "retry_of", "worker"],
        *([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}", *(t.params.get(k, "") for k in space),
           len(t.intermediate_values), f"{t.duration.total_seconds():.2f}" if t.duration else "",
           t.system_attrs.get("failed_trial", ""), t.user_attrs.get("worker", "")] for t in trials)])
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    out: dict[str, Any] = {"counts": counts, "folder": folder}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lines = [f"\n== toyloops sweep {study.study_name} ==",
             "trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    if complete:
        best = study.best_trial
        out.update(best=best.value, best_number=best.number, best_params=best.params)
        header = (f"# Best trial {best.number} of sweep {study.study_name!r}: best {goal} {best.value:.4f}\n"
                  f"# params: {json.dumps(best.params)}\n# train it: toyloops fit --config best.yaml\n")
        write_atomic(folder / "best.yaml", (header + best_config(best.user_attrs["config"])).encode())
        lines += [f"best: trial {best.number}, {goal} {best.value:.4f}, {json.dumps(best.params)}",
                  f"best config: {folder / 'best.yaml'}  (toyloops fit --config {folder / 'best.yaml'})"]
        top = sorted(complete, key=lambda t: t.value, reverse=goal.mode == "max")[:5]
        lines += ["top trials:"] + [f"  {t.number:4d}  {t.value:.4f}  {json.dumps(t.params)}" for t in top]
        out["plots"] = plots(study, folder)
    lines += [f"results: {folder / 'results.csv'}",
              f"view: tensorboard --logdir {folder / 'trials'}   (HParams tab compares the trials)"]
    print("\n".join(lines), flush=True)
    return out


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
    if opts.population < 1 or (opts.population > 1 and opts.workers > 1):
        raise ConfigError(f"--population={opts.population}: expected an int >= 1, with --workers 1 (one ensemble)")
    opts.name = runs.check_folder_name(opts.name or f"{runs.run_name(opts.config)}-{Path(opts.space).stem}")
    return opts, extra


def run(args: list[str] | None = None) -> dict[str, Any]:
    args = list(sys.argv[1:] if args is None else args)
    opts, extra = parse(args)
    command = "toyloops sweep " + shlex.join(args[:-2] if opts.worker_index else args)
    try:
        space = read_space(opts.space)
        base_args = run_args(opts.config, extra)
        folder = Path(LOG_DIR) / "sweeps" / opts.name
        goal = record = None
        if opts.worker_index == 0:  # the command: the config, alone and with each corner of the space, before any trial
            runs.check_writable(folder)
            config = check_args(opts.engine, base_args)
            keys = {key.replace(".init_args", "") for key in flat(config)}
            for params in corners(space):
                try:
                    check_args(opts.engine, [*base_args, *as_args(params)])
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
                    raise ConfigError(f"--space {opts.space}: a trial's config is not valid with {json.dumps(params)}: "
                                      f"{message}") from None
            goal = objective(config)
            record = {"config": json.loads(json.dumps({k: v for k, v in flat(config).items() if k != "config"},
                                                      default=str)),
                      "space": {key: optuna.distributions.distribution_to_json(d) for key, d in space.items()},
                      "objective": [goal.name, goal.mode]}
        study = open_study(opts, folder, goal)
        if goal is None:
            goal = Objective(*study.user_attrs["objective"])
        else:
            bind(study, opts.name, record)
        folder.mkdir(parents=True, exist_ok=True)
        if opts.worker_index == 0:
            print(f"sweep {opts.name}: {opts.trials} trials by {goal}, {opts.workers} worker(s), storage "
                  f"{opts.storage or folder / 'study.journal'}", flush=True)
        failure = None
        if opts.worker_index or opts.workers == 1:  # a worker: trials, one after another, in this process
            worker = Worker(opts, folder, space, base_args, goal)
            try:
                from toyloops.tools import population  # --population K: trials K at a time, as ensembles

                if not population.run(opts, folder, space, base_args, goal, config, study, worker.name):
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
            children = [subprocess.Popen([sys.executable, "-m", "toyloops", "sweep", *args, "--worker_index", str(i)])
                        for i in range(1, opts.workers + 1)]
            try:
                codes = [child.wait() for child in children]
            except BaseException:  # stopped (SIGTERM, Ctrl-C): stop the workers too, as a stopped fit does
                for child in (child for child in children if child.poll() is None):
                    child.send_signal(signal.SIGTERM)
                for child in children:
                    child.wait()
                raise
            for index, code in ((i, c) for i, c in enumerate(codes, 1) if c):
                print(f"sweep: worker {index} ended with exit code {code}; its trial, if any, was queued again",
                      file=sys.stderr, flush=True)
            finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
            if finished < opts.trials:
                failure = ToyloopsError(f"the workers ended with {finished} of {opts.trials} trials finished (see "
                                        "their errors above); run the same command again to continue the study")
        out = report(study, folder, space, goal)
        if failure:
            raise failure
        return out
    except (Stopped, Interrupted, KeyboardInterrupt) as err:  # each trial is a fit, but a sweep resumes as a sweep
        raise Stopped(getattr(err, "signum", signal.SIGINT), where="during the sweep (its trial is marked failed); "
                      f"to continue the sweep, run the same command again: {command}") from None


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)
