"""python benchmarks/public_api_cost.py [--before d743c73] [--rounds 8] [--epochs 8]

What going through public APIs only cost: the time per training step of the template's Lightning
Trainer and of the hand loop (bench.py's models and data: 4000 points, batch 64, AdamW, no
clipping or scheduler) at commit ``--before``, which had two speed tricks built on private APIs,
against commit ``--after``, the same code with neither, and against this tree, whose hand loop is
``HandTrainer`` (the Trainer-shaped object that replaced the function-style loop):

- skipping the callbacks' empty per-batch hooks (set to None, which Lightning's private
  ``_call_callback_hooks`` passes over);
- holding TensorBoard events back and handing them to the writer's thread in bursts (a wrapper
  around SummaryWriter's undocumented ``file_writer.event_writer``).

``--before`` also runs with one trick at a time switched off, from this script (the old code is
measured here, never shipped). Each variant runs in a process of its own, the variants interleaved
round by round, so machine noise hits every one alike. Prints the median and the minimum over all
rounds' epochs (after a warm-up epoch) of the wall time per step, and the median CPU time of the
process per step, each with its ratio to the ``--before`` figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("before (both tricks)", "before", "shipped"), ("before, no hook skipping", "before", "no skip"),
            ("before, no held events", "before", "no hold"), ("after (public APIs)", "after", "shipped"),
            ("this tree (HandTrainer)", "now", "shipped")]
MODELS = ("logistic / blobs", "MLP / circles", "Transformer / majority")


def worker(variant: str, epochs: int, root: Path) -> dict[str, list[list[float]]]:
    """In the process of one variant: {engine model: [wall s per step, cpu s per step] per epoch}."""
    import logging

    import lightning as L
    import torch

    from toyloops import (
        MLP,
        Classifier,
        LogisticRegression,
        PointsDataModule,
        SequenceDataModule,
        TransformerClassifier,
    )
    from toyloops.engine import cli, loop
    try:  # where the thread policy lives at each of the two commits
        from toyloops.engine.defaults import apply_thread_policy
    except ImportError:
        from toyloops.engine.config import apply_thread_policy
    from toyloops.engine.runs import freeze_imports

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    apply_thread_policy()
    freeze_imports()
    if variant == "no skip":  # the --before code only: one trick switched off
        cli.skip_empty_batch_hooks = lambda callbacks: None
    elif variant == "no hold":
        from toyloops.engine import loggers

        loggers.hold_events = loop.hold_events = lambda writer: writer
    models = {
        "logistic / blobs": ("blobs_logistic", lambda **kw: PointsDataModule("blobs", **kw),
                             lambda: LogisticRegression(2, 2, binary_logits=1)),
        "MLP / circles": ("circles_mlp", lambda **kw: PointsDataModule("circles", **kw),
                          lambda: MLP(2, 2, hidden_sizes=[32, 32], binary_logits=1)),
        "Transformer / majority": ("majority_transformer", lambda **kw: SequenceDataModule("majority", **kw),
                                   lambda: TransformerClassifier(50, 16, 2, d_model=32, nhead=4, num_layers=1,
                                                                 dim_feedforward=64, dropout=0.0, pooling="mean",
                                                                 binary_logits=1)),
    }

    class Timer(L.Callback):
        """Per epoch: from its start to its last training batch's end, per step (wall, process CPU)."""

        def __init__(self) -> None:
            self.times: list[list[float]] = []

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.started = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object,
                               batch: object, batch_idx: int) -> None:
            n = getattr(trainer, "num_training_batches", None) or len(trainer.train_batches)
            if batch_idx + 1 == n:
                self.times.append([(time.perf_counter() - self.started[0]) / n,
                                   (time.process_time() - self.started[1]) / n])

    def lightning(config: str) -> list[list[float]]:
        with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
            made = cli.ToyCLI(args=["--config", str(root / "configs" / f"{config}.yaml"),
                                    "--trainer.gradient_clip_val=null", f"--trainer.max_epochs={epochs}",
                                    "--model.scheduler=null", "--model.optimizer=torch.optim.AdamW",
                                    "--model.optimizer.lr=0.001", "--dashboard.boundary_every_n_epochs=0",
                                    "--dashboard.graph=false", "--data.n_samples=4000", "--data.batch_size=64"],
                              run=False)
            timer = Timer()
            made.trainer.callbacks.append(timer)
            made.trainer.fit(made.model, datamodule=made.datamodule)
        return timer.times[1:]

    def hand_loop(make_dm, make_net, run_dir: Path) -> list[list[float]]:  # noqa: ANN001
        model = Classifier(make_net(), optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}})
        if hasattr(loop, "HandTrainer"):  # this tree: the Trainer-shaped hand loop, timed by the same callback
            timer = Timer()
            loop.HandTrainer(max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, callbacks=[timer], default_root_dir=str(run_dir)).fit(
                model, datamodule=make_dm(n_samples=4000, batch_size=64))
            return timer.times[1:]
        trainer = loop.trainer_options(max_epochs=epochs, enable_progress_bar=False)
        precision = loop.Precision.create(trainer)
        optimizer, scheduler = loop.configure_optimizers(model, trainer)
        fit = loop.Fit(model, make_dm(n_samples=4000, batch_size=64), trainer, precision, optimizer, scheduler,
                       loop.open_writer(run_dir), run_dir)
        times = []
        for _ in range(epochs):
            started = time.perf_counter(), time.process_time()
            loop.train_epoch(fit)
            n = len(fit.train_batches)
            times.append([(time.perf_counter() - started[0]) / n, (time.process_time() - started[1]) / n])
            loop.compute_epoch_metrics(model, "train")  # what the epoch's end does, untimed
            fit.writer.flush()
            fit.state.epoch += 1
        fit.writer.close()
        return times[1:]

    out = {}
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        for name, (config, make_dm, make_net) in models.items():
            torch.manual_seed(0)
            out[f"lightning {name}"] = lightning(config)
            out[f"loop {name}"] = hand_loop(make_dm, make_net, Path(tmp) / "loop")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--before", default="d743c73", help="the commit with the private-API speed tricks")
    parser.add_argument("--after", default="1343a8d", help="the commit that dropped them")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # variant, source tree
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.epochs, Path(args.worker[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": f"{tmp}/before", "after": f"{tmp}/after", "now": str(ROOT)}
        for tree, commit in (("before", args.before), ("after", args.after)):
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
            os.mkdir(trees[tree])
            subprocess.run(["tar", "-x", "-C", trees[tree]], input=archive.stdout, check=True)
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in VARIANTS}
        for r in range(args.rounds):
            for label, tree, variant in VARIANTS:
                env = {**os.environ, "PYTHONPATH": trees[tree], "OMP_NUM_THREADS": "1", "TOYLOOPS_THREADS": "1"}
                done = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--worker", variant,
                                       trees[tree]], env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(done.stderr[-3000:])
                runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} of {args.rounds} done", flush=True)
    keys = [f"{engine} {model}" for engine in ("lightning", "loop") for model in MODELS]
    for title, pick, stat in (("median wall time", 0, statistics.median), ("minimum wall time", 0, min),
                              ("median process CPU time", 1, statistics.median)):
        table = {label: {k: 1e6 * stat([epoch[pick] for run in rs for epoch in run[k]]) for k in keys}
                 for label, rs in runs.items()}
        base = table[VARIANTS[0][0]]
        print(f"\n{title}, µs per step (ratio to before)\n")
        print(f"| variant | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}")
        for label, row in table.items():
            print(f"| {label} | " + " | ".join(f"{row[k]:.0f} ({row[k] / base[k]:.2f})" for k in keys) + " |")


if __name__ == "__main__":
    main()
