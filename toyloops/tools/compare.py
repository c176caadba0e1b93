"""toyloops compare --config configs/blobs_mlp.yaml [more train.py/loop arguments]   (or --ckpt_path P|last)

Trains one config with both engines, Lightning (``train.py``) and the hand loop
(``toyloops.engine.loop``), in this process and in a temporary folder, then prints one table: final
metrics per engine, the largest absolute weight difference, and time per training step.
``--ckpt_path`` alone names the config as ``validate`` reads it: its run's ``config.yaml`` (``last``: the newest
run's). Both engines train that config afresh: a run resumes only in the engine that wrote it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from contextlib import chdir, redirect_stdout
from pathlib import Path

import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.runs import Interrupted, Stopped, with_run_config, with_shipped_configs
from toyloops.engine.runs import main as run_main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series a TensorBoard run holds: tag -> [(step, value), ...]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_lightning(args: list[str]) -> dict:
    """``train.py fit`` in-process; returns the run dir, final weights and seconds spent in fit."""
    from toyloops.engine.cli import ToyCLI

    cli = ToyCLI(args=[*args, *QUIET], run=False)  # explicit arguments: this process's own argv is not read
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"seconds": time.perf_counter() - started, "run_dir": Path(cli.trainer.log_dir),
            "weights": cli.model.state_dict(), "steps": cli.trainer.global_step}


def run_hand_loop(args: list[str]) -> dict:
    """``python -m toyloops.engine.loop fit`` in-process; same return shape as :func:`run_lightning`."""
    from toyloops.engine.loop_cli import run
    from toyloops.rules.specs import load_checkpoint

    started = time.perf_counter()
    result = run(["fit", *args, *QUIET])
    return {"seconds": time.perf_counter() - started, "run_dir": result["last_checkpoint"].parent.parent,
            "weights": load_checkpoint(result["last_checkpoint"])["state_dict"], "steps": result["global_step"]}


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over all weights (0.0 means bit-identical); the key sets must match."""
    if a.keys() != b.keys():
        raise ValueError(f"the two nets differ in their weights: {sorted(a.keys() ^ b.keys())}")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def compare(args: list[str]) -> dict[str, dict]:
    return {"lightning": run_lightning(args), "loop": run_hand_loop(args)}


def absolute_paths(args: list[str]) -> list[str]:
    """Values that name files or folders here, made absolute (``--key value`` and ``--key=value``):
    compare runs in a temporary folder."""
    out = []
    for arg in args:
        flag, equals, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        out.append(f"{flag}{equals}{os.path.abspath(value)}" if value and Path(value).exists() else arg)
    return out


def without_ckpt_path(args: list[str]) -> list[str]:
    """``args`` less ``--ckpt_path P`` (its config already read by :func:`~toyloops.engine.runs.with_run_config`)."""
    out, skip = [], False
    for arg in args:
        if not skip and arg != "--ckpt_path" and not arg.startswith("--ckpt_path="):
            out.append(arg)
        skip = arg == "--ckpt_path" and not skip
    return out


def table(args: list[str] | None = None) -> None:
    """Both engines on the same arguments, then one table (what ``toyloops compare`` prints)."""
    given = with_shipped_configs(list(sys.argv[1:] if args is None else args))
    args = with_run_config(["compare", *given])[1:]
    run_config = Path(os.path.abspath(args[args.index("--config") + 1])) if args != given else None
    args = absolute_paths(without_ckpt_path(args))
    try:
        with tempfile.TemporaryDirectory() as tmp, chdir(tmp), redirect_stdout(io.StringIO()):
            if run_config is not None:  # a run's config.yaml holds its subcommand's keys: a fresh run's config here
                config = yaml.safe_load(run_config.read_text())
                for key in ("ckpt_path", "weights_only"):
                    config.pop(key, None)
                fresh = Path(tmp) / f"{run_config.parent.parent.name}.yaml"  # named after the run, as its runs are
                write_atomic(fresh, yaml.safe_dump(config, sort_keys=False).encode())
                args[args.index(str(run_config))] = str(fresh)
            runs = compare(args)  # each engine's own summary names folders in tmp, gone afterwards: not shown
            final = {name: {tag: series[-1][1] for tag, series in scalars(r["run_dir"]).items()}
                     for name, r in runs.items()}
    except (Stopped, Interrupted) as err:  # its resume point was in the temporary folder, gone now
        raise Stopped(err.signum, where="during compare, whose runs live in a temporary folder: nothing kept") \
            from None
    diff = max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"])
    tags = ["train/loss", "train/acc", "val/loss", "val/acc"]
    # wall time of the whole fit (validation, checkpoints, images included) per training step
    print(f"\n{'engine':<10}" + "".join(f"{t:>12}" for t in tags) + f"{'fit us/step':>13}{'steps':>7}")
    for name, run in runs.items():
        cells = "".join(f"{final[name].get(t, float('nan')):>12.6f}" for t in tags)
        print(f"{name:<10}{cells}{1e6 * run['seconds'] / max(run['steps'], 1):>13.0f}{run['steps']:>7}")
    print(f"max |weight difference|: {diff:.3g}" + ("  (bit-identical)" if diff == 0 else ""))


def main(args: list[str] | None = None) -> None:
    run_main(table, args)


if __name__ == "__main__":
    main()
