"""python benchmarks/worker_memory.py [--config blobs_mlp] [--trials 4]

What ``toyloops sweep --workers K`` counts a worker as, against what a worker takes: the command's peak
memory when it checks K (torch, Lightning and the config built, in a fresh process) and the largest peak
of its 2 worker processes over a whole sweep of the shipped ``mlp`` space, in each engine. Prints a
markdown table with the ratio (toyloops.tools.workers.WORKER_GROWTH is chosen from it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

CHECK = """
from toyloops.tools import sweep, workers
sweep.check_args("{engine}", sweep.run_args(["{config}"], []))
print(workers.peak_memory() / 2**20)
"""
SWEEP = """
import resource
from toyloops.tools import sweep
sweep.run(["--config", "{config}", "--space", "mlp", "--trials", "{trials}", "--workers", "2", "--engine", "{engine}",
           "--trainer.max_epochs", "3", "--name", "m"])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def last_number(code: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, capture_output=True, text=True)
        return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="blobs_mlp")
    parser.add_argument("--trials", type=int, default=4)
    opts = parser.parse_args()
    print("| engine | command's peak at the check (MiB) | largest worker's peak (MiB) | ratio |")
    print("|---|---|---|---|")
    for engine in ("lightning", "loop"):
        check = last_number(CHECK.format(engine=engine, config=opts.config))
        worker = last_number(SWEEP.format(engine=engine, config=opts.config, trials=opts.trials))
        print(f"| {engine} | {check:.0f} | {worker:.0f} | {worker / check:.2f} |", flush=True)


if __name__ == "__main__":
    main()
