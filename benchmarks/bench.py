"""python benchmarks/bench.py [--quick] [--out benchmarks/RESULTS.md]

Time per training step of four ways to train the same model on the same batches, measured side
by side in one process, interleaved round by round (so machine noise hits every variant alike):

  bare       forward + backward + optimizer step on pre-sliced batches (the floor)
  hand loop  toyloops.loop.fit with its shipped defaults
  lightning  Trainer.fit as train.py builds it (logger, checkpoints, progress bar, callbacks)
  seed style DataLoader(TensorDataset, shuffle=True) with per-sample collation, .item() a step

A step's time is the median over epochs (after a warm-up epoch) of the training phase of an
epoch divided by its steps; epoch-end work (validation, checkpoints) is left out of every variant.
Also: the data path alone, batch-size and dataset-size sweeps, and train.py end to end against
the bare `import lightning` time. Prints markdown tables and writes them to --out.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import chdir
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from toyloops import (
    MLP,
    Classifier,
    LogisticRegression,
    PointsDataModule,
    SequenceDataModule,
    TransformerClassifier,
    loop,
)
from toyloops.cli import ToyCLI
from toyloops.models import classification_loss

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name: (config, data module, net factory, optimizer lr)
    "logistic / blobs": ("blobs_logistic", lambda **kw: PointsDataModule("blobs", **kw),
                         lambda: LogisticRegression(2, 2)),
    "MLP / circles": ("circles_mlp", lambda **kw: PointsDataModule("circles", **kw),
                      lambda: MLP(2, 2, hidden_sizes=[32, 32])),
    "Transformer / majority": ("majority_transformer", lambda **kw: SequenceDataModule("majority", **kw),
                               lambda: TransformerClassifier(50, 16, 2, d_model=32, nhead=4, num_layers=1,
                                                             dim_feedforward=64, dropout=0.0, pooling="mean")),
}


def _optimizer(net: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=1e-3)


def bare(dm, make_net, epochs: int) -> list[float]:
    """Seconds per step, one value per epoch: the minimum work a step must do."""
    net, times = make_net(), []
    optimizer = _optimizer(net)
    x, y = dm.splits["train"]
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        batches = [(x[i], y[i]) for i in order.split(dm.batch_size)]  # pre-sliced: no data cost timed
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


def hand_loop(dm, make_net, epochs: int, run_dir: Path) -> list[float]:
    """Seconds per step, one value per epoch: ``toyloops.loop.train_epoch`` itself, timed from outside."""
    model = Classifier(make_net(), optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}})
    trainer = loop.trainer_options(max_epochs=epochs, enable_progress_bar=False)
    precision = loop.Precision.create(trainer)
    optimizer, scheduler = loop.configure_optimizers(model)
    fit = loop.Fit(model, dm, trainer, precision, optimizer, scheduler, loop.SummaryWriter(str(run_dir)), run_dir)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        loop.train_epoch(fit)
        times.append((time.perf_counter() - started) / len(fit.train_batches))
        loop.compute_epoch_metrics(model, "train")  # what on_train_epoch_end does with the stash, untimed
        fit.state.epoch += 1
    fit.writer.close()
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
    with mock.patch.object(sys, "argv", ["train.py"]), open(os.devnull, "w") as null, \
            mock.patch.object(sys, "stdout", null), mock.patch.object(sys, "stderr", null):
        cli = ToyCLI(args=["--config", str(ROOT / "configs" / f"{config}.yaml"),
                           f"--trainer.max_epochs={epochs}", "--model.scheduler=null",
                           "--model.optimizer=torch.optim.AdamW", "--model.optimizer.lr=0.001",
                           "--dashboard.boundary_every_n_epochs=0", "--dashboard.graph=false", *extra], run=False)
        timer = _TrainPhaseTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.times


def median_after_warmup(runs: list[list[float]]) -> float:
    return statistics.median(t for times in runs for t in times[1:])


RESULTS: dict[str, float] = {}  # ratios the targets table reads


def step_table(rounds: int, epochs: int) -> list[str]:
    rows = ["| model | bare µs/step | hand loop | lightning | seed style | loop/bare | lightning/loop "
            "| seed/bare |", "|---|---|---|---|---|---|---|---|"]
    for name, (config, make_dm, make_net) in MODELS.items():
        dm = make_dm(n_samples=4000, batch_size=64)
        runs: dict[str, list[list[float]]] = {k: [] for k in ("bare", "loop", "lightning", "seed")}
        with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
            for r in range(rounds):  # interleaved: each round runs every variant once
                torch.manual_seed(r)
                runs["bare"].append(bare(dm, make_net, epochs))
                runs["loop"].append(hand_loop(dm, make_net, epochs, Path(tmp) / f"loop{r}"))
                runs["lightning"].append(lightning(config, epochs, ["--data.n_samples=4000", "--data.batch_size=64"]))
                runs["seed"].append(seed_style(dm, make_net, epochs))
        m = {k: 1e6 * median_after_warmup(v) for k, v in runs.items()}
        RESULTS[f"loop/bare {name}"] = m["loop"] / m["bare"]
        RESULTS[f"lightning/loop {name}"] = m["lightning"] / m["loop"]
        rows.append(f"| {name} | {m['bare']:.0f} | {m['loop']:.0f} | {m['lightning']:.0f} | {m['seed']:.0f} "
                    f"| {m['loop'] / m['bare']:.2f} | {m['lightning'] / m['loop']:.2f} "
                    f"| {m['seed'] / m['bare']:.2f} |")
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
    def wall(cmd: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        imports, trains = [], []
        for _ in range(repeats):  # interleaved
            imports.append(wall([sys.executable, "-c", "import lightning"]))
            trains.append(wall([sys.executable, str(ROOT / "train.py"), "fit", "--config",
                                str(ROOT / "configs/blobs_logistic.yaml")]))
    i, t = statistics.median(imports), statistics.median(trains)
    RESULTS["e2e minus floor"] = t - i
    return ["| command | median s |", "|---|---|", f"| python -c 'import lightning' (floor) | {i:.2f} |",
            f"| python train.py fit --config configs/blobs_logistic.yaml | {t:.2f} |",
            f"| train.py minus floor | {t - i:.2f} |"]


def targets_table() -> list[str]:
    """Each target of the performance issue, met or plainly missed."""
    checks = [("data path: DataLoader / BatchIterator >= 10x", RESULTS["data path"], lambda v: v >= 10, "x")]
    for key in sorted(RESULTS):
        if key.startswith("loop/bare"):
            checks.append((f"hand loop <= 1.1x bare ({key.split(' ', 1)[1]})", RESULTS[key], lambda v: v <= 1.1, "x"))
        elif key.startswith("lightning/loop"):
            checks.append((f"Lightning <= 1.2x hand loop ({key.split(' ', 1)[1]})", RESULTS[key],
                           lambda v: v <= 1.2, "x"))
    checks.append(("train.py fit <= import floor + 3 s", RESULTS["e2e minus floor"], lambda v: v <= 3, " s"))
    rows = ["| target | measured | |", "|---|---|---|"]
    rows += [f"| {name} | {value:.2f}{unit} | {'met' if ok(value) else '**MISSED**'} |"
             for name, value, ok, unit in checks]
    return rows


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; python "
            f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}")


def main() -> None:
    logging.getLogger("lightning").setLevel(logging.WARNING)  # no per-run banners between the tables
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    rounds, epochs = (1, 3) if args.quick else (3, 6)
    sections = [
        ("Time per training step (median, µs; 4000 points / 64 per batch)", step_table(rounds, epochs)),
        ("Data path alone", data_path_table(5 if args.quick else 20)),
        ("Batch-size sweep (MLP / circles, 12,000 training points)",
         batch_sweep_table([64, 1024] if args.quick else [16, 64, 256, 1024, 4096])),
        ("Dataset-size sweep (hand loop, MLP / circles, batch 256)",
         dataset_sweep_table([1000, 10000] if args.quick else [1000, 10000, 100000, 1000000])),
        ("End to end", e2e_table(1 if args.quick else 3)),
    ]
    sections.append(("Targets", targets_table()))
    text = [f"# Benchmark results\n\nMachine: {machine()}\n\nCommand: `python benchmarks/bench.py`"
            f"{' --quick' if args.quick else ''}\n"]
    for title, rows in sections:
        text += [f"## {title}\n", *rows, ""]
        print(f"\n{title}\n" + "\n".join(rows), flush=True)
    Path(args.out).write_text("\n".join(text))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
