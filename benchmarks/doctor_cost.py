"""python benchmarks/doctor_cost.py [--configs blobs_mlp,circles_mlp,majority_transformer] [--rounds 2]

What ``toyloops doctor`` costs, as a multiple of a plain ``fit`` of the same config by the same engine: each
in this process (imports paid once, before timing), in a temporary folder, the variants interleaved round by
round so machine noise hits each alike; the median wall time of the rounds. Prints one table (results in
RESULTS.md, "Doctor").
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from contextlib import chdir, redirect_stderr, redirect_stdout

from toyloops.engine.defaults import apply_thread_policy
from toyloops.tools.doctor import run as doctor

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def fit(engine: str, config: str) -> None:
    if engine == "hand":
        from toyloops.engine.loop_cli import run

        run(["fit", "--config", config, *QUIET])
    else:
        from toyloops.engine.cli import ToyCLI

        cli = ToyCLI(args=["--config", config, *QUIET], run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)


def timed(action) -> float:  # noqa: ANN001 - a function of no arguments
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp), redirect_stdout(io.StringIO()), \
            redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        action()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="blobs_mlp,circles_mlp,majority_transformer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    apply_thread_policy()
    configs, times = args.configs.split(","), {}
    timed(lambda: fit("hand", configs[0]))  # warm-up: first-call costs (lazy imports, caches)
    for _ in range(args.rounds):
        for config in configs:
            for engine in ("hand", "lightning"):
                times.setdefault((config, engine, "fit"), []).append(timed(lambda c=config, e=engine: fit(e, c)))
                times.setdefault((config, engine, "doctor"), []).append(timed(
                    lambda c=config, e=engine: doctor(["--config", c, "--engine", e])))
    print("| config | engine | fit s | doctor s | doctor / fit |\n|---|---|---|---|---|")
    for config in configs:
        for engine in ("hand", "lightning"):
            plain, checked = (statistics.median(times[(config, engine, k)]) for k in ("fit", "doctor"))
            print(f"| {config} | {engine} | {plain:.2f} | {checked:.2f} | {checked / plain:.1f}x |")


if __name__ == "__main__":
    main()
