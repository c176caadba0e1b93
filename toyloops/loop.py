"""python -m toyloops.loop fit --config configs/blobs_mlp.yaml   (also validate, test; --help)

The training loop Lightning runs for ``train.py``, written out by hand in plain PyTorch. It reads
the same config file, builds the same data and net, consumes the random number generator in the
same order, and logs the same TensorBoard tags at the same steps: on CPU in fp32 its weights are
bit-identical to Lightning's (``tests/test_loop.py`` holds it to that). Read it next to
``toyloops/module.py``; ``fit`` is the whole story, top to bottom.
"""

from __future__ import annotations

import shutil
import sys
import time
from argparse import ArgumentError
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import MeanMetric

from toyloops.checkpoints import load_checkpoint, save_checkpoint
from toyloops.config import (
    LOG_DIR,
    LOG_EVERY_N_STEPS,
    MONITOR,
    MONITOR_MODE,
    OptimizerCallable,
    SchedulerCallable,
    add_links,
    check_net_fits_data,
    default_optimizer,
    one_line,
    with_config_files,
)
from toyloops.dashboard import Dashboard, log_graph, log_hparams
from toyloops.errors import ConfigError, NonFiniteLossError, check_finite
from toyloops.models import classification_loss, make_accuracy, predicted_class
from toyloops.seeding import rng_state, seed_everything, set_rng_state


@dataclass
class TrainerOptions:
    """The ``trainer:`` keys of a config that the hand loop implements (same names as Lightning)."""

    max_epochs: int | None = None
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed"] = "32-true"
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | Literal["auto"] = "auto"
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = LOG_EVERY_N_STEPS
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    default_root_dir: str | None = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = True


SUPPORTED_TRAINER_KEYS = tuple(TrainerOptions.__dataclass_fields__)


@dataclass
class Engine:
    """Device, autocast and GradScaler for one precision setting."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, accelerator: str, devices: int | str, precision: str) -> Engine:
        if devices not in (1, "auto"):
            raise ConfigError(f"devices={devices!r}: the hand loop runs one process; use train.py for several")
        cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        if cuda and not torch.cuda.is_available():
            raise ConfigError(f"accelerator={accelerator!r} but no CUDA device is available")
        device = torch.device("cuda" if cuda else "cpu")
        if precision == "16-mixed" and not cuda:
            raise ConfigError("trainer.precision='16-mixed' needs a CUDA GPU and this run is on CPU: "
                              "use 'bf16-mixed' or '32-true'")
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        # fp16 gradients can underflow: scale the loss up, unscale before the step (no-op otherwise).
        return cls(device, dtype, torch.amp.GradScaler(device.type, enabled=precision == "16-mixed"))

    def autocast(self):  # noqa: ANN201 - a context manager
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def _limit(n_batches: int, limit: int | float) -> int:
    return min(n_batches, limit) if isinstance(limit, int) else int(n_batches * limit)


def evaluate(net: nn.Module, batches, engine: Engine, num_classes: int, stage: str,
             limit: int | float = 1.0) -> dict[str, float]:
    """Mean loss (weighted by batch size) and accuracy over ``batches``, in eval mode, no grad."""
    accuracy, mean_loss = make_accuracy(num_classes).to(engine.device), MeanMetric().to(engine.device)
    net.eval()
    with torch.no_grad():
        for x, y in islice(batches, _limit(len(batches), limit)):
            x, y = x.to(engine.device), y.to(engine.device)
            with engine.autocast():
                logits = net(x)
                loss = classification_loss(logits, y)
            accuracy.update(predicted_class(logits), y)
            mean_loss.update(loss, len(y))
    return {f"{stage}/loss": mean_loss.compute().item(), f"{stage}/acc": accuracy.compute().item()}


def fit(net: nn.Module, datamodule: L.LightningDataModule, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None, trainer: TrainerOptions, run_dir: Path,
        scheduler_interval: str = "epoch", resume: dict[str, Any] | None = None,
        every_n_steps: int | None = None, config_text: str = "",
        dashboard: Dashboard | None = None) -> dict[str, Any]:
    """Train ``net`` as Lightning's fit loop would; returns the final metrics and checkpoint paths.

    ``resume`` is a checkpoint from :func:`load_hand_checkpoint` to continue from;
    ``every_n_steps`` also writes ``last.ckpt`` every that many optimizer steps (mid-epoch);
    ``dashboard`` adds the graph, boundary and confusion images and the HParams entry.
    """
    engine = Engine.create(trainer.accelerator, trainer.devices, trainer.precision)
    net.to(engine.device)  # before the optimizer state exists, so its tensors follow the weights
    train_batches, val_batches = datamodule.train_dataloader(), datamodule.val_dataloader()
    num_classes = datamodule.num_classes
    train_acc = make_accuracy(num_classes).to(engine.device)
    train_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (predicted, target) per step
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lr_tag = f"lr-{type(optimizer).__name__}"
    max_epochs = 1000 if trainer.max_epochs is None else trainer.max_epochs
    n_train = _limit(len(train_batches), trainer.limit_train_batches)

    state = {"epoch": 0, "global_step": 0, "best": None}
    if resume is not None:  # weights, optimizer, scheduler, scaler, counters, data order, RNG
        state = restore(resume, net, optimizer, scheduler, engine.scaler, train_batches)
    writer = SummaryWriter(str(run_dir))  # creates the run folder
    ckpt_dir = run_dir / "checkpoints"
    if config_text:
        (run_dir / "config.yaml").write_text(config_text)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    metrics: dict[str, float] = {}
    seconds_per_step: list[float] = []  # training phase of each epoch (for benchmarks/bench.py)
    val_data = (val_batches.x, val_batches.y)
    if dashboard and dashboard.graph and resume is None:
        log_graph(writer, net, val_data[0][:2])

    for epoch in range(state["epoch"], max_epochs):
        net.train()
        if scheduler is None or scheduler_interval == "epoch":
            writer.add_scalar(lr_tag, optimizer.param_groups[0]["lr"], state["global_step"])
        started = time.perf_counter()
        train_batches.set_epoch(epoch)  # order from seed + epoch; keeps a mid-epoch resume's place
        for x, y in train_batches:
            step = state["global_step"]
            log_now = (step + 1) % trainer.log_every_n_steps == 0
            if log_now and (scheduler is None or scheduler_interval == "step"):
                writer.add_scalar(lr_tag, optimizer.param_groups[0]["lr"], step)
            x, y = x.to(engine.device, non_blocking=True), y.to(engine.device, non_blocking=True)
            with engine.autocast():  # forward and loss in low precision; weights stay fp32
                logits = net(x)
                loss = classification_loss(logits, y)
            check_finite(loss, step, epoch)  # stop before a NaN reaches the weights
            train_outputs.append((predicted_class(logits.detach()), y))  # counted once at epoch end
            optimizer.zero_grad(set_to_none=True)
            engine.scaler.scale(loss).backward()
            if trainer.gradient_clip_val:
                engine.scaler.unscale_(optimizer)  # clip in real units, not scaled ones
                if trainer.gradient_clip_algorithm == "norm":
                    nn.utils.clip_grad_norm_(params, trainer.gradient_clip_val)
                else:
                    nn.utils.clip_grad_value_(params, trainer.gradient_clip_val)
            engine.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
            engine.scaler.update()
            if scheduler is not None and scheduler_interval == "step" and not plateau:
                scheduler.step()
            state["global_step"] += 1
            if log_now:  # the only host sync of a step, every log_every_n_steps
                log(writer, {"train/loss": loss.item()}, step, epoch)
            if every_n_steps and state["global_step"] % every_n_steps == 0:  # a mid-epoch resume point
                save_checkpoint(snapshot(net, optimizer, scheduler, engine.scaler, train_batches, state),
                                ckpt_dir / "last.ckpt")
            if train_batches.batches_done >= n_train:  # limit_train_batches
                break
        seconds = time.perf_counter() - started
        seconds_per_step.append(seconds / max(n_train, 1))
        if scheduler is not None and scheduler_interval == "epoch" and not plateau:
            scheduler.step()

        last_step = state["global_step"] - 1  # epoch-end metrics go to the epoch's last step
        metrics = {}
        if (epoch + 1) % trainer.check_val_every_n_epoch == 0:
            metrics = evaluate(net, val_batches, engine, num_classes, "val", trainer.limit_val_batches)
            log(writer, metrics, last_step, epoch)
            if plateau:
                scheduler.step(metrics["val/loss"])
        train_acc.update(*(torch.cat(t) for t in zip(*train_outputs, strict=True)))
        train_outputs.clear()
        metrics["train/acc"] = train_acc.compute().item()
        train_acc.reset()
        log(writer, {"train/acc": metrics["train/acc"]}, last_step, epoch)
        if dashboard:
            dashboard.epoch_end(writer, net, val_data, epoch, last_step, last=epoch + 1 == max_epochs)
        writer.flush()

        state["epoch"] = epoch + 1
        score = metrics.get(MONITOR)
        improved = score is not None and (state["best"] is None or _better(score, state["best"]))
        if improved:
            state["best"] = score
        checkpoint = snapshot(net, optimizer, scheduler, engine.scaler, train_batches, state)
        if improved:
            save_checkpoint(checkpoint, ckpt_dir / "best.ckpt")
        save_checkpoint(checkpoint, ckpt_dir / "last.ckpt")
        if trainer.enable_progress_bar:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"epoch {epoch:3d}  {shown}  ({1e6 * seconds_per_step[-1]:.0f} us/step)", flush=True)
    if dashboard and state["global_step"]:
        dashboard.fit_end(writer, net, val_data, num_classes, state["global_step"] - 1)
        if state["best"] is not None and config_text:
            log_hparams(writer, config_text, {"val/acc_best": state["best"],
                                              "val/loss_final": metrics.get("val/loss", float("nan"))},
                        state["global_step"] - 1)
    writer.close()
    return {**metrics, "best": state["best"], "best_checkpoint": ckpt_dir / "best.ckpt",
            "last_checkpoint": ckpt_dir / "last.ckpt", "global_step": state["global_step"],
            "train_seconds_per_step": seconds_per_step}


def log(writer: SummaryWriter, metrics: dict[str, float], step: int, epoch: int) -> None:
    """Write scalars plus the epoch number, as Lightning's logger connector does with each log."""
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)
    writer.add_scalar("epoch", epoch, step)


def _better(score: float, best: float) -> bool:
    return score > best if MONITOR_MODE == "max" else score < best


# --- checkpoints: plain tensors and numbers only, so torch.load(weights_only=True) reads them ---

def snapshot(net: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
             train_batches, state: dict) -> dict[str, Any]:
    """Everything a resumed run needs to continue as if it had never stopped."""
    return {
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "loop": dict(state),
        "data": train_batches.state_dict(),
        "rng": rng_state(),
    }


def load_hand_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by this loop (``weights_only=True``); anything else is a ConfigError."""
    checkpoint = load_checkpoint(path)
    if "net" not in checkpoint or "loop" not in checkpoint:
        raise ConfigError(f"ckpt_path={str(path)!r} is not a hand-loop checkpoint (train.py writes its own format)")
    return checkpoint


def restore(checkpoint: dict, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler: torch.amp.GradScaler, train_batches) -> dict:
    """Load a :func:`snapshot` back into live objects; returns the loop counters."""
    net.load_state_dict(checkpoint["net"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    train_batches.load_state_dict(checkpoint["data"])
    set_rng_state(checkpoint["rng"])
    return dict(checkpoint["loop"])


# --- the same config file as train.py -------------------------------------------------------

def build_parser() -> ArgumentParser:
    """A jsonargparse parser for the subset of a ``train.py`` config that the hand loop runs."""
    parser = ArgumentParser(prog="python -m toyloops.loop", exit_on_error=False, allow_abbrev=False,
                            description="The hand-written training loop, driven by a train.py config.")
    parser.add_argument("--config", action=ActionConfigFile, help="a run config (YAML), as for train.py")
    parser.add_argument("--seed_everything", type=int, default=0)
    parser.add_class_arguments(TrainerOptions, "trainer")
    parser.add_argument("--model.net", type=nn.Module, required=True)
    parser.add_argument("--model.num_classes", type=int, default=2)
    parser.add_argument("--model.optimizer", type=OptimizerCallable, default=default_optimizer)
    parser.add_argument("--model.scheduler", type=SchedulerCallable | None, default=None)
    parser.add_argument("--model.scheduler_interval", type=Literal["epoch", "step"], default="epoch")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.add_argument("--checkpoint.monitor", type=Literal["val/acc"], default=MONITOR)
    parser.add_argument("--checkpoint.mode", type=Literal["max"], default=MONITOR_MODE)
    parser.add_argument("--last_checkpoint.every_n_train_steps", type=int | None, default=None,
                        help="also save last.ckpt every N optimizer steps (resume mid-epoch)")
    parser.add_class_arguments(Dashboard, "dashboard")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="resume (fit) or evaluate (validate/test) this checkpoint; 'last' = newest run's")
    add_links(parser)
    return parser


def _next_run_dir(trainer: TrainerOptions, name: str) -> Path:
    root = Path(trainer.default_root_dir or ".") / LOG_DIR / name
    versions = [int(p.name.split("_")[-1]) for p in root.glob("loop_version_*") if p.name.split("_")[-1].isdigit()]
    return root / f"loop_version_{max(versions, default=-1) + 1}"


def run(args: list[str] | None = None) -> dict[str, Any]:
    """Parse ``fit|validate|test --config ...`` and run it; returns the metrics."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] not in ("fit", "validate", "test"):
        raise ConfigError(f"first argument must be fit, validate or test, got {args[0] if args else 'nothing'!r}")
    stage, parser = args[0], build_parser()
    cfg = parser.parse_args(args[1:])
    seed_everything(cfg.seed_everything)  # before any object is built: init draws from it
    objects = parser.instantiate(cfg)
    trainer: TrainerOptions = objects.trainer
    datamodule, net = objects.data, objects.model.net
    check_net_fits_data(net, datamodule)
    name = Path(str(cfg.config[0])).stem if cfg.get("config") else "default"
    if trainer.enable_model_summary:
        print(f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters", flush=True)
    ckpt_path = _resolve_ckpt(cfg.ckpt_path, trainer, name)

    if stage != "fit":
        if ckpt_path is None:
            raise ConfigError(f"{stage} needs --ckpt_path (a hand-loop checkpoint or 'last')")
        net.load_state_dict(load_hand_checkpoint(ckpt_path)["net"])
        engine = Engine.create(trainer.accelerator, trainer.devices, trainer.precision)
        split = "val" if stage == "validate" else "test"
        batches = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
        metrics = evaluate(net.to(engine.device), batches, engine, datamodule.num_classes, split,
                           trainer.limit_val_batches)
        print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    optimizer = objects.model.optimizer(net.parameters())
    scheduler = objects.model.scheduler(optimizer) if objects.model.scheduler else None
    resume = load_hand_checkpoint(ckpt_path) if ckpt_path else None  # a bad file fails before any folder
    run_dir = ckpt_path.parent.parent if ckpt_path else _next_run_dir(trainer, name)
    fresh = not run_dir.exists()
    try:
        result = fit(net, datamodule, optimizer, scheduler, trainer, run_dir,
                     scheduler_interval=objects.model.scheduler_interval, resume=resume,
                     every_n_steps=cfg.last_checkpoint.every_n_train_steps, config_text=parser.dump(cfg),
                     dashboard=objects.dashboard)
    except BaseException:
        if fresh and not any(run_dir.glob("checkpoints/*.ckpt")):  # leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print(f"\n== toyloops hand loop ==\nbest {MONITOR}: {result['best']:.4f}\n"
          f"best checkpoint: {result['best_checkpoint']}\nlast checkpoint: {result['last_checkpoint']}\n"
          f"logs: {run_dir}\nview: tensorboard --logdir {run_dir.parent}", flush=True)
    return result


def _resolve_ckpt(ckpt_path: str | None, trainer: TrainerOptions, name: str) -> Path | None:
    if ckpt_path != "last":
        return None if ckpt_path is None else Path(ckpt_path)
    runs = sorted((Path(trainer.default_root_dir or ".") / LOG_DIR / name).glob("loop_version_*/checkpoints/last.ckpt"),
                  key=lambda p: int(p.parent.parent.name.split("_")[-1]))
    if not runs:
        raise ConfigError(f"ckpt_path='last' but no hand-loop run of {name!r} has a last.ckpt under {LOG_DIR}/{name}/")
    return runs[-1]


def main(args: list[str] | None = None) -> None:
    """Command-line entry: user errors end in one line on stderr and a non-zero exit."""
    try:
        run(args)
    except ArgumentError as err:
        message = with_config_files(one_line(str(err)), list(sys.argv[1:] if args is None else args))
        if "trainer" in message:
            message += f"  (hand-loop trainer keys: {', '.join(SUPPORTED_TRAINER_KEYS)})"
        sys.exit(f"error: {message}")
    except (ValueError, NonFiniteLossError) as err:
        sys.exit(f"error: {one_line(str(err))}")
    except OSError as err:  # a failed write (read-only folder, full disk) stops the run loudly
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
