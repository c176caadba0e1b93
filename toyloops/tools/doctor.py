"""toyloops doctor --config C [--config PRESET] [--engine lightning|hand] [--steps 30] [--max_epochs N]

The training recipe's checks on one config (docs/doctor.md): the data (class balance, disjoint splits,
train-only statistics, mixed batches), the model (batch independence, loss at init, gradients, live
activations), and short trainings through the chosen engine (beats zeroed input, overfit one batch,
step gradient, graph freed, lr range), then the config's own run (update size, lr schedule, eval mode,
baselines). Each check prints one line, pass / warn / fail with its number; ``doctor.md``, ``doctor.json``,
the plots and a TensorBoard event file with them go to ``logs/<config>/doctor_version_N/``. Exit code 1
when a check fails (a warning alone: 0). Doctor runs in one process: a DDP preset is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from toyloops.core.datamodules import ToyDataModule
from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import LOG_DIR
from toyloops.engine.loop import HandTrainer
from toyloops.engine.loop_cli import build
from toyloops.rules.errors import ConfigError, NonFiniteLossError
from toyloops.tools import doctor_checks as dc

RUN_PREFIX = "doctor_version_"
ENGINES = ("lightning", "hand")
LR_SWEEP = (1e-6, 10.0)  # the lr range test's span, swept exponentially
STATE_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d,
                nn.BatchNorm3d)  # the layers that compute differently in train mode


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="toyloops doctor", description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", "-c", action="append", required=True, help="a run config or preset (repeatable)")
    parser.add_argument("--engine", default="lightning", help="lightning or hand: which trainer runs the trainings")
    parser.add_argument("--steps", type=int, default=30, help="steps of the short trainings (zeroed input)")
    parser.add_argument("--overfit_steps", type=int, default=150, help="steps on one batch")
    parser.add_argument("--lr_steps", type=int, default=70, help="steps of the lr range test")
    parser.add_argument("--max_epochs", type=int, default=None, help="the full run's epochs (default: the config's)")
    args, overrides = parser.parse_known_args(argv)
    if args.engine not in ENGINES:
        raise ConfigError(f"--engine={args.engine!r}: expected lightning or hand")
    for key, least in (("steps", 2), ("overfit_steps", 2), ("lr_steps", 10), ("max_epochs", 1)):
        if getattr(args, key) is not None and getattr(args, key) < least:
            raise ConfigError(f"--{key}={getattr(args, key)}: expected at least {least}")
    return args, overrides


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The doctor's own trainings print nothing: no banners, no bars, no warnings meant for a real run."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class Batches:
    """A fixed list of batches served as one loader (Lightning reads a plain list as several loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Doctor:
    """One config's model, data and trainer settings, and the trainings the checks need."""

    def __init__(self, args: argparse.Namespace, overrides: list[str]) -> None:
        self.args = args
        config_args = [a for c in args.config for a in ("--config", c)]
        self.cfg, objects = build([*config_args, *overrides])
        self.model, self.data = objects.model, objects.data
        self.seed = self.cfg.seed_everything or 0
        self.pristine = copy.deepcopy(self.model)
        self.options = vars(self.cfg.trainer)

    def fresh(self) -> L.LightningModule:
        """The config's model as built (same initial weights), with the random draws reset."""
        torch.manual_seed(self.seed)
        return copy.deepcopy(self.pristine)

    def trainer(self, callbacks: list, full_run: bool = False, **settings: Any) -> Any:
        """A trainer with the config's precision and clipping, quiet, writing nothing; ``full_run``: with the
        config's batch limits and validation interval too (the short trainings choose their own batches)."""
        keep = ("precision", "gradient_clip_val", "gradient_clip_algorithm", "accelerator", "log_every_n_steps",
                *(("limit_train_batches", "limit_val_batches", "check_val_every_n_epoch") if full_run else ()))
        options = {key: self.options[key] for key in keep if self.options.get(key) is not None}
        options.update({"max_epochs": 1, "devices": 1, "logger": False, "enable_checkpointing": False,
                        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                        "callbacks": callbacks, **settings})
        return (L.Trainer if self.args.engine == "lightning" else HandTrainer)(**options)

    def train(self, model: L.LightningModule, batches: list, recorder: dc.Recorder, sweep: bool = False) -> dc.Recorder:
        """``fit`` on these batches, one epoch, no validation. ``sweep``: the lr range test, which drives the loss
        to NaN on purpose: the hand trainer's stop there ends the sweep (Lightning goes on, with NaN losses)."""
        with quiet(), contextlib.suppress(*((NonFiniteLossError,) if sweep else ())):
            self.trainer([recorder], limit_val_batches=0).fit(model, train_dataloaders=Batches(batches))
        return recorder

    def validate(self, model: L.LightningModule, batches: Any = None) -> dict[str, float]:
        with quiet():
            trainer = self.trainer([])
            found = (trainer.validate(model, dataloaders=Batches(batches), verbose=False) if batches is not None else
                     trainer.validate(model, datamodule=self.data, verbose=False))[0]
        return {key: float(value) for key, value in found.items()}

    def train_batches(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """The first ``n`` training batches, across epochs in the order the run serves them."""
        batches, epoch = [], 0
        while len(batches) < n:
            loader = self.data.train_dataloader()
            if callable(getattr(getattr(loader, "sampler", None), "set_epoch", None)):
                loader.sampler.set_epoch(epoch)
            batches += list(loader)[: n - len(batches)]
            epoch += 1
        return batches

    def raw_splits(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """The inputs of train, val and test as drawn, before the data module's ``transform`` (a ToyDataModule)."""
        if not isinstance(self.data, ToyDataModule):
            return None
        x, _ = self.data.generate(self.data.n_samples, self.data.seed)
        return tuple(x[index] for index in self.data.split)

    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        if isinstance(self.data, ToyDataModule):
            return {name: split for name, split in self.data.splits.items() if len(split[1])}
        self.data.setup("fit")
        loaders = {"train": self.data.train_dataloader, "val": self.data.val_dataloader}
        gathered = {name: list(loader()) for name, loader in loaders.items()}
        return {name: (torch.cat([x for x, _ in b]), torch.cat([y for _, y in b])) for name, b in gathered.items()}


def val_loss(metrics: dict[str, float]) -> float:
    key = next((k for k in metrics if k.startswith("val") and k.endswith("loss")), None)
    if key is None:
        raise ConfigError(f"the model's validation logs no val loss (it logs {', '.join(metrics) or 'nothing'}): "
                          "doctor reads a tag val/loss")
    return metrics[key]


def examine(doctor: Doctor) -> tuple[list[dc.Check], dict[str, Any]]:
    """Every check, in the order a step computes what it reads: the data, the net, a step, short trainings,
    the config's own run; and the curves the plots draw."""
    splits = doctor.splits()
    y_train = splits["train"][1]
    classes = int(getattr(doctor.data, "num_classes", 0) or int(y_train.max()) + 1) if not y_train.is_floating_point() \
        else 0
    batches = doctor.train_batches(doctor.args.steps)
    checks, curves = data_checks(doctor, splits, classes), {}
    checks.append(dc.batch_independence(doctor.fresh(), batches[0][0]))
    checks += short_trainings(doctor, batches, splits, classes, curves)
    checks += full_run(doctor, splits, classes, curves)
    return checks, curves


def data_checks(doctor: Doctor, splits: dict[str, tuple[Tensor, Tensor]], classes: int) -> list[dc.Check]:
    raw = doctor.raw_splits()
    statistics = dc.train_only_statistics(raw and copy.deepcopy(doctor.data).transform, raw)
    if not classes:  # a regression: no classes to balance or mix
        return [dc.disjoint_splits(splits), statistics]
    return [dc.class_balance(splits, classes), dc.disjoint_splits(splits), statistics,
            dc.batches_mix_classes(doctor.data.train_dataloader(), classes)]


def short_trainings(doctor: Doctor, batches: list, splits: dict[str, tuple[Tensor, Tensor]], classes: int,
                    curves: dict[str, Any]) -> list[dc.Check]:
    """The first steps (loss, gradients, activations, graph), real against zeroed inputs, one batch overfit,
    the lr range test: each on a fresh copy of the config's model, through the engine."""
    args, y_train = doctor.args, splits["train"][1]
    real = doctor.fresh()
    first = doctor.train(real, batches, dc.Recorder())
    expected = (math.log(classes), f"ln {classes}, uniform over the classes") if classes else (
        y_train.float().pow(2).mean().item(), "the targets' mean square (what predicting 0 scores)")
    tolerance = 1e-4 if "32" in str(doctor.options.get("precision") or "32") else 1e-2
    checks = [dc.initial_loss(first.losses[0], *expected), dc.gradients_reach_parameters(first),
              dc.live_activations(first), dc.step_gradient(first, tolerance), dc.graph_freed(first)]

    zeroed = doctor.fresh()
    doctor.train(zeroed, [(torch.zeros_like(x), y) for x, y in batches], dc.Recorder())
    val_batches = list(doctor.data.val_dataloader())
    real_loss = val_loss(doctor.validate(real, val_batches))
    zeroed_loss = val_loss(doctor.validate(zeroed, [(torch.zeros_like(x), y) for x, y in val_batches]))
    checks.append(dc.beats_zeroed_input(real_loss, zeroed_loss))

    one = doctor.fresh()
    overfit = doctor.train(one, [batches[0]] * args.overfit_steps, dc.Recorder())
    checks.append(dc.overfits_one_batch(overfit.losses[0], val_loss(doctor.validate(one, [batches[0]])),
                                        args.overfit_steps))
    curves["overfit one batch"] = overfit.losses

    low, high = LR_SWEEP
    lrs = [low * (high / low) ** (i / (args.lr_steps - 1)) for i in range(args.lr_steps)]
    sweep = doctor.train(doctor.fresh(), doctor.train_batches(args.lr_steps), dc.Recorder(lrs), sweep=True)
    check, span = dc.lr_range(sweep.lrs, sweep.losses, first.lrs[0])
    curves["lr range"] = {"lrs": sweep.lrs, "losses": sweep.losses, "configured": first.lrs[0], **span}
    return [*checks, check]


def full_run(doctor: Doctor, splits: dict[str, tuple[Tensor, Tensor]], classes: int,
             curves: dict[str, Any]) -> list[dc.Check]:
    """The config's run (its epochs, or --max_epochs), then two validations of its weights, with pre-hooks on
    the layers that compute differently in train mode."""
    model, recorder = doctor.fresh(), dc.Recorder()
    with quiet():
        doctor.trainer([recorder], full_run=True, max_epochs=doctor.args.max_epochs or doctor.options.get(
            "max_epochs") or 1).fit(model, datamodule=doctor.data)
    curves["full run"] = recorder.losses
    passes, in_train = [], {}
    for _ in range(2):
        hooks = [m.register_forward_pre_hook(lambda module, _, name=name: in_train.update({name: module.training}))
                 for name, m in model.named_modules() if isinstance(m, STATE_LAYERS)]
        passes.append(doctor.validate(model))
        for hook in hooks:
            hook.remove()
    metric = "val/acc" if classes else "val/loss"
    y_val = splits["val"][1]
    rates = dict(getattr(doctor.data, "baselines", None) or {}) or (
        {"majority": y_val.bincount().max().item() / len(y_val)} if classes else {})
    return [dc.update_size(recorder.update_ratios), dc.lr_schedule(recorder.lrs),
            dc.eval_mode(list(in_train.values()), [val_loss(p) for p in passes]),
            dc.baselines(passes[0].get(metric, math.nan), rates, metric)]


def line_plot(title: str, series: dict[str, tuple[list[float], list[float]]], log_x: bool = False,
              marks: dict[str, float] | None = None) -> Image.Image:
    """A plain line plot (Pillow): each series in its colour, vertical marks at x values, a legend."""
    width, height, left, bottom, top, right = 720, 400, 70, 40, 40, 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 12), title, fill="black")
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    if not points:
        return image
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    ys = sorted(y for _, y in points)
    x0, x1 = min(fx(x) for x, _ in points), max(fx(x) for x, _ in points)
    y0, y1 = ys[0], min(ys[-1], ys[0] + 4 * (ys[len(ys) // 2] - ys[0]) + 1e-9)  # a blow-up does not flatten the rest
    to_px = lambda x, y: (left + (fx(x) - x0) / ((x1 - x0) or 1) * (width - left - right),  # noqa: E731
                          top + (1 - (min(y, y1) - y0) / ((y1 - y0) or 1)) * (height - top - bottom))
    draw.rectangle((left, top, width - right, height - bottom), outline="grey")
    for value, anchor in ((y0, height - bottom), (y1, top)):
        draw.text((5, anchor - 6), f"{value:.3g}", fill="black")
    draw.text((left, height - bottom + 6), f"{10 ** x0 if log_x else x0:.3g}", fill="black")
    draw.text((width - right - 50, height - bottom + 6), f"{10 ** x1 if log_x else x1:.3g}", fill="black")
    colours = ((52, 101, 164), (204, 0, 0), (78, 154, 6), (117, 80, 123))
    for (name, marked), colour in zip((marks or {}).items(), colours[1:], strict=False):
        if math.isfinite(marked) and marked > 0:
            px = to_px(marked, y0)[0]
            draw.line((px, top, px, height - bottom), fill=colour)
            draw.text((px + 3, top + 20 + 14 * list(marks).index(name)), name, fill=colour)
    for i, ((name, (xs, values)), colour) in enumerate(zip(series.items(), colours, strict=False)):
        line = [to_px(x, y) for x, y in zip(xs, values, strict=True) if math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        draw.text((left + 6, top + 6 + 14 * i), name, fill=colour)
    return image


def plots(curves: dict[str, Any]) -> dict[str, Image.Image]:
    sweep, full = curves["lr range"], curves["full run"]
    return {
        "lr_range.png": line_plot("lr range test: training loss over an exponential lr sweep (log lr)",
                                  {"loss": (sweep["lrs"], sweep["losses"])}, log_x=True,
                                  marks={"configured lr": sweep["configured"], "falls fastest": sweep["fastest_low"],
                                         "blows up": sweep["diverges"]}),
        "curves.png": line_plot("training loss by step: one batch overfit, the config's run", {
            "overfit one batch": (list(range(len(curves["overfit one batch"]))), curves["overfit one batch"]),
            "full run": (list(range(len(full))), full)}),
    }


def report(title: str, checks: list[dc.Check]) -> tuple[str, str]:
    """The text (stdout) and the markdown (doctor.md) of the checks."""
    counts = {status: sum(c.status == status for c in checks) for status in (dc.PASS, dc.WARN, dc.FAIL)}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    text = "\n".join([title, *(c.line() for c in checks), summary])
    rows = "\n".join(f"| {c.name} | {c.status} | {c.number} | {c.detail} |" for c in checks)
    markdown = (f"# {title}\n\n| check | status | measured | against |\n|---|---|---|---|\n{rows}\n\n{summary}\n\n"
                "![lr range test](lr_range.png)\n\n![training loss](curves.png)\n")
    return text, markdown


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Examine a config; print the report, write it with its plots into a run folder; returns the checks."""
    args, overrides = parse(list(sys.argv[1:] if argv is None else argv))
    args.config = [runs.with_shipped_configs(["--config", c])[1] for c in args.config]
    doctor = Doctor(args, overrides)
    name = runs.run_name(args.config)
    stacked = " + ".join(Path(c).stem for c in args.config)
    title = f"toyloops doctor: {stacked} ({args.engine} engine)"
    folder = runs.claim_new_run(Path(LOG_DIR) / name, RUN_PREFIX)
    try:
        checks, curves = examine(doctor)
        text, markdown = report(title, checks)
        print(text, flush=True)
        images = plots(curves)
        for file, image in images.items():
            png = io.BytesIO()
            image.save(png, format="PNG")
            write_atomic(folder.path / file, png.getvalue())
        write_atomic(folder.path / "doctor.md", markdown.encode())
        with SummaryWriter(str(folder.path)) as writer:  # beside the runs in `tensorboard --logdir logs`
            for file, image in images.items():
                writer.add_image(f"doctor/{Path(file).stem}", np.asarray(image), 0, dataformats="HWC")
            writer.add_text("doctor/report", markdown, 0)
        write_atomic(folder.path / "doctor.json", json.dumps(
            {"config": [str(c) for c in args.config], "engine": args.engine,
             "checks": [{"name": c.name, "status": c.status, "number": c.number, "detail": c.detail}
                        for c in checks]}, indent=1).encode())
    except BaseException:
        folder.release(failed=True)
        raise
    folder.release(failed=False)
    print(f"written to {folder.path}", flush=True)
    return {"checks": {c.name: c for c in checks}, "failed": any(c.status == dc.FAIL for c in checks),
            "run_dir": folder.path}


def examine_and_exit(argv: list[str] | None) -> None:
    if run(argv)["failed"]:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    """``toyloops doctor ...``: exit code 0 when no check fails, 1 when one does; a user's mistake is one line."""
    runs.main(examine_and_exit, argv)
