"""Run management both entry points share: run folders (``logs/<config name>/version_N``, the hand loop's
``loop_version_N``), ``last``, resume and precision checks, signal stops, the run summary, and error -> one line
+ exit code. What they promise: docs/reliability.md.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import gc
import io
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from argparse import ArgumentError
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import DATA_TO_NET, LOG_DIR, NET_KEY
from toyloops.engine.entry import shipped_configs, with_shipped_configs  # noqa: F401 - re-exported for the commands
from toyloops.engine.validation import one_line, unlinkable
from toyloops.rules.errors import ConfigError, ToyloopsError
from toyloops.rules.specs import load_checkpoint

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEBUG_ENV = "TOYLOOPS_DEBUG"  # 1: every error keeps its traceback
EVAL_FOLDER = "eval"  # a run's validate/test/predict folders: <run>/eval/<stage>_<k>
FROZEN_ON_RESUME = ("seed_everything", "model", "data")  # what a resumed run cannot change
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed")  # what both engines run

# What gloo says when a DDP peer has died or hangs (it raises a plain RuntimeError).
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Connection refused", "Broken pipe", "Timed out",
             "timed out")
# Environment failures a user can act on; any other OSError is a bug and keeps its traceback.
ACTIONABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                     errno.ENAMETOOLONG}


@dataclass
class RunFolder:
    """One run's folder; ``created`` when this process made it (and so may remove it again)."""

    path: Path
    created: bool
    made_parents: tuple[Path, ...] = ()  # empty folders made for it (logs/<name>), deepest first
    version = property(lambda self: int(self.path.name.rsplit("_", 1)[-1]))

    def lock(self) -> RunFolder:
        """Hold the folder for this process's run; the OS lets go when the process ends, even on SIGKILL."""
        self._lock = open(self.path / ".lock", "a")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(f"run folder {self.path} is in use by another process: let that run end, "
                              "or start a new run (drop --ckpt_path)") from None
        return self

    def release(self, failed: bool) -> None:
        """Let go of the folder; after a failure, remove it if this process made it and it holds no checkpoint."""
        if getattr(self, "_lock", None):
            self._lock.close()
            self._lock = None
        if failed and self.created and not any(self.path.rglob("*.ckpt")):
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.made_parents:
                try:
                    parent.rmdir()  # only while empty: another run's folder keeps it
                except OSError:
                    break


def config_files(args: list[str]) -> list[str]:
    """The YAML a command line hands the parser: every ``--config`` (a file or inline YAML) and any
    other value that is a ``.yaml``/``.yml`` file (``--data data.yaml``)."""
    values = [(args[i - 1] if i else "", arg) for i, arg in enumerate(args)]
    values += [(key, value) for key, _, value in (arg.partition("=") for arg in args if arg.startswith("--"))]
    return [value for key, value in values if value and (key == "--config" or (
        value.endswith((".yaml", ".yml")) and Path(value).is_file()))]


def newest_last(log_dir: str = "logs") -> Path:
    """``--ckpt_path last`` without a config: the newest ``last.ckpt`` of any run under ``log_dir``."""
    found = sorted(Path(log_dir).glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"ckpt_path='last' but no run under {log_dir}/ has a last.ckpt; give --ckpt_path a file")
    return found[-1]


def with_run_config(args: list[str], log_dir: str = "logs") -> list[str]:
    """``validate``/``test``/``predict``/``compare --ckpt_path P`` without ``--config``: the config is the
    checkpoint's run's ``config.yaml``; ``last`` is then the newest ``last.ckpt`` of any run under ``log_dir``."""
    flags = [i for i, arg in enumerate(args) if arg == "--ckpt_path" or arg.startswith("--ckpt_path=")]
    if not args or args[0] not in ("validate", "test", "predict", "compare") or config_files(args) or not flags:
        return args
    i = flags[-1]
    value = args[i].partition("=")[2] if "=" in args[i] else (args[i + 1] if i + 1 < len(args) else "")
    value = str(newest_last(log_dir)) if value == "last" else value
    config = Path(value).parent.parent / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"ckpt_path={value!r}: its run folder holds no config.yaml to rebuild the model and the "
                          "data from; give the run's config with --config")
    rest = [arg for j, arg in enumerate(args[1:], 1) if j != i and not (j == i + 1 and "=" not in args[i])]
    return [args[0], "--config", str(config), *rest, "--ckpt_path", value]


def write_table(path: Path, rows: list[list[Any]]) -> None:
    table = io.StringIO()
    csv.writer(table).writerows(rows)
    write_atomic(path, table.getvalue().encode())


def check_pass_through(extra: list[str], owned: Callable[[str], bool], what: str, command: str) -> None:
    """The ``--key value`` pairs a many-run command (sweep, seeds) hands every run: anything else
    is a one-line error, and so is a key the command sets itself for each run."""
    if extra and not extra[0].startswith("--"):
        raise ConfigError(f"unexpected argument {extra[0]!r}: {what} settings go as --key value")
    for arg in extra:
        key = arg[2:].partition("=")[0]
        if arg.startswith("--") and owned(key):
            raise ConfigError(f"--{key}: {command} sets this itself for each {what}")


def check_folder_name(name: str) -> str:
    """``--name``: one plain folder under logs/, not a path, whose name the filesystem takes."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name={name!r}: expected a plain folder name")
    check_name_length("--name", name, Path(LOG_DIR))
    return name


def check_name_length(key: str, name: str, folder: Path, suffix: str = "") -> None:
    """``name`` (given as ``key``), with ``suffix``, fits in one file name in ``folder`` (NAME_MAX)."""
    limit = os.pathconf(nearest_existing(folder), "PC_NAME_MAX") - len(suffix.encode())
    if len(name.encode()) > limit:
        raise ConfigError(f"{key}: a name of {len(name.encode())} bytes is too long: at most {limit} bytes on this "
                          "filesystem" + (f", so that <name>{suffix} fits" if suffix else ""))


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (``os.path.exists``: False for a name too long, no error)."""
    path = path.absolute()
    return next(p for p in (path, *path.parents) if os.path.exists(p))


def run_name(config_files: list | None) -> str:
    """A run is named after its first config file: ``configs/blobs_mlp.yaml`` -> ``blobs_mlp``."""
    return Path(str(config_files[0])).stem if config_files else "default"


def _versions(root: Path, prefix: str) -> dict[int, Path]:
    return {int(p.name[len(prefix):]): p for p in root.glob(f"{prefix}*") if p.name[len(prefix):].isdigit()}


def claim_new_run(root: Path, prefix: str) -> RunFolder:
    """Create the next free ``<prefix>N`` under ``root`` atomically and own it."""
    check_writable(root)
    made = tuple(p for p in (root, *root.parents) if not p.exists())
    version = max(_versions(root, prefix), default=-1) + 1 if root.exists() else 0
    while True:
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / f"{prefix}{version}").mkdir()
            return RunFolder(root / f"{prefix}{version}", created=True, made_parents=made).lock()
        except FileExistsError:  # another run took it between our look and our claim
            version += 1
        except FileNotFoundError:  # another run's release removed the empty root just now
            continue


def resolve_ckpt(ckpt_path: str, root: Path, prefix: str) -> Path:
    """``last`` means the newest ``last.ckpt`` among this config's runs; anything else is a path."""
    if ckpt_path != "last":
        return Path(ckpt_path)
    runs = _versions(root, prefix)
    found = [runs[v] / "checkpoints/last.ckpt" for v in sorted(runs) if (runs[v] / "checkpoints/last.ckpt").is_file()]
    if not found:
        raise ConfigError(f"ckpt_path='last' but no run has a last.ckpt under {root}/{prefix}N: "
                          "nothing to resume or evaluate (train one with fit; drop --ckpt_path to start a new run)")
    return found[-1]


def open_run(root: Path, prefix: str, resume_from: Path | None = None, resume_step: int = 0) -> RunFolder:
    """The folder a ``fit`` writes to, locked for this process: the resumed checkpoint's own run
    when it is one of this config's runs and its newest state; otherwise a new run, claimed now
    (so resuming from an older checkpoint forks, and never overwrites a newer ``last.ckpt``)."""
    if resume_from is not None:
        run_dir = resume_from.resolve().parent.parent
        last = run_dir / "checkpoints/last.ckpt"
        newest = not last.is_file() or last.samefile(resume_from) or load_checkpoint(last)["global_step"] <= resume_step
        if run_dir.parent == root.resolve() and run_dir.name.startswith(prefix) \
                and run_dir.name[len(prefix):].isdigit() and newest:
            return RunFolder(root / run_dir.name, created=False).lock()
    return claim_new_run(root, prefix)


def open_eval(ckpt: Path, root: Path, stage: str) -> RunFolder:
    """Where ``validate``/``test``/``predict`` write: ``eval/<stage>_<k>`` inside the checkpoint's own run
    (one with a ``config.yaml``), else under this config's ``logs/<name>/``; never a new ``version_N``."""
    run_dir = ckpt.parent.parent
    owner = run_dir if ckpt.parent.name == "checkpoints" and (run_dir / "config.yaml").is_file() else root
    return claim_new_run(owner / EVAL_FOLDER, f"{stage}_")


def record_eval(folder: Path, stage: str, ckpt: Path, metrics: dict[str, float]) -> str:
    """Write ``metrics.yaml`` into the eval folder and return the one summary both engines print."""
    record = {"stage": stage, "checkpoint": str(ckpt), "metrics": {k: float(v) for k, v in metrics.items()}}
    write_atomic(folder / "metrics.yaml", yaml.safe_dump(record, sort_keys=False).encode())
    shown = "\n".join(f"{key}: {value:.4f}" for key, value in record["metrics"].items())
    return f"\n== toyloops {stage} ==\ncheckpoint: {ckpt}\n{shown}\nresults: {folder}"


def check_resume_config(resume_from: Path, requested: dict[str, Any]) -> None:
    """A resume continues its run: seed, model and data as in the run's ``config.yaml`` (the rest may change)."""
    recorded_file = resume_from.resolve().parent.parent / "config.yaml"
    if not recorded_file.is_file():
        return  # a checkpoint outside a run folder: nothing recorded to compare with
    recorded = flat({key: (yaml.safe_load(recorded_file.read_text()) or {}).get(key) for key in FROZEN_ON_RESUME})
    wanted = flat({key: requested.get(key) for key in FROZEN_ON_RESUME})
    derived = {"model.init_args.num_classes", "data.init_args.seed", *(f"{NET_KEY}.{t}" for _, t in DATA_TO_NET)}
    changes = [f"{key}: {recorded.get(key)!r} -> {wanted.get(key)!r}" for key in sorted(recorded.keys() | wanted.keys())
               if recorded.get(key) != wanted.get(key) and key not in derived]
    if changes:
        raise ConfigError(f"ckpt_path={str(resume_from)!r} continues a run trained with other settings "
                          f"({'; '.join(changes)}): start a new run instead (drop --ckpt_path)")


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/Namespaces as dotted keys; tuples as lists (as YAML records them)."""
    value = value.as_dict() if hasattr(value, "as_dict") else value
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if prefix.endswith("class_path.") and isinstance(value, str):  # toyloops.MLP and toyloops.core.nets.MLP
        module, _, name = value.rpartition(".")
        value = getattr(sys.modules.get(module), name, value)  # the class itself, where it is loaded
        value = f"{value.__module__}.{value.__qualname__}" if isinstance(value, type) else value
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def check_precision(precision: object, accelerator: object) -> None:
    """Precisions both engines run, on a GPU if asked for (Lightning silently swaps 16-mixed for bf16 on CPU)."""
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r}: toyloops runs {', '.join(PRECISIONS)}")
    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={str(accelerator)!r} but this machine has no CUDA GPU: "
                          "use 'cpu' or 'auto'")
    on_cpu = str(accelerator) == "cpu" or (str(accelerator) == "auto" and not torch.cuda.is_available())
    if str(precision) in ("16-mixed", "16") and on_cpu:
        raise ConfigError(f"trainer.precision={str(precision)!r} needs a CUDA GPU and this run is on CPU: "
                          "use 'bf16-mixed' or '32-true' (or --trainer.accelerator gpu on a GPU machine)")


def check_writable(folder: Path, what: str = "log folder") -> None:
    """Fail now, creating nothing, if the folder could not be made or written, or its names and path are
    too long for the filesystem (the path leaves room for one full-length file name within PATH_MAX)."""
    path, existing = folder.absolute(), nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{what} {str(folder)!r} cannot be created: {existing} is a file")
    for part in path.relative_to(existing).parts:
        check_name_length(f"{what} {str(folder)!r}", part, existing)
    room, most = os.pathconf(existing, "PC_NAME_MAX") + 1, os.pathconf(existing, "PC_PATH_MAX") - 1
    if len(bytes(path)) + room > most:
        raise ConfigError(f"{what} {str(folder)!r} of {len(bytes(path))} bytes is too long: at most "
                          f"{most - room} bytes on this filesystem, so that a file name fits inside")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {str(folder)!r} is not writable ({err.strerror or err})") from None


class Stopped(ToyloopsError):
    """Training stopped on SIGTERM or SIGINT; ``checkpoint`` is the resume point (None: before training)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None,
                 where: str | None = None) -> None:
        self.signum, self.exit_code = signum, 128 + signum  # 143 for SIGTERM, 130 for SIGINT, as a shell reports
        where = where or (
            f"at step {step}; resume point {checkpoint}; to resume, run the same command with --ckpt_path last"
            if checkpoint else
            "outside training: this stop saved no resume point (the run's last.ckpt, if any, is one)")
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")


class Interrupted(BaseException):
    """SIGTERM or SIGINT outside training. A BaseException, as KeyboardInterrupt is, so that no
    library's ``except Exception`` (a parser's, a loader's) mistakes the stop for an error of its own."""

    signum = property(lambda self: self.args[0])


class StopRequest:
    """While training, SIGTERM and SIGINT are remembered (``signum``) instead of ending the process:
    the engine saves a resume point at the next step boundary and raises :class:`Stopped`."""

    signum: int | None = None
    _previous: dict = {}  # noqa: RUF012 - replaced per instance on __enter__

    def __enter__(self) -> StopRequest:
        self.signum, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {sig: signal.signal(sig, lambda signum, _: setattr(self, "signum", signum))
                              for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _stop_before_training(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def summary(title: str, best: float | None, best_checkpoint: object, last_checkpoint: object, logs: Path,
            baselines: dict[str, float] | None = None, stopped_early: tuple[int, str] | None = None,
            monitor: str = "val/acc", report: str | None = None, tensorboard: bool = True,
            logger: str = "off") -> str:
    """What a finished ``fit`` prints, in both engines: best score, baselines, where EarlyStopping ended it,
    the data's ``report``, checkpoints, logs and how to view them (``tensorboard=False``: no events; ``logger``
    the one there is)."""
    score = f"{best:.4f}" if best is not None else "none (no validation ran)"
    if baselines:  # accuracies: beside val/acc, or on a line of their own
        rates = ", ".join(f"{'Bayes' if name == 'bayes' else name} {value:.4f}" for name, value in baselines.items())
        score += f"  ({rates})" if monitor == "val/acc" else f"\nbaselines: {rates}"
    if report:
        score += f"\n{report}"
    if stopped_early:
        score += f"\nstopped early: after epoch {stopped_early[0]} (EarlyStopping on {stopped_early[1]})"
    view = f"tensorboard --logdir {shlex.quote(str(logs.parent))}"  # pasteable, spaces and all
    return (f"\n== {title} ==\nbest {monitor}: {score}\nbest checkpoint: {best_checkpoint}\n"
            f"last checkpoint: {last_checkpoint}\nlogs: {logs}"
            + (f"\nview: {view}" if tensorboard else f"\n(no TensorBoard events: trainer.logger is {logger})"))


def user_message(err: BaseException, args: list[str], hint: Callable[[str], str]) -> str | None:
    """The one line for an error a user can act on; None for a bug (which keeps its traceback)."""
    if isinstance(err, ArgumentError):
        message = one_line(str(err))
        configs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
        if "parsing config" in message and configs:  # YAML syntax: jsonargparse does not name the file
            message += f" (in {', '.join(configs)})"
        if "required" in message and configs and all("presets" in Path(c).parts for c in configs):
            message += " (a preset stacks on a run config: --config blobs_mlp --config presets/debug)"
        return hint(message)
    if isinstance(err, ValueError) and unlinkable(str(err)):  # raised inside jsonargparse, from a subclass
        return unlinkable(str(err))
    if isinstance(err, ValueError) and not isinstance(err, ToyloopsError):
        # jsonargparse reports a constructor's error as a ValueError raised while handling it
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, ToyloopsError):
            cause = cause.__cause__ or cause.__context__
        err = cause or err
    if isinstance(err, ToyloopsError):
        return str(err)
    if isinstance(err, MisconfigurationException):  # Lightning's own word for a setting it cannot use
        return " ".join(str(err).split())
    if isinstance(err, torch.distributed.DistError) or (  # a DDP peer died, or went silent past the timeout
            isinstance(err, RuntimeError) and "gloo" in str(err) and any(text in str(err) for text in PEER_LOST)):
        first = re.sub(r"\[[^\]]*\.cc:\d+\] ", "", str(err).strip().splitlines()[0]).split(". ")[0]
        return (f"a DDP peer process ended or stopped answering ({first[:160]}); the last checkpoint is the "
                "resume point: run the same command with --ckpt_path last (trainer.strategy.init_args.timeout "
                "sets how long a rank waits)")
    if isinstance(err, OSError) and err.errno in ACTIONABLE_ERRNOS:
        return f"{err.strerror}" + (f": {err.filename}" if err.filename else "")
    return None


def freeze_imports() -> None:
    """Take what a command imported (torch, Lightning: alive as long as the process) out of the cyclic
    collector's reach. A command's own process only: elsewhere, cyclic garbage alive now is never collected."""
    gc.freeze()


def main(entry: Callable[[list[str] | None], object], args: list[str] | None = None,
         hint: Callable[[str], str] = lambda message: message) -> None:
    """Run an entry point as docs/reliability.md promises: a user's mistake in one line and exit 1, SIGTERM or
    SIGINT in one line and 143 or 130, a bug with its traceback; ``hint`` may add to a parse error's message."""
    previous = {sig: signal.signal(sig, _stop_before_training) for sig in STOP_SIGNALS}
    if args is None:  # the process's own command (train.py, python -m toyloops.engine.loop)
        freeze_imports()
    try:
        if os.environ.get(DEBUG_ENV, "0") not in ("0", "1", ""):
            raise ConfigError(f"{DEBUG_ENV}={os.environ[DEBUG_ENV]!r}: expected 1 (errors with their traceback) or 0")
        entry(args)
    except (KeyboardInterrupt, Interrupted, Stopped) as err:
        stopped = err if isinstance(err, Stopped) else Stopped(getattr(err, "signum", signal.SIGINT))
        sys.stderr.write(f"{stopped}\n")
        sys.exit(stopped.exit_code)
    except Exception as err:
        message = user_message(err, list(sys.argv[1:] if args is None else args), hint)
        if message is None or os.environ.get(DEBUG_ENV) == "1":
            raise
        sys.exit(f"error: {message}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
