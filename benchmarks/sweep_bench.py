"""python benchmarks/sweep_bench.py [--trials 20] [--fits 20]

Wall time of a ``--trials``-trial ``toyloops sweep`` of blobs_mlp (its shipped config, shipped ``mlp``
space) with 1 and with 2 worker processes, against ``--fits`` separate ``toyloops fit --config
blobs_mlp`` commands run one after another (each pays Python, torch and Lightning start-up). With
``--fits`` below ``--trials`` the fit total is extrapolated linearly from the mean fit, and the
table says so. Each variant runs in its own empty folder. Prints a markdown table with ratios.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def timed(args: list[str]) -> tuple[float, str]:
    """Wall seconds of one toyloops command in an empty folder, and a sweep's trial states."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "toyloops", *args], cwd=folder, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        results = list(Path(folder).glob("logs/sweeps/*/results.csv"))
        states = Counter(row["state"].lower() for row in csv.DictReader(results[0].open())) if results else {}
        return seconds, ", ".join(f"{n} {state}" for state, n in sorted(states.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--fits", type=int, default=20)
    opts = parser.parse_args()
    sweep = ["sweep", "--config", "blobs_mlp", "--space", "mlp", "--trials", str(opts.trials)]
    (one, one_states), (two, two_states) = timed([*sweep, "--workers", "1"]), timed([*sweep, "--workers", "2"])
    fits = [timed(["fit", "--config", "blobs_mlp", "--trainer.enable_progress_bar", "false"])[0]
            for _ in range(opts.fits)]
    total = sum(fits) / len(fits) * opts.trials
    how = "measured" if opts.fits == opts.trials else f"{opts.fits} measured, x{opts.trials / opts.fits:g}"
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), blobs_mlp (10 epochs, 1500 samples)\n")
    print("| variant | wall time | vs separate fits |\n|---|---|---|")
    mean = sum(fits) / len(fits)
    print(f"| {opts.trials} separate `toyloops fit` ({how}; mean {mean:.1f} s) | {total:.1f} s | 1.00 |")
    print(f"| `toyloops sweep --workers 1` ({one_states}) | {one:.1f} s | {one / total:.2f} |")
    print(f"| `toyloops sweep --workers 2` ({two_states}) | {two:.1f} s | {two / total:.2f} |")


if __name__ == "__main__":
    main()
