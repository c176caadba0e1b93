"""The processes of sweep and seeds: each run trains inside the command's process or a worker's, never
DDP's own; a sweep's worker processes, seen from its coordinator (the ``toyloops sweep`` command): how many
fit in free memory, starting them, and each one's tie to the coordinator's life: a worker dies with it. And
the check every run's config passes before any process is given it (``check_args``)."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from toyloops.engine import runs
from toyloops.rules.errors import ConfigError

# Trials hand LightningCLI their arguments from Python while sys.argv holds the sweep's own.
ARGS_WARNING = "LightningCLI's args parameter is intended"

# Set in each worker by its coordinator: the worker watches its stdin, a pipe only the coordinator holds open.
COORDINATOR_ENV = "TOYLOOPS_SWEEP_COORDINATOR"
MIB = 2**20
# A worker's peak memory over the command's at the check, with room: benchmarks/RESULTS.md measured 1.07-1.10.
WORKER_GROWTH = 1.25


def check_one_process(trainer: Any) -> None:
    """Sweeps and seeds train each run inside their own process, where DDP cannot start its ranks (it starts
    them by running the command line again): a trainer section that would is refused here, before any run."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    strategy, devices = getattr(trainer.strategy, "class_path", trainer.strategy), str(trainer.devices).strip()
    if devices in ("auto", "-1"):  # every device of the accelerator: more than one GPU?
        gpus = str(trainer.accelerator) in ("auto", "gpu", "cuda") and CUDAAccelerator.is_available()
        count = CUDAAccelerator.auto_device_count() if gpus else 1
    elif isinstance(trainer.devices, list):  # device indices
        count = len(trainer.devices)
    elif "," in devices:
        count = len([index for index in devices.split(",") if index.strip()])
    else:  # a number; anything else is Lightning's to refuse
        count = int(devices) if devices.isdigit() else 1
    single = str(strategy).lower() in ("auto", "single_device") or str(strategy).endswith("SingleDeviceStrategy")
    if count > 1 or trainer.num_nodes > 1 or not single:
        raise ConfigError(f"trainer.strategy={strategy}, trainer.devices={trainer.devices}, trainer.num_nodes="
                          f"{trainer.num_nodes}: sweep and seeds train each run inside their own process, where DDP "
                          "cannot start its ranks; give --trainer.devices 1 (and no strategy) here, use sweep "
                          "--workers K for runs side by side, then train the chosen config with DDP: toyloops fit "
                          "--config <it> --config presets/ddp_cpu")


def available_memory() -> tuple[int, str] | None:
    """Bytes this process may still take, and where the number comes from: the kernel's MemAvailable, or a
    tighter cgroup (v2) limit less its usage; None where neither can be read (not Linux)."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        found = (int(meminfo["MemAvailable"].split()[0]) * 1024, "MemAvailable in /proc/meminfo")
    except (OSError, KeyError, ValueError):
        return None
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit, usage = (cgroup / "memory.max").read_text().strip(), int((cgroup / "memory.current").read_text())
        if limit != "max" and int(limit) - usage < found[0]:
            found = (int(limit) - usage, "memory.max less memory.current of this cgroup")
    except (OSError, ValueError):
        pass
    return found


def peak_memory() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def check_workers(workers: int) -> None:
    """Refuse more workers than free memory holds, each taking what this process took (torch, Lightning and
    the config built: what a worker holds before its first trial), in one line saying the bound and its sums."""
    free = available_memory()
    if free is None or workers < 2:
        return
    each = int(peak_memory() * WORKER_GROWTH)
    bound = max(free[0] // each, 1)
    if workers > bound:
        raise ConfigError(f"--workers {workers}: at most {bound} fit in free memory ({free[0] / MIB:.0f} MiB "
                          f"available, {free[1]}, / {each / MIB:.0f} MiB a worker: this command's peak memory with "
                          f"the config built, x {WORKER_GROWTH} for what training adds); use --workers {bound} or "
                          "fewer")


def held(lock: Path) -> bool:
    """Whether a live process holds this lock file (a worker's, for life: the OS frees it when the worker dies)."""
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def start(args: list[str], workers: int) -> list[subprocess.Popen]:
    """``workers`` worker processes of this sweep command; each one's stdin a pipe that closes when this
    process ends, however it ends (the OS closes it on SIGKILL too)."""
    env = {**os.environ, COORDINATOR_ENV: str(os.getpid())}
    children = [subprocess.Popen([sys.executable, "-m", "toyloops", "sweep", *args, "--worker_index", str(i)],
                                 stdin=subprocess.PIPE, env=env) for i in range(1, workers + 1)]
    print("sweep: workers " + ", ".join(f"{i} (pid {c.pid})" for i, c in enumerate(children, 1)), flush=True)
    return children


def wait(children: list[subprocess.Popen]) -> list[int]:
    """The workers' exit codes; stopped (SIGTERM, Ctrl-C), the coordinator stops them too, as a stopped fit does."""
    try:
        return [child.wait() for child in children]
    except BaseException:
        for child in (child for child in children if child.poll() is None):
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()
        raise


def die_with_coordinator() -> None:
    """In a worker its coordinator started: end at once (SIGKILL, as if killed with it) when the coordinator
    ends, seen as end-of-file on stdin. Its trial stays RUNNING; the restarted sweep fails it and retries it
    from the trial's own last.ckpt."""
    if os.environ.get(COORDINATOR_ENV) != str(os.getppid()):  # started by hand, or the coordinator already gone
        if COORDINATOR_ENV in os.environ:
            os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:  # os.read, not sys.stdin: a daemon thread must hold no buffer's lock at exit
        while os.read(sys.stdin.fileno(), 1024):  # the coordinator never writes: b"" when its end closes
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-coordinator", daemon=True).start()


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
            check_one_process(config.trainer)
            runs.check_precision(config.trainer.precision, config.trainer.accelerator)

        def instantiate_classes(self) -> None:
            with links_into_net():
                objects = self.parser.instantiate(self.config)
            check_net_fits_data(objects.model, objects.data)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ARGS_WARNING)
        return CheckOnly(args, run=False).config
