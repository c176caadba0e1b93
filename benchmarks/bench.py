"""python benchmarks/bench.py [--quick] [--out benchmarks/RESULTS.md]

Time per training step of several ways to train the same model on the same batches, measured side
by side in one process, interleaved round by round (so machine noise hits every variant alike):

  bare         forward + backward + optimizer step on pre-sliced batches (the floor), with the
               optimizer toyloops builds (fused AdamW); "for-loop" is torch's CPU default AdamW
  hand loop    toyloops.HandTrainer.training_epoch_loop with its shipped defaults
  barebones    a plain L.Trainer: no logger, checkpoints, progress bar or callbacks (Lightning's floor)
  lightning    Trainer.fit as train.py builds it (logger, checkpoints, progress bar, callbacks);
               "stock bar and logger" is the same with Lightning's own TQDMProgressBar (every step) and
               TensorBoardLogger (flushed after every log); "log every 50" logs at Lightning's default
               interval instead of the template's 10 steps (the barebones Trainer logs every 50)
  seed style   DataLoader(TensorDataset, shuffle=True) with per-sample collation, .item() a step

No variant clips gradients (the configs' gradient_clip_val is switched off for Lightning, as the
bare step and the hand loop here do not clip). All run with toyloops' thread policy (one thread).

A step's time is the median over epochs (after a warm-up epoch) of the training phase of an
epoch divided by its steps; epoch-end work (validation, checkpoints) is left out of every variant.
Also: the hand loop against the NumPy rung's step, the data path alone, batch-size and dataset-size
sweeps, `toyloops` end to end (fit, --help, bad input) against the bare `import lightning` time,
and `toyloops profile` of the three configs. Prints markdown tables and writes them to --out.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, TensorDataset

from toyloops import MLP, Classifier, LogisticRegression, PointsDataModule, SequenceDataModule, TransformerClassifier
from toyloops.core.nets import classification_loss
from toyloops.engine.cli import ToyCLI
from toyloops.engine.defaults import apply_thread_policy
from toyloops.engine.loggers import TensorBoardLogger
from toyloops.engine.loop import HandTrainer
from toyloops.engine.runs import freeze_imports
from toyloops.rules.specs import build_optimizer
from toyloops.tools import scratch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name: (config, data module, net factory); one logit, as the configs choose
    "logistic / blobs": ("blobs_logistic", lambda **kw: PointsDataModule("blobs", **kw),
                         lambda: LogisticRegression(2, 2, binary_logits=1)),
    "MLP / circles": ("circles_mlp", lambda **kw: PointsDataModule("circles", **kw),
                      lambda: MLP(2, 2, hidden_sizes=[32, 32], binary_logits=1)),
    "Transformer / majority": ("majority_transformer", lambda **kw: SequenceDataModule("majority", **kw),
                               lambda: TransformerClassifier(50, 16, 2, d_model=32, nhead=4, num_layers=1,
                                                             dim_feedforward=64, dropout=0.0, pooling="mean",
                                                             binary_logits=1)),
}


def _optimizer(net: torch.nn.Module, default: bool = True) -> torch.optim.Optimizer:
    """The AdamW toyloops builds (fused), or torch's CPU default (a for-loop over the parameters)."""
    if default:
        return build_optimizer(functools.partial(torch.optim.AdamW, lr=1e-3), net.parameters())
    return torch.optim.AdamW(net.parameters(), lr=1e-3, foreach=False)


def bare(dm, make_net, epochs: int, default_optimizer: bool = True) -> list[float]:
    """Seconds per step, one value per epoch: the minimum work a step must do."""
    net = make_net()
    return timed_steps(net, _optimizer(net, default_optimizer), *dm.splits["train"], dm.batch_size, epochs)


def timed_steps(net, optimizer, x, y, batch_size: int, epochs: int) -> list[float]:
    """Seconds per forward/loss/backward/step, one value per epoch, over batches sliced beforehand
    (no data cost timed)."""
    times = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        batches = [(x[i], y[i]) for i in order.split(batch_size)]
        started = time.perf_counter()
        for xb, yb in batches:
            loss = classification_loss(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append((time.perf_counter() - started) / len(batches))
    return times


def seed_style(dm, make_net, epochs: int) -> list[float]:
    """The seeds' loop: per-sample Dataset + DataLoader collation and a .item() every step."""
    net, times = make_net(), []
    optimizer = _optimizer(net)
    loader = DataLoader(TensorDataset(*dm.splits["train"]), batch_size=dm.batch_size, shuffle=True)
    for _ in range(epochs):
        started, steps, running = time.perf_counter(), 0, 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = classification_loss(net(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
            steps += 1
        times.append((time.perf_counter() - started) / steps)
    return times


def hand_trainer(epochs: int, run_dir: Path) -> HandTrainer:
    """The hand trainer as the template runs it: TensorBoard into ``run_dir``, the learning-rate monitor."""
    logger = TensorBoardLogger(str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
    return HandTrainer(max_epochs=epochs, enable_progress_bar=False, callbacks=[LearningRateMonitor()], logger=logger)


def hand_loop(dm, make_net, epochs: int, run_dir: Path, optimizer: dict | None = None) -> list[float]:
    """Seconds per step, one value per epoch: ``HandTrainer.training_epoch_loop`` itself, timed from outside."""
    optimizer = optimizer or {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}}
    model = Classifier(make_net(), optimizer=optimizer)
    trainer, times = hand_trainer(epochs, run_dir), []
    with trainer.attached(model, dm, TrainerFn.FITTING):
        trainer.train_batches = dm.train_dataloader()
        trainer.configure_optimizers(model)
        for _ in range(epochs):
            started = time.perf_counter()
            trainer.training_epoch_loop(model)
            times.append((time.perf_counter() - started) / len(trainer.train_batches))
            model.on_train_epoch_end()  # what the epoch's end does with the stash, untimed
            trainer.logged.read()
            trainer.progress.epoch += 1
    trainer.logger.finalize("success")
    return times


class _TrainPhaseTimer(L.Callback):
    """Per epoch: seconds from the first batch's start to the last batch's end, per step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx + 1 == trainer.num_training_batches:
            self.times.append((time.perf_counter() - self.started) / trainer.num_training_batches)


def lightning(config: str, epochs: int, extra: list[str]) -> list[float]:
    """train.py's Trainer with the template defaults, the progress bar included."""
    with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
        cli = ToyCLI(args=["--config", str(ROOT / "configs" / f"{config}.yaml"), "--trainer.gradient_clip_val=null",
                           f"--trainer.max_epochs={epochs}", "--model.scheduler=null",
                           "--model.optimizer=torch.optim.AdamW", "--model.optimizer.lr=0.001",
                           "--dashboard.boundary_every_n_epochs=0", "--dashboard.graph=false", *extra], run=False)
        timer = _TrainPhaseTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.times


# Lightning's own progress bar (redrawn every step) and TensorBoardLogger (flushed after every log)
# in place of the template's: what those two defaults save.
STOCK = ["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar", "--trainer.callbacks.refresh_rate=1",
         "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger"]
LOG_50 = ["--trainer.log_every_n_steps=50"]  # Lightning's default logging interval, as the barebones Trainer


def barebones(dm, make_net, epochs: int) -> list[float]:
    """A plain Trainer: Lightning's own floor for the same model and batches."""
    model = Classifier(make_net(), optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}})
    timer = _TrainPhaseTimer()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return timer.times


def numpy_table(rounds: int, epochs: int) -> list[str]:
    """The same 2-32-2 MLP and SGD step: the NumPy rung (float32 and float64), PyTorch bare, the hand loop."""
    dm = PointsDataModule("circles", n_samples=4000, batch_size=64)
    x, y = dm.splits["train"]
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    runs: dict[str, list[float]] = {"numpy64": [], "numpy32": [], "bare": [], "loop": []}

    def make_net() -> torch.nn.Module:
        return MLP(2, 2, hidden_sizes=[32])

    def numpy_step(dtype) -> list[float]:  # noqa: ANN001
        model, times = scratch.MLP(2, 32, 2), []
        model.params = {k: v.astype(dtype) for k, v in model.params.items()}
        xs, ys = x.numpy().astype(dtype), y.numpy()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).numpy()
            batches = [(xs[i], ys[i]) for i in np.array_split(order, range(64, len(order), 64))]
            started = time.perf_counter()
            for xb, yb in batches:
                scratch.sgd_step(model.params, model.gradients(xb, yb), 0.1)
            times.append((time.perf_counter() - started) / len(batches))
        return times

    def bare_sgd() -> list[float]:
        net = make_net()
        return timed_steps(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, 64, epochs)

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            runs["numpy64"].append(numpy_step(np.float64))
            runs["numpy32"].append(numpy_step(np.float32))
            runs["bare"].append(bare_sgd())
            runs["loop"].append(hand_loop(dm, make_net, epochs, Path(tmp) / f"np{r}", optimizer=sgd))
    m = {k: 1e6 * median_after_warmup(v) for k, v in runs.items()}
    RESULTS["loop/numpy"] = m["loop"] / m["numpy32"]
    return ["| 2-32-2 MLP, SGD, batch 64 | µs/step | / NumPy float32 |", "|---|---|---|",
            *(f"| {label} | {m[k]:.0f} | {m[k] / m['numpy32']:.2f} |" for k, label in (
                ("numpy32", "NumPy rung (scratch.MLP), float32"), ("numpy64", "NumPy rung, float64"),
                ("bare", "PyTorch bare step"), ("loop", "hand loop")))]


def threads_table(rounds: int, epochs: int) -> list[str]:
    """The bare step with one torch thread and with two (torch's default on 2 cores), interleaved."""
    rows = ["| model | 1 thread µs/step | 2 threads µs/step | 2 / 1 |", "|---|---|---|---|"]
    before = torch.get_num_threads()
    for name, (_, make_dm, make_net) in MODELS.items():
        dm = make_dm(n_samples=4000, batch_size=64)
        runs: dict[int, list[list[float]]] = {1: [], 2: []}
        for _ in range(rounds):
            for threads in runs:
                torch.set_num_threads(threads)
                runs[threads].append(bare(dm, make_net, epochs))
        m = {k: 1e6 * median_after_warmup(v) for k, v in runs.items()}
        RESULTS[f"threads {name}"] = m[2] / m[1]
        rows.append(f"| {name} | {m[1]:.0f} | {m[2]:.0f} | {m[2] / m[1]:.2f} |")
    torch.set_num_threads(before)
    return rows


def median_after_warmup(runs: list[list[float]]) -> float:
    return statistics.median(t for times in runs for t in times[1:])


RESULTS: dict[str, float] = {}  # ratios the targets table reads


def step_table(rounds: int, epochs: int) -> list[str]:
    rows = ["| model | bare µs/step | bare, for-loop AdamW | hand loop | barebones Trainer | lightning, stock bar "
            "and logger | lightning, log every 50 | lightning | seed style | for-loop/fused | loop/bare "
            "| lightning/barebones (stock; log every 50) | lightning/loop | seed/bare |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    data = ["--data.n_samples=4000", "--data.batch_size=64"]
    for name, (config, make_dm, make_net) in MODELS.items():
        dm = make_dm(n_samples=4000, batch_size=64)
        runs: dict[str, list[list[float]]] = {k: [] for k in ("bare", "forloop", "loop", "barebones", "stock",
                                                               "log50", "lightning", "seed")}
        with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
            for r in range(rounds):  # interleaved: each round runs every variant once
                torch.manual_seed(r)
                runs["bare"].append(bare(dm, make_net, epochs))
                runs["forloop"].append(bare(dm, make_net, epochs, default_optimizer=False))
                runs["loop"].append(hand_loop(dm, make_net, epochs, Path(tmp) / f"loop{r}"))
                runs["barebones"].append(barebones(dm, make_net, epochs))
                runs["stock"].append(lightning(config, epochs, [*data, *STOCK]))
                runs["log50"].append(lightning(config, epochs, [*data, *LOG_50]))
                runs["lightning"].append(lightning(config, epochs, data))
                runs["seed"].append(seed_style(dm, make_net, epochs))
        m = {k: 1e6 * median_after_warmup(v) for k, v in runs.items()}
        RESULTS[f"loop/bare {name}"] = m["loop"] / m["bare"]
        RESULTS[f"lightning/loop {name}"] = m["lightning"] / m["loop"]
        RESULTS[f"lightning/barebones {name}"] = m["lightning"] / m["barebones"]
        RESULTS[f"stock/barebones {name}"] = m["stock"] / m["barebones"]
        RESULTS[f"forloop/fused {name}"] = m["forloop"] / m["bare"]
        rows.append(f"| {name} | {m['bare']:.0f} | {m['forloop']:.0f} | {m['loop']:.0f} | {m['barebones']:.0f} "
                    f"| {m['stock']:.0f} | {m['log50']:.0f} | {m['lightning']:.0f} | {m['seed']:.0f} "
                    f"| {m['forloop'] / m['bare']:.2f} | {m['loop'] / m['bare']:.2f} "
                    f"| {m['lightning'] / m['barebones']:.2f} ({m['stock'] / m['barebones']:.2f}; "
                    f"{m['log50'] / m['barebones']:.2f}) "
                    f"| {m['lightning'] / m['loop']:.2f} | {m['seed'] / m['bare']:.2f} |")
    return rows


def data_path_table(repeats: int) -> list[str]:
    """Time to produce one 64-sample batch: BatchIterator vs the seeds' DataLoader."""
    dm = PointsDataModule("circles", n_samples=4000, batch_size=64)
    x, y = dm.splits["train"]
    ours, theirs = [], []
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    iterator = dm.train_dataloader()
    for epoch in range(repeats):
        iterator.set_epoch(epoch)
        started = time.perf_counter()
        n = sum(1 for _ in iterator)
        ours.append((time.perf_counter() - started) / n)
        started = time.perf_counter()
        n = sum(1 for _ in loader)
        theirs.append((time.perf_counter() - started) / n)
    a, b = 1e6 * statistics.median(ours), 1e6 * statistics.median(theirs)
    RESULTS["data path"] = b / a
    return ["| data path (64-sample batch) | µs/batch |", "|---|---|", f"| BatchIterator | {a:.1f} |",
            f"| DataLoader(TensorDataset, shuffle=True) | {b:.1f} |", f"| ratio (DataLoader / ours) | {b / a:.1f}x |"]


def batch_sweep_table(sizes: list[int]) -> list[str]:
    rows = ["| batch size | hand loop samples/s | lightning samples/s | lightning/loop time |", "|---|---|---|---|"]
    make_net = MODELS["MLP / circles"][2]
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        for size in sizes:
            dm = PointsDataModule("circles", n_samples=20000, batch_size=size)
            loop_s = median_after_warmup([hand_loop(dm, make_net, 3, Path(tmp) / f"b{size}")])
            light_s = median_after_warmup([lightning("circles_mlp", 3, ["--data.n_samples=20000",
                                                                          f"--data.batch_size={size}"])])
            rows.append(f"| {size} | {size / loop_s:,.0f} | {size / light_s:,.0f} | {light_s / loop_s:.2f} |")
    return rows


_SIZE_PROBE = """
import resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench import hand_loop, MODELS
from toyloops import PointsDataModule
dm = PointsDataModule("circles", n_samples=int(sys.argv[1]), batch_size=256)
with tempfile.TemporaryDirectory() as tmp:
    times = hand_loop(dm, MODELS["MLP / circles"][2], 2, Path(tmp))
print(max(times) * len(dm.train_dataloader()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def dataset_sweep_table(sizes: list[int]) -> list[str]:
    """Seconds per training epoch and peak resident memory of a whole process, per dataset size."""
    rows = ["| points | train s/epoch | peak RSS MiB |", "|---|---|---|"]
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", _SIZE_PROBE, str(n), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True).stdout.split()
        rows.append(f"| {n:,} | {float(out[0]):.3f} | {float(out[1]):.0f} |")
    return rows


def e2e_table(repeats: int) -> list[str]:
    def wall(cmd: list[str], ok: bool = True) -> float:
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        assert (result.returncode == 0) == ok, (cmd, result.stderr[-2000:])
        return time.perf_counter() - started

    toyloops = [sys.executable, "-m", "toyloops"]
    commands = {  # label: (command, exits 0)
        "python -c 'import lightning' (floor)": ([sys.executable, "-c", "import lightning"], True),
        "toyloops --help": ([*toyloops, "--help"], True),
        "toyloops fit --help": ([*toyloops, "fit", "--help"], True),
        "toyloops fit --config blobs_mlp --trainer.max_epochs=0 (bad input)":
            ([*toyloops, "fit", "--config", "blobs_mlp", "--trainer.max_epochs=0"], False),
        "toyloops loop fit --config blobs_mlp --trainer.max_epochs=0 (bad input)":
            ([*toyloops, "loop", "fit", "--config", "blobs_mlp", "--trainer.max_epochs=0"], False),
        "toyloops fit --config blobs_mlp (the quick start's config)":
            ([*toyloops, "fit", "--config", "blobs_mlp"], True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(repeats):  # interleaved
            for label, (cmd, ok) in commands.items():
                times[label].append(wall(cmd, ok))
    m = {label: statistics.median(t) for label, t in times.items()}
    floor = m["python -c 'import lightning' (floor)"]
    RESULTS["fit minus floor"] = m["toyloops fit --config blobs_mlp (the quick start's config)"] - floor
    RESULTS["help and errors / floor"] = max(v for k, v in m.items() if "help" in k or "bad input" in k) / floor
    return ["| command | median s | minus floor | / floor |", "|---|---|---|---|",
            *(f"| {label} | {v:.2f} | {v - floor:+.2f} | {v / floor:.2f} |" for label, v in m.items())]


def profile_sections(quick: bool) -> list[tuple[str, list[str]]]:
    """``toyloops profile`` of each net's config: its buckets, batch and memory sweeps."""
    from toyloops.tools.profile import run as profile

    sections = []
    for name, (config, _, _) in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp, chdir(tmp), open(os.devnull, "w") as null, redirect_stdout(null):
            result = profile(["--config", config, "--batch-sizes", "1,64" if quick else "1,8,64,512",
                              "--steps", "10" if quick else "40", "--rounds", "1" if quick else "3"])
            text = result["markdown"].read_text().splitlines()
        body = [line.replace("## ", "### ") for line in text[2:]]
        sections.append((f"Profile: {name} (`toyloops profile --config {config}`)", body))
    return sections


# Before issue 13: RESULTS.md of commit 7e8502e (two torch threads, for-loop AdamW, progress bar
# every step, Lightning clipping where the loop did not); the template/barebones, fit and --help
# figures are from the first run that measured them (RESULTS.md of commit dab4ad4; its
# template/barebones with Lightning's progress bar redrawn every step).
BEFORE = {
    "loop/bare logistic / blobs": 1.39, "loop/bare MLP / circles": 1.09, "loop/bare Transformer / majority": 0.99,
    "lightning/loop logistic / blobs": 3.38, "lightning/loop MLP / circles": 3.05,
    "lightning/loop Transformer / majority": 1.41,
    "lightning/barebones logistic / blobs": 1.80, "lightning/barebones MLP / circles": 1.63,
    "lightning/barebones Transformer / majority": 1.35,
    "fit minus floor": 1.61, "help and errors / floor": 1.24,
}


def targets_table() -> list[str]:
    """Each target of the performance issues, met or plainly missed, with the figure before."""
    checks = [("data path: DataLoader / BatchIterator >= 10x", "data path", lambda v: v >= 10, "x")]
    for name in MODELS:
        checks.append((f"template defaults <= 1.10x a barebones Trainer ({name})", f"lightning/barebones {name}",
                       lambda v: v <= 1.10, "x"))
    for name in MODELS:
        checks.append((f"hand loop <= 1.10x bare ({name})", f"loop/bare {name}", lambda v: v <= 1.10, "x"))
    checks.append(("Lightning <= 1.20x hand loop (Transformer / majority)", "lightning/loop Transformer / majority",
                   lambda v: v <= 1.20, "x"))
    for name in ("logistic / blobs", "MLP / circles"):
        checks.append((f"Lightning / hand loop, reported ({name}: sub-millisecond, see barebones)",
                       f"lightning/loop {name}", None, "x"))
    checks.append(("hand loop / NumPy rung, reported (2-32-2 MLP, SGD)", "loop/numpy", None, "x"))
    checks.append(("toyloops fit --config blobs_mlp <= import floor + 1 s", "fit minus floor", lambda v: v <= 1, " s"))
    checks.append(("--help and bad-input errors <= 1.5x import floor (slowest)", "help and errors / floor",
                   lambda v: v <= 1.5, "x"))
    rows = ["| target | before | after | |", "|---|---|---|---|"]
    for label, key, ok, unit in checks:
        if key not in RESULTS:
            continue
        value = RESULTS[key]
        before = BEFORE.get(key)
        verdict = "reported" if ok is None else "met" if ok(value) else "**MISSED**"
        rows.append(f"| {label} | {'' if before is None else f'{before:.2f}{unit}'} | {value:.2f}{unit} | {verdict} |")
    return rows


NOTES = """## Reading these tables

- **Noise.** The machine has 2 cores shared with other sessions' work. Variants run interleaved,
  round by round, and each figure is a median over rounds and epochs after a warm-up epoch; even
  so, two runs of this script differ by 10-30% on sub-millisecond steps. Compare columns of one
  run, not figures across runs. On a quiet machine (as in this run) two torch threads cost little;
  under load they cost 4-25x (the earlier runs' threads table), which is why one is the default.
- **Defaults** (toyloops/engine/defaults.py, callbacks.py, loggers.py), each with the
  column that measures it:
  - one torch thread unless `TOYLOOPS_THREADS` (or `OMP_NUM_THREADS`) says otherwise (threads table);
  - `fused=True` for Adam/AdamW unless a config sets `fused` or `foreach`, and not under mixed
    precision with gradient clipping, which Lightning refuses (for-loop/fused column). Until this
    run a config's optimizer was never fused: jsonargparse hands the class over behind a wrapper,
    with `fused=None`, which read as a choice. Both engines build it in
    `Classifier.configure_optimizers`, so the parity tests still see bit-identical weights;
  - the training progress bar redraws at most twice a second, and at each epoch's end
    (`toyloops.engine.callbacks.ProgressBar`), where Lightning's redraws every `refresh_rate` steps, twice;
  - the template's `toyloops.engine.loggers.TensorBoardLogger` no longer flushes after every log
    as Lightning's does (each flush woke the writer's thread, a GIL hand-off that cost the training
    thread ~0.5 ms on this machine, cProfile); events reach the file through SummaryWriter's public
    `flush_secs`, at epoch ends and before every resume-point checkpoint. The "stock bar and logger"
    column puts Lightning's own progress bar and logger back. (Until the 2026-12-07 stop the events
    were also held and handed over in bursts, and callbacks' empty per-batch hooks were skipped;
    both needed private APIs and were dropped: their cost is in "Public APIs only", below);
  - in the hand loop's step: the NaN check reads the loss once (`loss.item()`, which is also the
    logged value) instead of `loss.isfinite().item()` (four operators), a batch already on its
    device is not `.to()`-ed again, and the batch gather is `index_select`.
- **What is left between the template and a barebones Trainer** for sub-millisecond steps: the
  per-batch hooks of the callbacks it needs (the best and last checkpoints, the learning-rate
  monitor, the NaN check, the progress bar: Lightning dispatches each inside a profiler context)
  and logging every 10 steps where a plain Trainer logs every 50 (the "log every 50" column).
- **Where the rest goes** is in the profile sections: every bucket is measured (timers on the shared
  objects, Lightning's profiler API for its hooks); "engine (rest)" is the step minus all of them.
  For a sub-millisecond step Lightning's rest (its loops, the closure around the optimizer step,
  hook dispatch) is most of the difference to the hand loop, which no template default removes:
  that is why those rows are reported against a barebones Trainer instead.
- **The hand loop against the bare step.** The bare step runs on batches sliced before the clock
  starts; the hand loop gathers each batch (the data path table: ~10 µs), reads the loss for the
  NaN check, stashes each step's logits for the epoch's train metrics, writes a TensorBoard
  scalar every 10 steps and goes through the GradScaler and scheduler calls that precision and
  schedules need: ~80-120 µs a step, which is a quarter of a logistic-regression step and a
  fiftieth of a Transformer's.
- **The NumPy rung.** The same 2-32-2 MLP and SGD step is one `gradients` call (forward, softmax,
  four matrix products) and four in-place updates: about a dozen NumPy calls of 1-3 µs on tiny
  arrays. PyTorch runs about 30 operators for it (forward and loss, the autograd graph recorded as
  it goes, backward through each node, zero_grad, the optimizer's per-parameter updates), each
  paying dispatcher, autograd and allocation costs of several µs; the arithmetic itself, ~8k
  multiply-adds a batch of 64, is well under a microsecond. The hand loop then adds what the
  previous paragraph lists.
- **End to end.** `toyloops fit` pays for the `import lightning` floor, then toyloops' own imports
  (~0.3 s: jsonargparse, TensorBoard's writer, Pillow; a run needs them all), LightningCLI's
  parser for the one subcommand named (it built all four: ~0.15 s more), instantiation, the 10
  epochs themselves with validation, two fsynced checkpoint writes an epoch, the model graph and
  the decision-boundary images. The command freezes what it imported out of the garbage
  collector (`runs.freeze_imports`): a full collection otherwise walks ~370k objects (~0.17 s)
  each time it runs. Single runs of the floor vary by ±1 s on this machine; the table gives
  medians.

## GPU (to be measured when a GPU is lent; nothing here was run on one)

The GPU table will time, side by side as above, on one CUDA device:

- **The launch-latency floor.** An empty CUDA kernel launch and a `torch.cuda.synchronize()`
  round trip, and the bare step of each net at batch 64: for these nets a step is a few dozen
  kernel launches of ~5-10 µs each, so the floor is launches, not arithmetic.
- **CUDA-graph capture of the hand loop's step.** The same forward, loss, backward and fused AdamW
  step captured once with `torch.cuda.graphs.make_graphed_callables`/`torch.cuda.CUDAGraph` on
  static input buffers and replayed per batch, against the eager step; the weights after N steps
  must equal the eager run's (the same check the parity tests make between the engines).
- **Lightning's overhead on a GPU.** Template defaults against a barebones Trainer and the hand
  loop, as in the step table: Lightning's per-step Python cost is the same microseconds as on a
  CPU, so against a launch-bound GPU step it weighs more, unless the step is captured.
- **The host syncs.** The NaN check's `.item()` each step and the logged loss every 10 steps, timed
  with and without, since on a GPU each one waits for the queue to drain.
"""


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; python "
            f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}")


def main() -> None:
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-run banners between the tables
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    apply_thread_policy()
    freeze_imports()  # as the toyloops command's process does, for every variant alike
    rounds, epochs = (1, 3) if args.quick else (3, 6)
    sections = [
        ("Time per training step (median, µs; 4000 points / 64 per batch)", step_table(rounds, epochs)),
        ("Threads: the bare step (fused AdamW) with one torch thread and with two", threads_table(rounds, epochs)),
        ("The hand loop against the NumPy rung (median, µs; 4000 points / 64 per batch)",
         numpy_table(rounds, epochs)),
        ("Data path alone", data_path_table(5 if args.quick else 20)),
        ("Batch-size sweep (MLP / circles, 12,000 training points)",
         batch_sweep_table([64, 1024] if args.quick else [16, 64, 256, 1024, 4096])),
        ("Dataset-size sweep (hand loop, MLP / circles, batch 256)",
         dataset_sweep_table([1000, 10000] if args.quick else [1000, 10000, 100000, 1000000])),
        ("End to end", e2e_table(1 if args.quick else 3)),
    ]
    sections.insert(0, ("Targets", targets_table()))
    sections += profile_sections(args.quick)
    text = [f"# Benchmark results\n\nMachine: {machine()}\n\nCommand: `python benchmarks/bench.py`"
            f"{' --quick' if args.quick else ''}\n"]
    for title, rows in sections:
        text += [f"## {title}\n", *rows, ""]
        print(f"\n{title}\n" + "\n".join(rows), flush=True)
    text.append(NOTES)
    Path(args.out).write_text("\n".join(text))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
