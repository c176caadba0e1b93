"""toyloops profile --config C [--engine lightning|loop|both] [--batch-sizes 1,8,64,512]

Where a training step's time and memory go, in both engines (docs/performance.md): the step in :data:`BUCKETS`,
each timed through a public mechanism (hooks on the net, autograd and optimizer steps, a Lightning ``Profiler``),
samples/s per batch size, one step's memory; into ``logs/<config>/profile_version_N/``. Timers only read clocks.
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image, ImageDraw
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.tensorboard import SummaryWriter

from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.cli import ToyCLI
from toyloops.engine.defaults import LOG_DIR, apply_thread_policy
from toyloops.engine.loggers import TensorBoardLogger
from toyloops.engine.loop import HandTrainer
from toyloops.engine.loop_cli import build, trainer_options
from toyloops.rules.errors import ConfigError

BUCKETS = ("data gather", "host->device", "forward", "loss", "backward", "clip", "optimizer step", "scheduler",
           "logging", "callbacks", "engine (rest)")
COLOURS = ((66, 133, 244), (26, 188, 156), (234, 67, 53), (251, 188, 5), (155, 89, 182), (52, 168, 83),
           (230, 126, 34), (127, 140, 141), (241, 196, 15), (52, 73, 94), (189, 195, 199))
RUN_PREFIX = "profile_version_"
HAND_ACTIONS = {"batch_to_device": "host->device", "training_step": "loss", "optimizer_step": "clip",
                "update_lr_schedulers": "scheduler", "log_metrics": "logging", "log_learning_rate": "logging"}
LIGHTNING_ACTIONS = ((".train_dataloader_next", "data gather"), (".batch_to_device", "host->device"),
                     (".optimizer_zero_grad", "optimizer step"), (".configure_gradient_clipping", "clip"),
                     (".lr_scheduler_step", "scheduler"), (".training_step", "loss"))


@functools.cache
def action_bucket(action: str) -> str | None:
    """The bucket of a profiler action: a bucket's own name (this module's timers), Lightning's or the hand
    trainer's (None: only the ranges inside count). The forward and backward inside "loss" count as their own."""
    if action in BUCKETS:
        return action
    if action.startswith("[HandTrainer]."):
        return HAND_ACTIONS.get(action.removeprefix("[HandTrainer]."))
    if action.startswith("[Callback]"):
        return "logging" if action.startswith("[Callback]LearningRateMonitor") else "callbacks"
    return next((bucket for suffix, bucket in LIGHTNING_ACTIONS if action.endswith(suffix)), None)


class BucketProfiler(Profiler):
    """A Lightning profiler (its documented extension point) that times each epoch's training batches, from the
    epoch's start to its last batch's end, and, when ``timed``, files the actions it is told of, its own
    (:meth:`instrument`) among them, into buckets: a time counts once, in the innermost bucket around it."""

    def __init__(self, batches_per_epoch: int, timed: bool) -> None:
        super().__init__()
        self.batches_per_epoch, self.timed, self.recording = batches_per_epoch, timed, False
        self.totals = dict.fromkeys(BUCKETS, 0.0)
        self.stack: list[list] = [["", 0.0, 0.0]]  # [bucket, start, time of timed ranges inside], under a root
        self.times: list[float] = []  # seconds per step, one a training epoch
        self.steps = self.batches = 0  # steps: those of the recorded epochs
        self.started = self.backward_end = 0.0  # the epoch's start; the open backward's last gradient

    def start(self, action_name: str) -> None:
        if action_name == "run_training_epoch":
            self.recording, self.batches, self.started = self.timed and bool(self.times), 0, time.perf_counter()
        elif self.timed and (bucket := action_bucket(action_name)):
            self.close_backward()
            self.stack.append([bucket, time.perf_counter(), 0.0])

    def stop(self, action_name: str, now: float | None = None) -> None:
        if action_name == "run_training_batch":
            self.batches += 1
            if self.batches == self.batches_per_epoch:  # the epoch's last: validation and epoch end are not steps
                self.times.append((time.perf_counter() - self.started) / self.batches)
                self.steps += self.batches if self.recording else 0
                self.recording = False
        elif self.timed and action_bucket(action_name):
            now = time.perf_counter() if now is None else now
            if action_name != "backward":
                self.close_backward()
            bucket, start, inside = self.stack.pop()
            self.totals[bucket] += (now - start - inside) if self.recording else 0.0
            self.stack[-1][2] += now - start

    # backward runs inside torch, from the loss's grad_fn to the last gradient: closed at the next range's edge
    def backward_started(self, *_: Any) -> None:
        self.start("backward")
        self.backward_end = self.stack[-1][1]

    def gradient_ready(self, *_: Any) -> None:
        self.backward_end = time.perf_counter()

    def close_backward(self) -> None:
        if self.stack[-1][0] == "backward":
            self.stop("backward", now=self.backward_end)

    @contextmanager
    def instrument(self, model: torch.nn.Module) -> Iterator[None]:
        """When ``timed``, hooks on what both engines share: the net's forward and backward, any optimizer's step."""

        def step_started(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            self.start("optimizer step")
            if (closure := kwargs.get("closure")) is None:
                return None

            # Lightning's training step runs inside optimizer.step, as a closure: what it does outside the timed
            # ranges is the engine's, not the optimizer's (a step pre-hook may hand the step other arguments)
            def timed_closure() -> Any:
                with self.profile("engine (rest)"):
                    return closure()
            return args, {**kwargs, "closure": timed_closure}

        def forward_done(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self.stop("forward")
            if isinstance(output, torch.Tensor) and output.grad_fn is not None:  # training: backward will reach it
                output.grad_fn.register_prehook(self.backward_started)

        handles = [model.net.register_forward_pre_hook(lambda *_: self.start("forward")),
                   model.net.register_forward_hook(forward_done), register_optimizer_step_pre_hook(step_started),
                   register_optimizer_step_post_hook(lambda *_: self.stop("optimizer step")),
                   *(p.register_post_accumulate_grad_hook(self.gradient_ready) for p in model.parameters()
                     if p.requires_grad)] if self.timed else []
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


class Measured(NamedTuple):
    step_s: float  # median seconds per training step over the timed epochs
    buckets: dict[str, float] | None = None  # seconds per step, by bucket


def hand_trainer(args: list[str], run_dir: Path, profiler: Any = None) -> tuple[Any, Any, Any]:
    """The config's model and data, and a HandTrainer logging into ``run_dir`` (no checkpoints, no bars)."""
    cfg, objects = build(args)
    logger = TensorBoardLogger(str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
    return (HandTrainer(**{**trainer_options(cfg), "callbacks": [LearningRateMonitor()], "logger": logger,
                           "enable_progress_bar": False, "enable_model_summary": False, "profiler": profiler,
                           "num_sanity_val_steps": 0}), objects.model, objects.data)


def measure(engine: str, args: list[str], epochs: int, timed: bool, run_dir: Path, batches_per_epoch: int) -> Measured:
    """``fit`` with the bucket profiler: the hand loop as :func:`hand_trainer` builds it, Lightning as ``train.py``."""
    profiler = BucketProfiler(batches_per_epoch, timed)
    if engine == "loop":
        trainer, model, datamodule = hand_trainer(args, run_dir, profiler)
        with profiler.instrument(model):
            trainer.fit(model, datamodule=datamodule)
    else:
        class ProfiledCLI(ToyCLI):
            def instantiate_trainer(self, **kwargs: Any) -> Any:
                return super().instantiate_trainer(**kwargs, profiler=profiler)

        quiet = ["--dashboard.boundary_every_n_epochs=0", "--dashboard.graph=false",
                 "--dashboard.confusion_matrix=false", "--trainer.enable_model_summary=false"]
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            cli = ProfiledCLI(args=[*args, *quiet, f"--trainer.default_root_dir={run_dir}"], run=False)
            with profiler.instrument(cli.model):
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            if cli.run_folder is not None:
                cli.run_folder.release(failed=False)
    if len(times := profiler.times) != epochs:
        raise RuntimeError(f"expected {epochs} epochs of training batches, timed {times}")
    if not timed:
        return Measured(statistics.median(times[1:] or times))
    wall = sum(times[1:]) / len(times[1:])  # the buckets are totals over the same epochs
    buckets = {name: total / profiler.steps for name, total in profiler.totals.items() if name != "engine (rest)"}
    return Measured(wall, {**buckets, "engine (rest)": wall - sum(buckets.values())})  # the closure's glue too


run_loop = functools.partial(measure, "loop")  # 0.1's toyloops.profile.run_loop


def memory(args: list[str]) -> dict[str, float]:
    """Bytes of one training step at the config's batch size: computed parts and measured peak."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer, model, datamodule = hand_trainer(args, Path(tmp) / "memory")
        with trainer.attached(model, datamodule, TrainerFn.FITTING):
            trainer.configure_optimizers(model)
    model.train()
    optimizer, params = trainer.optimizer, {p.untyped_storage().data_ptr() for p in model.parameters()}
    batch = trainer.batch_to_device(next(iter(datamodule.train_dataloader())))
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
    if trainer.strategy.root_device.type == "cuda":  # the most one step holds above what was allocated before it
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        logging.getLogger("torch.profiler").setLevel(logging.ERROR)
        with without_kineto_lines(), redirect_stderr(io.StringIO()), torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        allocations = sorted((e.time_range.start, e.cpu_memory_usage) for e in prof.events() if e.cpu_parent is None)
        peak = max([0, *itertools.accumulate(allocated for _, allocated in allocations)])
    model.epoch_metrics("train")  # drop the stashed predictions
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    parts = {"parameters": list(model.parameters()), "gradients": [p for p in model.parameters() if p.requires_grad],
             "optimizer state": state, "batch": batch}
    return {**{part: sum(t.numel() * t.element_size() for t in tensors) for part, tensors in parts.items()},
            "activations": sum(saved.values()), "peak": peak}


@contextmanager
def without_kineto_lines() -> Iterator[None]:
    """torch's Kineto writes ``USDT:`` trace lines straight to file descriptor 2 as a CPU profile starts and
    stops, and its allocator a warning that blocks allocated before the profile have no size (the parameters:
    expected, as the step is measured above them); C++ logging, no Python switch. fd 2 goes to a temporary
    file for the block, and every other line written there is passed on to stderr after it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not line.startswith("USDT:") and
                                     "allocated before the profiling started" not in line))


def chart(results: dict[str, Measured], title: str) -> Any:
    """A stacked bar per engine, one colour per bucket, in µs per step, and a legend (a Pillow image)."""
    width, height, left, bar, top = 760, 380, 70, 120, 40
    draw = ImageDraw.Draw(image := Image.new("RGB", (width, height), "white"))
    draw.text((10, 10), title, fill="black")
    scale = (height - top - 40) / max(m.step_s * 1e6 for m in results.values() if m.buckets)
    for i, (engine, measured) in enumerate(results.items()):
        x, y = left + i * (bar + 40), height - 30
        for bucket, colour in zip(BUCKETS, COLOURS, strict=True):
            h = max(0.0, measured.buckets[bucket]) * 1e6 * scale
            draw.rectangle((x, y - h, x + bar, y), fill=colour)
            y -= h
        draw.text((x, height - 25), f"{engine}: {measured.step_s * 1e6:.0f} us", fill="black")
    for y, bucket, colour in zip(range(top, height, 22), BUCKETS, COLOURS):  # noqa: B905 - more rows than buckets
        draw.rectangle((width - 200, y, width - 186, y + 14), fill=colour)
        draw.text((width - 180, y + 1), bucket, fill="black")
    return image


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toyloops profile", description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", required=True, help="a run config: path or shipped name")
    parser.add_argument("--engine", default="both", help="lightning, loop or both")
    parser.add_argument("--batch-sizes", default="1,8,64,512", help="comma-separated, for the sweeps")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first warms up")
    parser.add_argument("--rounds", type=int, default=1, help="untimed rounds (every batch size once a round); medians")
    args = parser.parse_args(argv)
    if args.engine not in ("lightning", "loop", "both"):
        raise ConfigError(f"--engine={args.engine!r}: expected lightning, loop or both")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ConfigError(f"--batch-sizes={args.batch_sizes!r}: expected whole numbers separated by commas") from None
    if min(args.batch_sizes) < 1:
        raise ConfigError(f"--batch-sizes={args.batch_sizes}: expected whole numbers >= 1")
    for key, least in (("steps", 1), ("epochs", 2), ("rounds", 1)):
        if getattr(args, key) < least:
            raise ConfigError(f"--{key}={getattr(args, key)}: expected at least {least}")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile a config; returns the measurements and the files written."""
    args = parse(list(sys.argv[1:] if argv is None else argv))
    config = runs.with_shipped_configs(["--config", args.config])[1]
    if not Path(config).is_file():
        raise ConfigError(f"--config {args.config}: no such file or shipped config")
    apply_thread_policy()
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-run banners between the tables
        logging.getLogger(name).setLevel(logging.WARNING)
    engines, name = ("loop", "lightning") if args.engine == "both" else (args.engine,), runs.run_name([config])
    data_args = (yaml.safe_load(Path(config).read_text()) or {}).get("data", {}).get("init_args", {})
    config_batch, config_samples = int(data_args.get("batch_size", 64)), int(data_args.get("n_samples", 1000))

    def overrides(batch: int) -> list[str]:  # enough samples for `steps` batches in the train split
        samples = max(config_samples, math.ceil(batch * args.steps / 0.6) + 2 * batch)
        return ["--config", config, f"--trainer.max_epochs={args.epochs}", "--trainer.limit_val_batches=1",
                f"--trainer.limit_train_batches={args.steps}", f"--data.batch_size={batch}",
                f"--data.n_samples={samples}"]

    run_folder = runs.claim_new_run(Path(LOG_DIR) / name, RUN_PREFIX)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def fit(engine: str, batch: int | None, timed: bool, run: str) -> Measured:
                return measure(engine, overrides(batch or config_batch), args.epochs, timed, Path(tmp, run), args.steps)

            profiled = {e: fit(e, None, True, f"{e}-timed") for e in engines}
            times: dict[tuple[str, int | None], list[float]] = {}
            for r in range(args.rounds):  # interleaved: machine noise hits every batch size alike
                for e, b in [(e, None) for e in engines] + [(e, b) for b in args.batch_sizes for e in engines]:
                    times.setdefault((e, b), []).append(fit(e, b, False, f"{e}-{b}-{r}").step_s)
        sweep = {key: Measured(statistics.median(step_s)) for key, step_s in times.items()}
        plain = {e: sweep.pop((e, None)) for e in engines}  # the config's batch; the batch sizes' are left
        memories = {b: memory(overrides(b)) for b in args.batch_sizes}
        print(text := "\n".join(report(args, name, config_batch, profiled, plain, sweep, memories)), flush=True)
        image, png = chart(profiled, f"{name}, batch {config_batch}: us per step by bucket"), io.BytesIO()
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


main = functools.partial(runs.main, run)  # toyloops profile ...: run, its errors as one-line messages


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["", f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows), ""]


def _size(n: float) -> str:
    return f"{n:,.0f} B" if n < 1024 else f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def report(args: argparse.Namespace, name: str, batch: int, profiled: dict[str, Measured], plain: dict[str, Measured],
           sweep: dict[tuple[str, int], Measured], memories: dict[int, dict[str, float]]) -> list[str]:
    engines, first, columns = tuple(profiled), args.batch_sizes[0], ("µs/step", "samples/s", "speed-up", "efficiency")
    parts = ("parameters", "gradients", "optimizer state", "activations", "batch")
    rows = [[bucket, *(f"{profiled[e].buckets[bucket] * 1e6:.1f}" for e in engines),
             *(f"{100 * profiled[e].buckets[bucket] / profiled[e].step_s:.1f}" for e in engines)] for bucket in BUCKETS]
    rows += [["**step, timed**", *(f"{profiled[e].step_s * 1e6:.1f}" for e in engines), *["100.0"] * len(engines)],
             ["step without timers", *(f"{plain[e].step_s * 1e6:.1f}" for e in engines), *[""] * len(engines)]]

    def sweep_cells(e: str, b: int) -> list[str]:
        step, base = sweep[(e, b)].step_s, sweep[(e, first)].step_s
        return [f"{step * 1e6:.0f}", f"{b / step:,.0f}", f"{(b / step) / (first / base):.1f}x", f"{base / step:.2f}"]

    measured = ("torch.cuda.max_memory_allocated" if torch.cuda.is_available() else
                "torch.profiler's CPU allocator record (profile_memory), op by op")
    return [f"# toyloops profile: {name}", "",
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.steps} steps per epoch, "
            f"{args.epochs - 1} timed epoch(s) after a warm-up; untimed runs: median of {args.rounds} round(s); "
            "µs per step.", "", f"## Where a step goes (batch {batch})",
            *_table(["bucket", *(f"{e} µs" for e in engines), *(f"{e} %" for e in engines)], rows),
            "## Batch sweep",
            *_table(["batch", *(f"{e} {c}" for e in engines for c in columns)],
                    [[str(b), *(cell for e in engines for cell in sweep_cells(e, b))] for b in args.batch_sizes]),
            f"Speed-up: samples/s over batch {first}'s. Efficiency: step time at batch {first} / step time at batch B "
            "(1.00: a batch costs what one sample does).", "", "## Memory per batch size (one training step)",
            *_table(["batch", *parts, "gradients + activations", "measured peak above the step's start"],
                    [[str(b), *(_size(m[p]) for p in parts), _size(m["gradients"] + m["activations"]),
                      _size(m["peak"])] for b in args.batch_sizes for m in [memories[b]]]),
            "Computed: bytes of the tensors (activations: those autograd saves for backward, parameters left out). "
            f"Measured: {measured}, above what was allocated when the step began (parameters and optimizer state "
            "were already there)."]
