"""python benchmarks/tour_bench.py [--rounds 2]

How long the notebook tour (docs/tour.py) takes, top to bottom in a fresh Jupyter kernel, as
``toyloops tour`` and the docs site run it, against its target: under 3 minutes on a 2-core CPU.
Prints each round's wall time (kernel start included) and each section's share, from the
execution times nbclient records on every cell, beside the 180 s target.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from toyloops.tools.tour import execute

TARGET_S = 180.0


def seconds(cell: dict) -> float:
    """The cell's run time, from the timestamps nbclient records (``record_timing``, on by default)."""
    timing = cell["metadata"]["execution"]
    started, ended = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                      for key in ("iopub.execute_input", "shell.execute_reply"))
    return (ended - started).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    rounds = parser.parse_args().rounds
    for round_ in range(1, rounds + 1):
        started = time.perf_counter()
        notebook = execute()
        wall = time.perf_counter() - started
        sections: dict[str, float] = {"setup": 0.0}
        section = "setup"
        for cell in notebook.cells:
            if cell.cell_type == "markdown" and cell.source.startswith("## "):
                section = cell.source.splitlines()[0][3:]
                sections[section] = 0.0
            elif cell.cell_type == "code":
                sections[section] += seconds(cell)
        print(f"round {round_}: {wall:.1f} s top to bottom, kernel start included "
              f"({wall / TARGET_S:.2f}x the {TARGET_S:.0f} s target)")
        for name, spent in sections.items():
            print(f"  {spent:6.1f} s  {name}")


if __name__ == "__main__":
    main()
