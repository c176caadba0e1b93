"""python benchmarks/ensemble_bench.py [--rounds 3] [--trials 32] [--parts steps,seeds,sweep,transformer]

The ensemble trainer against one run at a time, all ratios measured in this one run (so under the
same load; the machine is shared, so run it more than once and read the spread):

1. Training steps: one ensemble step of N blobs_mlp members (as shipped: dropout 0.1, clip 1.0, AdamW,
   cosine; and with dropout 0) against N steps of the solo hand trainer, N = 16 and 64; the fastest
   of ``--rounds`` epochs of 60 steps each (interleaved), per step. Target: >= 6x (16), >= 10x (64).
2. ``toyloops seeds --config blobs_mlp --n 32`` and ``--kfold 5 --n 4``, each a fresh process, against
   one ``toyloops loop fit --config blobs_mlp``: the time past the import floor (the command's own
   function, timed in a process that imported it), the fastest of ``--rounds``, interleaved. Target:
   <= 3x one run's time.
3. A ``--trials``-trial sweep of blobs_mlp over the ``rates`` space (lr, weight decay): ``--population``
   = trials (one ensemble) against one trial at a time (``--engine loop``, the run the members equal),
   once each; with both best values. Target: >= 5x faster, best value within the noise.
4. The Transformer, which the ensemble refuses: N majority_transformer members stacked by
   ``torch.func.vmap`` (one fused AdamW over the stacked weights) against N solo hand-trainer steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
STEPS_DATA = ["--data.init_args.n_samples", "6400", "--trainer.max_epochs", "1"]  # 3840 train: 60 steps of 64
# A command's time past its import floor: a fresh process imports what the command imports, then
# times the command's own function (what `python -m toyloops ...` runs after those imports).
TIMED = """import sys, time
from toyloops.engine import loop_cli
from toyloops.tools import ensemble, seeds
start = time.perf_counter()
(loop_cli.run if sys.argv[1] == "loop" else seeds.run)(sys.argv[2:])
print(time.perf_counter() - start)"""


def step_times(members: int, extra: list[str], rounds: int) -> tuple[float, float]:
    """(solo hand-trainer step, ensemble step of ``members``): the fastest of ``rounds`` epochs each."""
    from lightning.pytorch.trainer.states import TrainerFn

    from toyloops.engine import loop_cli
    from toyloops.engine.loop import HandTrainer
    from toyloops.tools import ensemble

    args = ["--config", "blobs_mlp", *QUIET, *STEPS_DATA, *extra]
    cfg, objects = loop_cli.build(args)
    trainer = HandTrainer(**{**loop_cli.trainer_options(cfg), "logger": False, "enable_checkpointing": False})
    solo, together = [], []
    with trainer.attached(objects.model, objects.data, TrainerFn.FITTING), tempfile.TemporaryDirectory() as folder, \
            ExitStack() as stack:
        trainer.train_batches = objects.data.train_dataloader()
        trainer.configure_optimizers(objects.model)
        runs_args = {f"m{i}": [*args, "--seed_everything", str(i), "--trainer.default_root_dir", folder]
                     for i in range(members)}
        group = ensemble.Ensemble(ensemble.build_members(runs_args, stack))
        for epoch in range(rounds):  # interleaved, so both see the same load; the fastest epoch of each
            start = time.perf_counter()
            trainer.training_epoch_loop(objects.model)  # the hand trainer's epoch: its steps and their books
            solo.append((time.perf_counter() - start) / len(trainer.train_batches))
            start = time.perf_counter()
            group.train_epoch(epoch)
            together.append((time.perf_counter() - start) / len(group.members[0].trainer.train_batches))
        for m in group.members:
            m.trainer.logger.finalize("success")
    return min(solo), min(together)


def transformer_times(members: int, rounds: int) -> tuple[float, float]:
    """(solo hand-trainer step, one step of ``members`` stacked by ``torch.func.vmap``) of majority_transformer:
    what stacking the Transformer would gain, before writing it (the ensemble refuses it)."""
    import copy

    import torch
    import torch.nn.functional as F
    from lightning.pytorch.trainer.states import TrainerFn
    from torch.func import functional_call, grad, stack_module_state, vmap

    from toyloops.engine import loop_cli
    from toyloops.engine.loop import HandTrainer

    args = ["--config", "majority_transformer", *QUIET, "--data.init_args.n_samples", "3200",
            "--trainer.max_epochs", "1"]
    cfg, objects = loop_cli.build(args)
    trainer = HandTrainer(**{**loop_cli.trainer_options(cfg), "logger": False, "enable_checkpointing": False})
    solo = []
    with trainer.attached(objects.model, objects.data, TrainerFn.FITTING):
        trainer.train_batches = objects.data.train_dataloader()
        trainer.configure_optimizers(objects.model)
        for _ in range(rounds):
            start = time.perf_counter()
            trainer.training_epoch_loop(objects.model)
            solo.append((time.perf_counter() - start) / len(trainer.train_batches))
    net = objects.model.net
    params, buffers = stack_module_state([copy.deepcopy(net) for _ in range(members)])
    base = copy.deepcopy(net).to("meta")
    optimizer = torch.optim.AdamW(list(params.values()), lr=3e-3, fused=True)
    x, y = objects.data.splits["train"]

    def loss(p: dict, b: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(functional_call(base, (p, b), (xb,)), yb.float())

    step = vmap(grad(loss), randomness="different")
    stacked = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(x) - 64 * members, 64 * members):
            xb, yb = x[i:i + 64 * members].view(members, 64, -1), y[i:i + 64 * members].view(members, 64)
            for p, g in zip(params.values(), step(params, buffers, xb, yb).values(), strict=True):
                p.grad = g
            optimizer.step()
        stacked.append((time.perf_counter() - start) / ((len(x) - 64 * members) // (64 * members) + 1))
    return min(solo), min(stacked)


def timed(args: list[str], folder: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_best(args: list[str]) -> tuple[float, float, float]:
    """A sweep command's wall seconds, its trials' seconds (first trial's start to last trial's end, from
    the study: the sweep's fixed costs, imports, checks and plots, left out) and its best value."""
    import csv

    import optuna

    with tempfile.TemporaryDirectory() as folder:
        seconds = timed(args, Path(folder))
        journal = next(Path(folder).glob("logs/sweeps/*/study.journal"))
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        trials = optuna.load_study(study_name=journal.parent.name, storage=storage).get_trials()
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        rows = list(csv.DictReader(next(Path(folder).glob("logs/sweeps/*/results.csv")).open()))
        return seconds, span, max(float(r["val/acc"]) for r in rows if r["val/acc"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--parts", default="steps,seeds,sweep,transformer", help="which parts to measure")
    opts = parser.parse_args()
    toyloops = [sys.executable, "-m", "toyloops"]
    rows = []

    parts = opts.parts.split(",")
    variants = [([], "as shipped (dropout 0.1, clip 1.0)"), (["--model.net.init_args.dropout", "0"], "dropout 0")]
    for extra, what in variants if "steps" in parts else []:
        for members, target in ((16, 6.0), (64, 10.0)):
            solo, together = step_times(members, extra, opts.rounds)
            ratio = members * solo / together
            rows.append((f"one step of {members} MLP members, {what}",
                         f"{together * 1e3:.2f} ms vs {members} x {solo * 1e3:.2f} ms", ratio, f">= {target:g}x",
                         ratio >= target))

    if "seeds" in parts:
        commands = {"one": ["loop", "fit", "--config", "blobs_mlp", *QUIET],
                    "--n 32 (32 runs)": ["seeds", "--config", "blobs_mlp", "--n", "32"],
                    "--kfold 5 --n 4 (20 runs)": ["seeds", "--config", "blobs_mlp", "--kfold", "5", "--n", "4"]}
        seconds = {what: [] for what in commands}
        for _ in range(opts.rounds):  # interleaved: each round under the same load
            for what, args in commands.items():
                with tempfile.TemporaryDirectory() as folder:
                    out = subprocess.run([sys.executable, "-c", TIMED, *args], cwd=folder, check=True,
                                         capture_output=True, text=True).stdout
                seconds[what].append(float(out.strip().splitlines()[-1]))
        one = min(seconds.pop("one"))
        for what, times in seconds.items():
            rows.append((f"`toyloops seeds --config blobs_mlp {what}` vs one `loop fit`",
                         f"{min(times):.1f} s vs {one:.1f} s", min(times) / one, "<= 3x", min(times) / one <= 3))

    if "transformer" in parts:
        for members in (4, 16):
            solo, together = transformer_times(members, opts.rounds)
            rows.append((f"one step of {members} majority_transformer members by torch.func.vmap (not shipped)",
                         f"{together * 1e3:.2f} ms vs {members} x {solo * 1e3:.2f} ms", members * solo / together,
                         "pays if >> 1x", members * solo / together >= 3))

    if "sweep" in parts:
        sweep = [*toyloops, "sweep", "--config", "blobs_mlp", "--space", "rates", "--trials", str(opts.trials)]
        alone, alone_trials, alone_best = sweep_best([*sweep, "--engine", "loop"])
        together, together_trials, together_best = sweep_best([*sweep, "--population", str(opts.trials)])
        for what, ours, theirs in (("wall time", together, alone), ("its trials' time", together_trials,
                                                                     alone_trials)):
            rows.append((f"{opts.trials}-trial lr/wd sweep, {what}: `--population {opts.trials}` vs one trial at a "
                         "time (loop)", f"{ours:.1f} s vs {theirs:.1f} s; best val/acc {together_best:.4f} vs "
                         f"{alone_best:.4f}", theirs / ours, ">= 5x", theirs / ours >= 5))

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, torch threads "
          f"{os.environ.get('TOYLOOPS_THREADS', '1')}\n")
    print("| measured | times | ratio | target | |\n|---|---|---|---|---|")
    for what, times, ratio, target, met in rows:
        print(f"| {what} | {times} | {ratio:.2f}x | {target} | {'met' if met else 'MISSED'} |")


if __name__ == "__main__":
    main()
