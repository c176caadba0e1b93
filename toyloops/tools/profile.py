"""toyloops profile --config C [--engine lightning|loop|both] [--batch-sizes 1,8,64,512]

Where a training step's time and memory go, in both engines, measured on the engines themselves:

* **Buckets.** Each step of a few timed epochs is split into data gather, host->device, forward,
  loss, backward, clip, optimizer step, scheduler, logging, callbacks and the engine's own rest
  (the measured step minus every bucket), each through a public mechanism: module forward hooks
  (forward), autograd hooks (backward: from the gradient reaching the net's output to the last
  parameter's), torch's optimizer step hooks, and a Lightning
  :class:`~lightning.pytorch.profilers.Profiler` that both engines report their steps to (Lightning
  its actions, ``HandTrainer(profiler=...)`` its methods'); it also times the epochs. A time counts
  once, in the innermost bucket around it; "loss" is the training step minus the forward (and, in
  the hand loop, the backward). The table also gives the step without timers.
* **Batch sweep.** Samples/s per batch size, the speed-up over the first and the scaling efficiency.
* **Memory per batch size.** Parameters, gradients, optimizer state and activations (the tensors
  autograd saves, parameters left out), next to one step's measured peak above its start (CPU:
  torch.profiler's allocator record; CUDA: ``torch.cuda.max_memory_allocated``).

Writes ``profile.md`` (the tables, also printed), ``profile.png`` (a stacked bar per engine) and a
TensorBoard event file with the same image into ``logs/<config>/profile_version_N/``. Neither
engine's numerics change: timers and hooks only read clocks.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import LOG_DIR, apply_thread_policy
from toyloops.rules.errors import ConfigError

BUCKETS = ("data gather", "host->device", "forward", "loss", "backward", "clip", "optimizer step", "scheduler",
           "logging", "callbacks", "engine (rest)")
COLOURS = ((66, 133, 244), (26, 188, 156), (234, 67, 53), (251, 188, 5), (155, 89, 182), (52, 168, 83),
           (230, 126, 34), (127, 140, 141), (241, 196, 15), (52, 73, 94), (189, 195, 199))
RUN_PREFIX = "profile_version_"
ENGINES = ("loop", "lightning")


class Clock:
    """Exclusive time per bucket: a timed range's duration minus the timed ranges inside it."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(BUCKETS, 0.0)
        self.recording = False
        self._stack: list[list] = []  # [bucket, start, time of timed ranges inside]
        self._backward: list[float] | None = None  # [start, last gradient ready]

    def enter(self, bucket: str) -> None:
        self._close_backward()
        self._stack.append([bucket, time.perf_counter(), 0.0])

    def exit(self) -> None:
        now = time.perf_counter()
        self._close_backward()
        bucket, start, inside = self._stack.pop()
        self._add(bucket, now - start, inside)

    def _add(self, bucket: str, duration: float, inside: float = 0.0) -> None:
        if self.recording:
            self.totals[bucket] += duration - inside
        if self._stack:
            self._stack[-1][2] += duration

    # backward runs inside torch: it starts at the loss's grad_fn and ends at the last gradient
    def backward_started(self, *_: Any) -> None:
        self._close_backward()
        now = time.perf_counter()
        self._backward = [now, now]

    def gradient_ready(self, *_: Any) -> None:
        if self._backward is not None:
            self._backward[1] = time.perf_counter()

    def _close_backward(self) -> None:
        if self._backward is not None:
            start, end = self._backward
            self._backward = None
            self._add("backward", end - start)

    @contextmanager
    def range(self, bucket: str) -> Iterator[None]:
        self.enter(bucket)
        try:
            yield
        finally:
            self.exit()

    def wrap(self, fn: Callable, bucket: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.range(bucket):
                return fn(*args, **kwargs)
        return timed


@contextmanager
def instrument(clock: Clock, model: torch.nn.Module) -> Iterator[None]:
    """Timers on what both engines share, all through public hooks: the net's forward, its
    backward, the optimizer's step (whichever optimizer the engine builds, once it exists)."""

    def step_started(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        clock.enter("optimizer step")
        if kwargs.get("closure") is None:
            return None
        # Lightning's step runs the training step inside optimizer.step, as a closure: what the
        # closure does outside the timed ranges is the engine's, not the optimizer's. (A step
        # pre-hook may hand the step other arguments: torch's documented hook protocol.)
        return args, {**kwargs, "closure": clock.wrap(kwargs["closure"], "engine (rest)")}

    def forward_done(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        clock.exit()
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:  # training: backward will reach it
            output.grad_fn.register_prehook(clock.backward_started)

    handles = [model.net.register_forward_pre_hook(lambda *_: clock.enter("forward")),
               model.net.register_forward_hook(forward_done),
               register_optimizer_step_pre_hook(step_started),
               register_optimizer_step_post_hook(lambda *_: clock.exit())]
    handles += [p.register_post_accumulate_grad_hook(clock.gradient_ready) for p in model.parameters()
                if p.requires_grad]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Measured:
    step_s: float  # median seconds per training step over the timed epochs
    buckets: dict[str, float] | None = None  # seconds per step, by bucket


def _epochs_median(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


# --- the hand loop ---------------------------------------------------------------------------

def hand_trainer(args: list[str], run_dir: Path, profiler: Any = None) -> tuple[Any, Any, Any]:
    """The config's model and data, and a HandTrainer logging into ``run_dir`` (no checkpoints, no bars)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from toyloops.engine.loggers import TensorBoardLogger
    from toyloops.engine.loop import HandTrainer
    from toyloops.engine.loop_cli import build

    cfg, objects = build(args)
    logger = TensorBoardLogger(str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
    trainer = HandTrainer(**{**vars(cfg.trainer), "callbacks": [LearningRateMonitor()], "logger": logger,
                             "enable_progress_bar": False, "enable_model_summary": False, "profiler": profiler,
                             "num_sanity_val_steps": 0})
    return trainer, objects.model, objects.data


def run_loop(args: list[str], epochs: int, timed: bool, run_dir: Path, batches_per_epoch: int) -> Measured:
    """``HandTrainer.fit`` with the bucket profiler (no checkpoints, no bars, no early stop)."""
    clock = Clock()
    profiler = bucket_profiler(clock, batches_per_epoch, timed)
    trainer, model, datamodule = hand_trainer(args, run_dir, profiler=profiler)
    with instrument(clock, model) if timed else nullcontext():
        trainer.fit(model, datamodule=datamodule)
    return _measured(profiler.times, clock, profiler.steps, timed, epochs)


def _measured(times: list[float], clock: Clock, steps: int, timed: bool, epochs: int) -> Measured:
    if len(times) != epochs:
        raise RuntimeError(f"expected {epochs} epochs of training batches, timed {times}")
    if not timed:
        return Measured(_epochs_median(times))
    wall = sum(times[1:]) / len(times[1:])  # the buckets are totals over the same epochs
    buckets = {name: total / steps for name, total in clock.totals.items() if name != "engine (rest)"}
    buckets["engine (rest)"] = wall - sum(buckets.values())  # what no timed range holds, the closure's glue too
    return Measured(wall, buckets)


# --- Lightning ---------------------------------------------------------------------------------

HAND_ACTIONS = {"batch_to_device": "host->device", "training_step": "loss", "optimizer_step": "clip",
                "update_lr_schedulers": "scheduler", "log_metrics": "logging", "log_learning_rate": "logging"}
LIGHTNING_ACTIONS = ((".train_dataloader_next", "data gather"), (".batch_to_device", "host->device"),
                     (".optimizer_zero_grad", "optimizer step"), (".configure_gradient_clipping", "clip"),
                     (".lr_scheduler_step", "scheduler"))


def action_bucket(action: str) -> str | None:
    """The bucket of a profiler action, Lightning's or the hand trainer's (None: only the ranges inside count).
    A training step's net forward and backward inside "loss" are buckets of their own."""
    if action.startswith("[HandTrainer]."):
        return HAND_ACTIONS.get(action.removeprefix("[HandTrainer]."))
    if action.startswith("[Callback]"):
        return "logging" if action.startswith("[Callback]LearningRateMonitor") else "callbacks"
    if action.startswith("[Strategy]") and action.endswith(".training_step"):
        return "loss"
    return next((bucket for suffix, bucket in LIGHTNING_ACTIONS if action.endswith(suffix)), None)


def bucket_profiler(clock: Clock, batches_per_epoch: int, timed: bool) -> Any:
    """A Lightning :class:`~lightning.pytorch.profilers.Profiler` (its documented extension point)
    that times each epoch's training batches (from the epoch's start to its last batch's end) and,
    when ``timed``, files each action it is told of into a bucket of ``clock``."""
    from lightning.pytorch.profilers import Profiler

    class BucketProfiler(Profiler):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []  # seconds per step, one a training epoch
            self.steps = 0  # steps of the recorded epochs
            self.buckets: dict[str, str | None] = {}  # action -> bucket, looked up once
            self.epoch = self.batches = 0
            self.started = 0.0

        def start(self, action_name: str) -> None:
            if action_name == "run_training_epoch":
                clock.recording, self.batches, self.started = timed and self.epoch > 0, 0, time.perf_counter()
            elif timed and self._bucket(action_name):
                clock.enter(self.buckets[action_name])

        def stop(self, action_name: str) -> None:
            if action_name == "run_training_batch":
                self.batches += 1
                if self.batches == batches_per_epoch:  # the epoch's last: validation and epoch end are not steps
                    self.times.append((time.perf_counter() - self.started) / self.batches)
                    self.steps += self.batches if clock.recording else 0
                    clock.recording = False
            elif action_name == "run_training_epoch":
                self.epoch += 1
            elif timed and self._bucket(action_name):
                clock.exit()

        def _bucket(self, action_name: str) -> str | None:
            if action_name not in self.buckets:
                self.buckets[action_name] = action_bucket(action_name)
            return self.buckets[action_name]

        def summary(self) -> str:
            return ""

    return BucketProfiler()


def run_lightning(args: list[str], epochs: int, timed: bool, run_dir: Path, batches_per_epoch: int) -> Measured:
    """``Trainer.fit`` as ``train.py`` builds it (logger, checkpoints, progress bar, callbacks)."""
    import lightning as L

    from toyloops.engine.cli import ToyCLI

    clock = Clock()
    profiler = bucket_profiler(clock, batches_per_epoch, timed)

    class ProfiledCLI(ToyCLI):
        def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
            return super().instantiate_trainer(**kwargs, profiler=profiler)

    quiet = ["--dashboard.boundary_every_n_epochs=0", "--dashboard.graph=false", "--dashboard.confusion_matrix=false",
             "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={run_dir}"]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        cli = ProfiledCLI(args=[*args, *quiet], run=False)
        with instrument(clock, cli.model) if timed else nullcontext():
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if cli.run_folder is not None:
            cli.run_folder.release(failed=False)
    return _measured(profiler.times, clock, profiler.steps, timed, epochs)


# --- memory ------------------------------------------------------------------------------------

def memory(args: list[str]) -> dict[str, float]:
    """Bytes of one training step at the config's batch size: computed parts and measured peak."""
    from lightning.pytorch.trainer.states import TrainerFn

    with tempfile.TemporaryDirectory() as tmp:
        trainer, model, datamodule = hand_trainer(args, Path(tmp) / "memory")
        with trainer.attached(model, datamodule, TrainerFn.FITTING):
            trainer.configure_optimizers(model)
    model.train()
    optimizer, device = trainer.optimizer, trainer.strategy.root_device
    batch = trainer.batch_to_device(next(iter(datamodule.train_dataloader())))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step() -> None:
        with trainer.autocast():
            loss = model.model_step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()  # the first step also creates the optimizer state
    peak = _peak_bytes(step, device)
    model.epoch_metrics("train")  # drop the stashed predictions
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    return {
        "parameters": nbytes(model.parameters()),
        "gradients": nbytes(p for p in model.parameters() if p.requires_grad),
        "optimizer state": nbytes(t for state in optimizer.state.values() for t in state.values()
                                  if isinstance(t, torch.Tensor)),
        "activations": sum(saved.values()),
        "batch": nbytes(batch),
        "peak": peak,
    }


def _peak_bytes(step: Callable[[], None], device: torch.device) -> float:
    """The most memory one step holds above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    logging.getLogger("torch.profiler").setLevel(logging.ERROR)
    with redirect_stderr(io.StringIO()), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    running = peak = 0
    for _, allocated in sorted((e.time_range.start, e.cpu_memory_usage) for e in prof.events()
                               if e.cpu_parent is None):
        running += allocated
        peak = max(peak, running)
    return peak


# --- output ------------------------------------------------------------------------------------

def chart(results: dict[str, Measured], title: str) -> Any:
    """A stacked bar per engine, one colour per bucket, in µs per step (a Pillow image)."""
    from PIL import Image, ImageDraw

    width, height, left, bar, top = 760, 380, 70, 120, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    most = max(m.step_s for m in results.values() if m.buckets) * 1e6
    scale = (height - top - 40) / most
    for i, (engine, measured) in enumerate(results.items()):
        x, y = left + i * (bar + 40), height - 30
        for bucket, colour in zip(BUCKETS, COLOURS, strict=True):
            h = max(0.0, measured.buckets[bucket]) * 1e6 * scale
            draw.rectangle((x, y - h, x + bar, y), fill=colour)
            y -= h
        draw.text((x, height - 25), f"{engine}: {measured.step_s * 1e6:.0f} us", fill="black")
    for j, (bucket, colour) in enumerate(zip(BUCKETS, COLOURS, strict=True)):
        lx, ly = width - 200, top + j * 22
        draw.rectangle((lx, ly, lx + 14, ly + 14), fill=colour)
        draw.text((lx + 20, ly + 1), bucket, fill="black")
    return image


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows)]


def _size(n: float) -> str:
    return f"{n:,.0f} B" if n < 1024 else f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    runs.main(run, argv)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toyloops profile", description=__doc__.splitlines()[0],
                                     exit_on_error=False)
    parser.add_argument("--config", required=True, help="a run config: path or shipped name")
    parser.add_argument("--engine", default="both", help="lightning, loop or both")
    parser.add_argument("--batch-sizes", default="1,8,64,512", help="comma-separated, for the sweeps")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first warms up")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the untimed runs round by round (every batch size once a round); medians")
    args = parser.parse_args(argv)
    if args.engine not in ("lightning", "loop", "both"):
        raise ConfigError(f"--engine={args.engine!r}: expected lightning, loop or both")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ConfigError(f"--batch-sizes={args.batch_sizes!r}: expected whole numbers separated by commas") from None
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        raise ConfigError(f"--batch-sizes={args.batch_sizes}: expected whole numbers >= 1")
    for key, least in (("steps", 1), ("epochs", 2), ("rounds", 1)):
        if getattr(args, key) < least:
            raise ConfigError(f"--{key}={getattr(args, key)}: expected at least {least}")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile a config; returns the measurements and the files written."""
    from torch.utils.tensorboard import SummaryWriter

    args = parse(list(sys.argv[1:] if argv is None else argv))
    config = runs.with_shipped_configs(["--config", args.config])[1]
    if not Path(config).is_file():
        raise ConfigError(f"--config {args.config}: no such file or shipped config")
    apply_thread_policy()
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-run banners between the tables
        logging.getLogger(name).setLevel(logging.WARNING)
    engines = ENGINES if args.engine == "both" else (args.engine,)
    runners = {e: functools.partial(run_loop if e == "loop" else run_lightning, batches_per_epoch=args.steps)
               for e in ENGINES}
    import yaml

    data_args = (yaml.safe_load(Path(config).read_text()) or {}).get("data", {}).get("init_args", {})
    config_batch, config_samples = int(data_args.get("batch_size", 64)), int(data_args.get("n_samples", 1000))

    def overrides(batch: int) -> list[str]:  # enough samples for `steps` batches in the train split
        samples = max(config_samples, math.ceil(batch * args.steps / 0.6) + 2 * batch)
        return ["--config", config, f"--trainer.max_epochs={args.epochs}",
                f"--trainer.limit_train_batches={args.steps}", "--trainer.limit_val_batches=1",
                f"--data.batch_size={batch}", f"--data.n_samples={samples}"]

    run_folder = runs.claim_new_run(Path(LOG_DIR) / runs.run_name([config]), RUN_PREFIX)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            profiled = {e: runners[e](overrides(config_batch), args.epochs, True, Path(tmp) / f"{e}-timed")
                        for e in engines}
            runs_of: dict[tuple[str, int | None], list[float]] = {}
            for r in range(args.rounds):  # interleaved: machine noise hits every batch size alike
                for key in [(e, None) for e in engines] + [(e, b) for b in args.batch_sizes for e in engines]:
                    measured = runners[key[0]](overrides(key[1] or config_batch), args.epochs, False,
                                               Path(tmp) / f"{key[0]}-{key[1]}-{r}")
                    runs_of.setdefault(key, []).append(measured.step_s)
            median = {key: Measured(statistics.median(times)) for key, times in runs_of.items()}
            plain = {e: median[(e, None)] for e in engines}
            sweep = {(e, b): median[(e, b)] for b in args.batch_sizes for e in engines}
        memories = {b: memory(overrides(b)) for b in args.batch_sizes}
        text = report(args, config, config_batch, engines, profiled, plain, sweep, memories)
        print("\n".join(text), flush=True)
        paths = {"markdown": run_folder.path / "profile.md", "chart": run_folder.path / "profile.png"}
        write_atomic(paths["markdown"], ("\n".join(text) + "\n").encode())
        image = chart(profiled, f"{runs.run_name([config])}, batch {config_batch}: us per step by bucket")
        png = io.BytesIO()
        image.save(png, format="PNG")
        write_atomic(paths["chart"], png.getvalue())
        import numpy as np

        with SummaryWriter(str(run_folder.path)) as writer:
            writer.add_image("profile/step_buckets", np.asarray(image), 0, dataformats="HWC")
            writer.add_text("profile/tables", "\n".join(text), 0)
    except BaseException:
        run_folder.release(failed=True)
        raise
    run_folder.release(failed=False)
    print(f"written to {run_folder.path}", flush=True)
    return {"profiled": profiled, "plain": plain, "sweep": sweep, "memory": memories, "run_dir": run_folder.path,
            **paths}


def report(args: argparse.Namespace, config: str, batch: int, engines: tuple[str, ...],
           profiled: dict[str, Measured], plain: dict[str, Measured], sweep: dict[tuple[str, int], Measured],
           memories: dict[int, dict[str, float]]) -> list[str]:
    text = [f"# toyloops profile: {runs.run_name([config])}", "",
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.steps} steps per epoch, "
            f"{args.epochs - 1} timed epoch(s) after a warm-up; untimed runs: median of {args.rounds} round(s); "
            "µs per step.", "",
            f"## Where a step goes (batch {batch})", ""]
    header = ["bucket", *(f"{e} µs" for e in engines), *(f"{e} %" for e in engines)]
    rows = [[bucket, *(f"{profiled[e].buckets[bucket] * 1e6:.1f}" for e in engines),
             *(f"{100 * profiled[e].buckets[bucket] / profiled[e].step_s:.1f}" for e in engines)] for bucket in BUCKETS]
    rows.append(["**step, timed**", *(f"{profiled[e].step_s * 1e6:.1f}" for e in engines), *("100.0" for _ in engines)])
    rows.append(["step without timers", *(f"{plain[e].step_s * 1e6:.1f}" for e in engines), *("" for _ in engines)])
    text += _table(header, rows)
    text += ["", "## Batch sweep", ""]
    rows = []
    for b in args.batch_sizes:
        row = [str(b)]
        for e in engines:
            step, first = sweep[(e, b)].step_s, sweep[(e, args.batch_sizes[0])].step_s
            row += [f"{step * 1e6:.0f}", f"{b / step:,.0f}", f"{(b / step) / (args.batch_sizes[0] / first):.1f}x",
                    f"{first / step:.2f}"]
        rows.append(row)
    header = ["batch", *(f"{e} {c}" for e in engines for c in ("µs/step", "samples/s", "speed-up", "efficiency"))]
    text += _table(header, rows)
    text += ["", f"Speed-up: samples/s over batch {args.batch_sizes[0]}'s. Efficiency: step time at batch "
             f"{args.batch_sizes[0]} / step time at batch B (1.00: a batch costs what one sample does).", "",
             "## Memory per batch size (one training step)", ""]
    parts = ("parameters", "gradients", "optimizer state", "activations", "batch")
    rows = [[str(b), *(_size(memories[b][p]) for p in parts),
             _size(memories[b]["gradients"] + memories[b]["activations"]), _size(memories[b]["peak"])]
            for b in args.batch_sizes]
    text += _table(["batch", *parts, "gradients + activations", "measured peak above the step's start"], rows)
    text += ["", "Computed: bytes of the tensors (activations: those autograd saves for backward, parameters left "
             "out). Measured: " + ("torch.cuda.max_memory_allocated" if torch.cuda.is_available() else
                                   "torch.profiler's CPU allocator record (profile_memory), op by op") +
             ", above what was allocated when the step began (parameters and optimizer state were already there)."]
    return text
