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
from contextlib import ExitStack, contextmanager, nullcontext, redirect_stderr, redirect_stdout
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
    """Exclusive time per bucket: a timed range's duration minus the timed ranges inside it. Backward
    runs inside torch, from the loss's grad_fn to the last gradient; it is filed at the next range's edge."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(BUCKETS, 0.0)
        self.recording = False
        self.stack: list[list] = []  # [bucket, start, time of timed ranges inside]
        self.backward: list[float] | None = None  # [start, last gradient ready]

    def enter(self, bucket: str) -> None:
        self.close_backward()
        self.stack.append([bucket, time.perf_counter(), 0.0])

    def exit(self, *_: Any) -> None:
        now = time.perf_counter()
        self.close_backward()
        bucket, start, inside = self.stack.pop()
        self.add(bucket, now - start, inside)

    def add(self, bucket: str, duration: float, inside: float = 0.0) -> None:
        if self.recording:
            self.totals[bucket] += duration - inside
        if self.stack:
            self.stack[-1][2] += duration

    def backward_started(self, *_: Any) -> None:
        self.close_backward()
        self.backward = [time.perf_counter()] * 2

    def gradient_ready(self, *_: Any) -> None:
        if self.backward is not None:
            self.backward[1] = time.perf_counter()

    def close_backward(self) -> None:
        if self.backward is not None:
            (start, end), self.backward = self.backward, None
            self.add("backward", end - start)

    def wrap(self, fn: Callable, bucket: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(bucket)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()
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
               register_optimizer_step_pre_hook(step_started), register_optimizer_step_post_hook(clock.exit)]
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


HAND_ACTIONS = {"batch_to_device": "host->device", "training_step": "loss", "optimizer_step": "clip",
                "update_lr_schedulers": "scheduler", "log_metrics": "logging", "log_learning_rate": "logging"}
LIGHTNING_ACTIONS = ((".train_dataloader_next", "data gather"), (".batch_to_device", "host->device"),
                     (".optimizer_zero_grad", "optimizer step"), (".configure_gradient_clipping", "clip"),
                     (".lr_scheduler_step", "scheduler"))


@functools.cache
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
            self.steps = self.epoch = self.batches = 0  # steps: those of the recorded epochs
            self.started = 0.0

        def start(self, action_name: str) -> None:
            if action_name == "run_training_epoch":
                clock.recording, self.batches, self.started = timed and self.epoch > 0, 0, time.perf_counter()
            elif timed and (bucket := action_bucket(action_name)):
                clock.enter(bucket)

        def stop(self, action_name: str) -> None:
            if action_name == "run_training_batch":
                self.batches += 1
                if self.batches == batches_per_epoch:  # the epoch's last: validation and epoch end are not steps
                    self.times.append((time.perf_counter() - self.started) / self.batches)
                    self.steps += self.batches if clock.recording else 0
                    clock.recording = False
            elif action_name == "run_training_epoch":
                self.epoch += 1
            elif timed and action_bucket(action_name):
                clock.exit()

    return BucketProfiler()


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


def measure(engine: str, args: list[str], epochs: int, timed: bool, run_dir: Path, batches_per_epoch: int) -> Measured:
    """One engine's ``fit`` with the bucket profiler: the hand loop's ``hand_trainer`` (no checkpoints, no
    bars, no early stop), or Lightning's ``Trainer`` as ``train.py`` builds it (logger, checkpoints, bar,
    callbacks). ``timed``: with the bucket timers, else the step alone."""
    clock = Clock()
    profiler = bucket_profiler(clock, batches_per_epoch, timed)
    with ExitStack() as stack:
        if engine == "loop":
            (trainer, model, datamodule), folder = hand_trainer(args, run_dir, profiler), None
        else:
            from toyloops.engine.cli import ToyCLI

            class ProfiledCLI(ToyCLI):
                def instantiate_trainer(self, **kwargs: Any) -> Any:
                    return super().instantiate_trainer(**kwargs, profiler=profiler)

            stack.enter_context(redirect_stdout(io.StringIO()))
            stack.enter_context(redirect_stderr(io.StringIO()))
            cli = ProfiledCLI(args=[*args, "--dashboard.boundary_every_n_epochs=0", "--dashboard.graph=false",
                                    "--dashboard.confusion_matrix=false", "--trainer.enable_model_summary=false",
                                    f"--trainer.default_root_dir={run_dir}"], run=False)
            trainer, model, datamodule, folder = cli.trainer, cli.model, cli.datamodule, cli.run_folder
        with instrument(clock, model) if timed else nullcontext():
            trainer.fit(model, datamodule=datamodule)
        if folder is not None:
            folder.release(failed=False)
    times = profiler.times
    if len(times) != epochs:
        raise RuntimeError(f"expected {epochs} epochs of training batches, timed {times}")
    if not timed:
        return Measured(statistics.median(times[1:] or times))
    wall = sum(times[1:]) / len(times[1:])  # the buckets are totals over the same epochs
    buckets = {name: total / profiler.steps for name, total in clock.totals.items() if name != "engine (rest)"}
    buckets["engine (rest)"] = wall - sum(buckets.values())  # what no timed range holds, the closure's glue too
    return Measured(wall, buckets)


run_loop = functools.partial(measure, "loop")  # 0.1's toyloops.profile.run_loop


def memory(args: list[str]) -> dict[str, float]:
    """Bytes of one training step at the config's batch size: computed parts and measured peak."""
    from lightning.pytorch.trainer.states import TrainerFn

    with tempfile.TemporaryDirectory() as tmp:
        trainer, model, datamodule = hand_trainer(args, Path(tmp) / "memory")
        with trainer.attached(model, datamodule, TrainerFn.FITTING):
            trainer.configure_optimizers(model)
    model.train()
    optimizer = trainer.optimizer
    batch = trainer.batch_to_device(next(iter(datamodule.train_dataloader())))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage -> bytes, of the tensors autograd saves that are not parameters

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if (storage := tensor.untyped_storage()).data_ptr() not in params:
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
    peak = _peak_bytes(step, trainer.strategy.root_device)
    model.epoch_metrics("train")  # drop the stashed predictions
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    parts = {"parameters": list(model.parameters()), "gradients": [p for p in model.parameters() if p.requires_grad],
             "optimizer state": state}
    return {**{part: sum(t.numel() * t.element_size() for t in tensors) for part, tensors in parts.items()},
            "activations": sum(saved.values()), "batch": sum(t.numel() * t.element_size() for t in batch),
            "peak": peak}


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


def chart(results: dict[str, Measured], title: str) -> Any:
    """A stacked bar per engine, one colour per bucket, in µs per step (a Pillow image)."""
    from PIL import Image, ImageDraw

    width, height, left, bar, top = 760, 380, 70, 120, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    scale = (height - top - 40) / max(m.step_s * 1e6 for m in results.values() if m.buckets)
    for i, (engine, measured) in enumerate(results.items()):
        x, y = left + i * (bar + 40), height - 30
        for bucket, colour in zip(BUCKETS, COLOURS, strict=True):
            h = max(0.0, measured.buckets[bucket]) * 1e6 * scale
            draw.rectangle((x, y - h, x + bar, y), fill=colour)
            y -= h
        draw.text((x, height - 25), f"{engine}: {measured.step_s * 1e6:.0f} us", fill="black")
    for j, (bucket, colour) in enumerate(zip(BUCKETS, COLOURS, strict=True)):  # the legend
        draw.rectangle((width - 200, top + j * 22, width - 186, top + j * 22 + 14), fill=colour)
        draw.text((width - 180, top + j * 22 + 1), bucket, fill="black")
    return image


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
    import numpy as np
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    args = parse(list(sys.argv[1:] if argv is None else argv))
    config = runs.with_shipped_configs(["--config", args.config])[1]
    if not Path(config).is_file():
        raise ConfigError(f"--config {args.config}: no such file or shipped config")
    apply_thread_policy()
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-run banners between the tables
        logging.getLogger(name).setLevel(logging.WARNING)
    engines = ENGINES if args.engine == "both" else (args.engine,)
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
            def fit(engine: str, batch: int | None, timed: bool, name: str) -> Measured:
                return measure(engine, overrides(batch or config_batch), args.epochs, timed, Path(tmp) / name,
                               args.steps)

            profiled = {e: fit(e, None, True, f"{e}-timed") for e in engines}
            times: dict[tuple[str, int | None], list[float]] = {}
            for r in range(args.rounds):  # interleaved: machine noise hits every batch size alike
                for e, b in [(e, None) for e in engines] + [(e, b) for b in args.batch_sizes for e in engines]:
                    times.setdefault((e, b), []).append(fit(e, b, False, f"{e}-{b}-{r}").step_s)
        sweep = {key: Measured(statistics.median(step_s)) for key, step_s in times.items()}
        plain = {e: sweep.pop((e, None)) for e in engines}  # the config's batch; the batch sizes' are left
        memories = {b: memory(overrides(b)) for b in args.batch_sizes}
        text = "\n".join(report(args, config, config_batch, engines, profiled, plain, sweep, memories))
        print(text, flush=True)
        image = chart(profiled, f"{runs.run_name([config])}, batch {config_batch}: us per step by bucket")
        png = io.BytesIO()
        image.save(png, format="PNG")
        paths = {"markdown": run_folder.path / "profile.md", "chart": run_folder.path / "profile.png"}
        write_atomic(paths["markdown"], (text + "\n").encode())
        write_atomic(paths["chart"], png.getvalue())
        with SummaryWriter(str(run_folder.path)) as writer:
            writer.add_image("profile/step_buckets", np.asarray(image), 0, dataformats="HWC")
            writer.add_text("profile/tables", text, 0)
    except BaseException:
        run_folder.release(failed=True)
        raise
    run_folder.release(failed=False)
    print(f"written to {run_folder.path}", flush=True)
    return {"profiled": profiled, "plain": plain, "sweep": sweep, "memory": memories, "run_dir": run_folder.path,
            **paths}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows)]


def _size(n: float) -> str:
    return f"{n:,.0f} B" if n < 1024 else f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def report(args: argparse.Namespace, config: str, batch: int, engines: tuple[str, ...],
           profiled: dict[str, Measured], plain: dict[str, Measured], sweep: dict[tuple[str, int], Measured],
           memories: dict[int, dict[str, float]]) -> list[str]:
    first = args.batch_sizes[0]
    text = [f"# toyloops profile: {runs.run_name([config])}", "",
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.steps} steps per epoch, "
            f"{args.epochs - 1} timed epoch(s) after a warm-up; untimed runs: median of {args.rounds} round(s); "
            "µs per step.", "", f"## Where a step goes (batch {batch})", ""]
    rows = [[bucket, *(f"{profiled[e].buckets[bucket] * 1e6:.1f}" for e in engines),
             *(f"{100 * profiled[e].buckets[bucket] / profiled[e].step_s:.1f}" for e in engines)] for bucket in BUCKETS]
    rows.append(["**step, timed**", *(f"{profiled[e].step_s * 1e6:.1f}" for e in engines), *("100.0" for _ in engines)])
    rows.append(["step without timers", *(f"{plain[e].step_s * 1e6:.1f}" for e in engines), *("" for _ in engines)])
    text += _table(["bucket", *(f"{e} µs" for e in engines), *(f"{e} %" for e in engines)], rows)
    text += ["", "## Batch sweep", ""]
    rows = [[str(b), *(cell for e in engines for step, base in [(sweep[(e, b)].step_s, sweep[(e, first)].step_s)]
                       for cell in (f"{step * 1e6:.0f}", f"{b / step:,.0f}", f"{(b / step) / (first / base):.1f}x",
                                    f"{base / step:.2f}"))] for b in args.batch_sizes]
    columns = ("µs/step", "samples/s", "speed-up", "efficiency")
    text += _table(["batch", *(f"{e} {c}" for e in engines for c in columns)], rows)
    text += ["", f"Speed-up: samples/s over batch {first}'s. Efficiency: step time at batch {first} / step time at "
             "batch B (1.00: a batch costs what one sample does).", "", "## Memory per batch size (one training step)",
             ""]
    parts = ("parameters", "gradients", "optimizer state", "activations", "batch")
    rows = [[str(b), *(_size(m[p]) for p in parts), _size(m["gradients"] + m["activations"]), _size(m["peak"])]
            for b in args.batch_sizes for m in [memories[b]]]
    text += _table(["batch", *parts, "gradients + activations", "measured peak above the step's start"], rows)
    measured = ("torch.cuda.max_memory_allocated" if torch.cuda.is_available() else
                "torch.profiler's CPU allocator record (profile_memory), op by op")
    return [*text, "", "Computed: bytes of the tensors (activations: those autograd saves for backward, parameters "
            f"left out). Measured: {measured}, above what was allocated when the step began (parameters and "
            "optimizer state were already there)."]
