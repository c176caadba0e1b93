"""Write the legacy checkpoints of tests/legacy/ with a given toyloops tree's own commands.

    python tests/legacy/make_legacy.py --tree /path/to/old/toyloops/checkout [--out tests/legacy]

Each case trains a tiny run (1 epoch, 2 batches, 200 samples) in a scratch folder with the old
tree first on PYTHONPATH, copies its ``last.ckpt`` to ``<out>/<name>.ckpt``, and evaluates it with
the old tree's ``validate`` in both engines. ``<out>/legacy.json`` records, per checkpoint, the
command that wrote it, the shipped config and overrides it was trained with (``fit`` takes
``fit_only`` too) and the metrics each old engine reported: tests/test_legacy.py asserts that
today's code reports the same.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

FIT_ONLY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
SMALL = ["--data.init_args.n_samples", "200"]
TWO_LOGITS = ["--model.net.init_args.binary_logits", "2"]
# The shipped transformer with its positions cut to the 16 tokens of the data and half the width:
# a checkpoint of ~50 kB instead of ~250 kB (AdamW keeps two more copies of every weight).
SMALL_TRANSFORMER = [*SMALL, "--model.net.init_args.max_len", "16", "--model.net.init_args.d_model", "16",
                     "--model.net.init_args.dim_feedforward", "32"]
# name: (engine, the old tree's command, shipped config, overrides used by every command)
CASES = {
    "lightning_logistic_1logit": ("lightning", ["toyloops", "fit"], "blobs_logistic", SMALL),
    "lightning_mlp_3class": ("lightning", ["train.py", "fit"], "blobs_mlp", SMALL),
    "lightning_mlp_2logits": ("lightning", ["toyloops", "fit"], "circles_mlp", SMALL + TWO_LOGITS),
    "lightning_transformer_1logit": ("lightning", ["toyloops", "fit"], "majority_transformer", SMALL_TRANSFORMER),
    "lightning_linear_regression": ("lightning", ["train.py", "fit"], "linear_regression", SMALL),
    "loop_logistic_2logits": ("loop", ["toyloops", "loop", "fit"], "blobs_logistic", SMALL + TWO_LOGITS),
    "loop_mlp_1logit": ("loop", ["-m", "toyloops.loop", "fit"], "circles_mlp", SMALL),
    "loop_transformer_2logits": ("loop", ["toyloops", "loop", "fit"], "majority_transformer",
                                 SMALL_TRANSFORMER + TWO_LOGITS),
    "loop_linear_regression": ("loop", ["-m", "toyloops.loop", "fit"], "linear_regression", SMALL),
}
VALIDATE = {"lightning": ["toyloops", "validate"], "loop": ["toyloops", "loop", "validate"]}


def run(tree: Path, cwd: Path, command: list[str]) -> str:
    """One command of the old tree (``toyloops ...`` as ``python -m toyloops ...``); its output."""
    argv = ["-m", *command] if command[0] == "toyloops" else command
    argv = [str(tree / argv[0]), *argv[1:]] if argv[0] == "train.py" else argv
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="the old toyloops checkout (holds train.py)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    tree, out = args.tree.resolve(), args.out.resolve()
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    manifest = {"commit": commit.strip(), "checkpoints": {}}
    for name, (engine, command, config, overrides) in CASES.items():
        with tempfile.TemporaryDirectory() as scratch:
            cwd = Path(scratch)
            run(tree, cwd, [*command, "--config", config, *overrides, *FIT_ONLY])
            (last,) = cwd.glob("logs/*/*version_0/checkpoints/last.ckpt")
            shutil.copyfile(last, out / f"{name}.ckpt")
            metrics = {}
            for evaluator, validate in VALIDATE.items():
                text = run(tree, cwd, [*validate, "--config", config, *overrides, "--ckpt_path", str(last)])
                folder = re.search(r"^results: (.+)$", text, re.MULTILINE).group(1)
                metrics[evaluator] = yaml.safe_load((cwd / folder / "metrics.yaml").read_text())["metrics"]
        manifest["checkpoints"][name] = {"engine": engine, "command": " ".join(command), "config": config,
                                         "overrides": overrides, "fit_only": FIT_ONLY, "validate": metrics}
        print(name, (out / f"{name}.ckpt").stat().st_size, "bytes", metrics)
    (out / "legacy.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
