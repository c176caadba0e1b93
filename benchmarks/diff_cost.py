"""python benchmarks/diff_cost.py [--steps 50] [--rounds 3]

What ``toyloops diff`` costs, as a multiple of a plain run of the same steps: for each config and
engine, the wall time of one plain training of ``--steps`` steps (built by the same parser, no
logger, no checkpoints, as a diff trains), of one recorded side (every stage of every step copied),
and of a whole diff of the config against itself (two recorded sides and the comparison; nothing
parts, so both sides run every step). Each figure includes building the run (data, model), as a
command pays it. Rounds interleave the variants, so machine noise hits each alike; prints the median
CPU time of this process (one torch thread: less disturbed than wall time on a shared machine) and
the median wall time, each with its ratio to the plain run, side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TOYLOOPS_THREADS", "1")

from lightning.pytorch.callbacks import Callback  # noqa: E402

from toyloops.tools.diff import diff  # noqa: E402
from toyloops.tools.diff_record import RecordingDone, record_run, train  # noqa: E402

CONFIGS = {"MLP / blobs": ["--config", "blobs_mlp"], "Transformer / parity": ["--config", "parity_transformer"]}


class StopAt(Callback):
    """Ends a plain run after ``steps`` optimizer steps, as the recorder ends a recorded one."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step >= self.steps:
            raise RecordingDone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    variants = {"plain run": lambda args, engine: train(args, engine, StopAt(opts.steps)),
                "one recorded side": lambda args, engine: record_run(args, engine, opts.steps),
                "diff (two sides)": lambda args, engine: diff(args, engines=(engine, engine), max_steps=opts.steps)}
    times: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for _ in range(opts.rounds):
        for name, args in CONFIGS.items():
            for engine in ("hand", "lightning"):
                for variant, run in variants.items():
                    cpu, wall = time.process_time(), time.perf_counter()
                    run(args, engine)
                    times.setdefault((name, engine, variant), []).append(
                        (time.process_time() - cpu, time.perf_counter() - wall))
    print(f"{opts.steps} steps, median of {opts.rounds} rounds, one torch thread; CPU s, wall s (x plain run)\n")
    print(f"| config | engine | {' | '.join(variants)} |\n|---|---|" + "---:|" * len(variants))
    for name in CONFIGS:
        for engine in ("hand", "lightning"):
            plain = [statistics.median(t[i] for t in times[name, engine, "plain run"]) for i in (0, 1)]
            cells = [" / ".join(f"{(m := statistics.median(t[i] for t in times[name, engine, v])):.2f} s "
                                f"({m / plain[i]:.1f}x)" for i in (0, 1)) for v in variants]
            print(f"| {name} | {engine} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
