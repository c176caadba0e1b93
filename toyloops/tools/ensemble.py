"""The ensemble trainer: N runs of one config trained at once, as stacked tensors (used by ``toyloops
seeds``, k-fold and population sweeps).

Each member is an independent hand-loop run: built from its own arguments exactly as ``toyloops loop fit``
builds it (its seed: data, split, shuffles, initial weights, dropout stream; its fold; its learning rate,
weight decay, label smoothing, class weights, dropout rate), with its own run folder, TensorBoard run,
best/last checkpoints in the one format and early stopping. What the members share is the arithmetic:
one stacked forward, backward and optimizer update a step for all of them (:mod:`~toyloops.tools.stacked`),
which is what makes N toy runs cost little more than one. Each member's own ``HandTrainer`` keeps its
books (logging, schedulers, checkpoints), so those rules stay in one place.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor

from toyloops.core.classifier import Classifier
from toyloops.core.module import is_log_step
from toyloops.core.regressor import Regressor
from toyloops.engine import checkpoints as ckpt
from toyloops.engine.callbacks import LastCheckpoint
from toyloops.engine.dashboard import log_hparams
from toyloops.engine.loop import num_batches
from toyloops.rules.errors import NonFiniteLossError, check_finite
from toyloops.tools.members import Member, NotStackable, build_members
from toyloops.tools.stacked import OPTIMIZERS, StackedNet, StackedOptimizer, clip_gradients, member_losses
from toyloops.tools.stacked import why_not_stackable as net_not_stackable

# The members' own optimizers never step (the stacked update does), so their schedulers warn at every step.
SCHEDULER_ORDER_WARNING = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"
SHARED_TRAINER = ("max_epochs", "precision", "gradient_clip_val", "gradient_clip_algorithm", "log_every_n_steps",
                  "check_val_every_n_epoch", "limit_train_batches", "limit_val_batches")


def why_not_stackable(members: Sequence[Member]) -> str | None:
    """None if these members train as one ensemble, else the first reason they cannot."""
    first = members[0]
    model = first.model
    if type(model) not in (Classifier, Regressor):
        return f"model {type(model).__name__} is not Classifier or Regressor (its step is not written out here)"
    if isinstance(model, Classifier) and (model.hparams.get("metrics") or model.train_metrics_from != "steps"):
        return "model.metrics / model.train_metrics: eval are not computed by the ensemble"
    if first.trainer.precision == "16-mixed" or first.trainer.strategy.root_device.type != "cpu":
        return "the ensemble runs on CPU in 32-true or bf16-mixed"
    if type(first.trainer.optimizer).__name__ not in OPTIMIZERS:
        return f"optimizer {type(first.trainer.optimizer).__name__} is not one of {', '.join(OPTIMIZERS)}"
    why = net_not_stackable([m.model.net for m in members])
    if why:
        return why
    for m in members[1:]:
        for key in SHARED_TRAINER:
            if getattr(m.trainer, key) != getattr(first.trainer, key):
                return f"the members differ in trainer.{key}"
        if type(m.model) is not type(model) or type(m.trainer.optimizer) is not type(first.trainer.optimizer):
            return "the members differ in model or optimizer class"
        for split in ("train", "val"):
            if len(m.data.splits[split][0]) != len(first.data.splits[split][0]):
                return f"the members' {split} splits differ in size"
        if (m.trainer.train_batches.batch_size, m.trainer.train_batches.drop_last, m.trainer.val_batches.batch_size) \
                != (first.trainer.train_batches.batch_size, first.trainer.train_batches.drop_last,
                    first.trainer.val_batches.batch_size):
            return "the members differ in batch size"
        if (m.trainer.scheduler or {}).get("interval") != (first.trainer.scheduler or {}).get("interval"):
            return "the members differ in scheduler interval"
    return None


class Ensemble:
    """Trains ``members`` together, each to what its solo ``toyloops loop fit`` run would reach.
    ``epoch_end(member, epoch, score)`` runs at each member's validation; True stops that member (a prune)."""

    def __init__(self, members: list[Member], epoch_end: Callable[[Member, int, float | None], bool] | None = None):
        why = why_not_stackable(members)
        if why:
            raise NotStackable(why)
        self.members, self.epoch_end = list(members), epoch_end
        first = members[0]
        self.t = first.trainer  # the shared trainer settings, read from member 0
        self.task = "regression" if isinstance(first.model, Regressor) else "classification"
        self.monitor = first.trainer.checkpoint_callback.monitor
        self.net = StackedNet([m.model.net for m in members], [m.generator for m in members])
        try:
            self.optimizer = StackedOptimizer(self.net.flat, self.net.sizes, [m.trainer.optimizer for m in members],
                                              self.net.names, [dict(m.model.net.named_parameters()) for m in members])
        except ValueError as err:
            raise NotStackable(str(err)) from None
        self.x, self.y = (torch.stack([m.data.splits["train"][i] for m in members]) for i in (0, 1))
        self.val_x, self.val_y = (torch.stack([m.data.splits["val"][i] for m in members]) for i in (0, 1))
        if self.task == "classification":
            self.smoothing = torch.tensor([m.model.label_smoothing for m in members])
            weights = [m.model.class_weights for m in members]
            self.weights = None if all(w is None for w in weights) else torch.tensor(
                [w or [1.0] * first.model.num_classes for w in weights])
        else:
            self.smoothing, self.weights = torch.zeros(len(members)), None

    def fit(self) -> list[Member]:
        """Train until every member has ended (max_epochs, early stopping, a prune or a non-finite loss)."""
        all_members = list(self.members)
        epoch = 0
        while self.members and epoch < self.t.max_epochs:
            self.train_epoch(epoch)
            if not self.members:  # every member's loss went non-finite
                break
            val = {}
            if (epoch + 1) % self.t.check_val_every_n_epoch == 0 and self.t.limit_val_batches != 0:
                val = self.validate()
            self.end_epoch(epoch, val)
            epoch += 1
        self.drop(list(self.members))
        return all_members

    def train_epoch(self, epoch: int) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SCHEDULER_ORDER_WARNING)
            self.train_steps(epoch)

    def train_steps(self, epoch: int) -> None:
        t = self.t
        scheduler = self.members[0].trainer.scheduler
        per_step = scheduler is not None and scheduler["interval"] == "step"
        for m in self.members:
            if not per_step:
                m.trainer.log_learning_rate()
        iterator = self.members[0].trainer.train_batches
        size, n_batches = iterator.batch_size, num_batches(len(iterator), t.limit_train_batches)
        order = torch.stack([m.trainer.train_batches.indices(epoch) for m in self.members])  # each member's own order
        sums, hits, count = torch.zeros(len(self.members)), torch.zeros(len(self.members)), 0  # float32 sums
        self.net.train()
        for batch_idx in range(n_batches):
            while True:  # once, or again without members whose loss was not finite
                idx = order[:, batch_idx * size:(batch_idx + 1) * size]
                rows = (idx + self.row_offsets()).flatten()
                x = self.x.flatten(0, 1).index_select(0, rows).view(*idx.shape, *self.x.shape[2:])
                y = self.y.flatten(0, 1).index_select(0, rows).view(idx.shape)
                with t.autocast():
                    output = self.net(x)
                    losses = member_losses(output, y, self.task, self.smoothing, self.weights)
                total = losses.sum()
                if math.isfinite(total.item()):  # one sync a step, as the solo run's check_finite
                    break
                keep = self.fail_nonfinite(losses.detach(), epoch)
                if not self.members:
                    return
                order, sums, hits = order[keep], sums[keep], hits[keep]
            step = self.members[0].trainer.global_step
            log_now = is_log_step(step, t.log_every_n_steps)
            if log_now and per_step:  # LearningRateMonitor, per step
                for m in self.members:
                    m.trainer.log_learning_rate()
            self.net.flat.grad = None
            total.backward()  # each member's gradient is its own loss's: the members share no weight
            detached = losses.detach()
            sums.add_(detached, alpha=y.shape[1])
            hits.add_(self.hits(output.detach(), y))
            count += y.shape[1]
            if t.gradient_clip_val:
                clip_gradients(self.net.flat.grad, t.gradient_clip_val, t.gradient_clip_algorithm)
            self.optimizer.step()
            last = batch_idx + 1 == n_batches
            for m, loss in zip(self.members, detached.tolist() if log_now or last else self.members, strict=True):
                if per_step:
                    m.trainer.update_lr_schedulers("step")
                    if not last:
                        m.trainer.update_lr_schedulers("step", plateau=True)
                m.trainer.progress.global_step += 1
                if log_now or last:  # the loss a solo run keeps in callback_metrics is its latest: this one
                    m.trainer.log_metrics({"train/loss": loss}, step=step, write=log_now)
            if per_step:
                self.optimizer.read_rates()
        for m in self.members:
            m.trainer.update_lr_schedulers("epoch")  # before validation, as Lightning does
            m.trainer.train_batches.load_state_dict({"epoch": epoch, "batches_done": n_batches})
        self.optimizer.read_rates()
        tag = "train/acc" if self.task == "classification" else "train/mae"
        self.train_metrics = [{"train/loss_epoch": s / count, tag: h / count}
                              for s, h in zip(sums.tolist(), hits.tolist(), strict=True)]

    def row_offsets(self) -> Tensor:
        """(M, 1): where each member's samples start in the flattened (M * N, ...) data."""
        if getattr(self, "offsets", None) is None or len(self.offsets) != len(self.members):
            self.offsets = torch.arange(len(self.members)).unsqueeze(1) * self.x.shape[1]
        return self.offsets

    def fail_nonfinite(self, losses: Tensor, epoch: int) -> Tensor:
        """The members whose loss is NaN/Inf fail as their solo runs would (before that step's update);
        returns the indices of those that go on."""
        finite = torch.isfinite(losses).tolist()
        failed = [m for m, ok in zip(self.members, finite, strict=True) if not ok]
        for m, loss in zip(self.members, losses, strict=True):
            try:
                check_finite(loss, m.trainer.global_step, epoch)
            except NonFiniteLossError as err:
                m.failed = str(err)
        keep = torch.tensor([i for i, ok in enumerate(finite) if ok], dtype=torch.long)
        self.drop(failed)
        return keep

    def hits(self, output: Tensor, y: Tensor) -> Tensor:
        """Per member: correct predictions (classification) or the summed absolute error (regression)."""
        if self.task == "regression":
            return (output.float() - y).abs().sum(-1)
        predicted = output.argmax(-1) if output.ndim == 3 else (output > 0).long()
        return (predicted == y).sum(-1).float()

    @torch.no_grad()
    def validate(self) -> list[dict[str, float]]:
        """Each member's val metrics as its module logs them: the batch losses' mean weighted by batch size,
        accuracy (or mean absolute error) over the split."""
        self.net.eval()
        size = self.members[0].trainer.val_batches.batch_size
        n = num_batches(len(self.members[0].trainer.val_batches), self.t.limit_val_batches)
        sums = torch.zeros(len(self.members), dtype=torch.float64)
        hits, count = torch.zeros(len(self.members), dtype=torch.float64), 0
        for x, y in list(zip(self.val_x.split(size, dim=1), self.val_y.split(size, dim=1), strict=True))[:n]:
            with self.t.autocast():
                output = self.net(x)
                losses = member_losses(output, y, self.task, self.smoothing, self.weights)
            sums += losses.float().double() * y.shape[1]
            hits += self.hits(output, y).double()
            count += y.shape[1]
        self.net.train()
        tag = "val/acc" if self.task == "classification" else "val/mae"
        return [{"val/loss": s / count, tag: h / count} for s, h in zip(sums.tolist(), hits.tolist(), strict=True)]

    def end_epoch(self, epoch: int, val: list[dict[str, float]]) -> None:
        """Per member, what the hand trainer does after validation and at the epoch's end: log, early stopping,
        schedulers, checkpoints; then the members that ended leave the stack."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SCHEDULER_ORDER_WARNING)
            self.end_members_epoch(epoch, val)

    def end_members_epoch(self, epoch: int, val: list[dict[str, float]]) -> None:
        for i, m in enumerate(self.members):
            trainer, metrics = m.trainer, val[i] if val else {}
            if metrics:
                trainer.log_metrics(metrics)
                for stopper in self.stoppers(m):
                    stopper.on_validation_end(trainer, m.model)
            trainer.update_lr_schedulers("step", plateau=True)
            trainer.log_metrics(self.train_metrics[i])
            for stopper in self.stoppers(m):
                stopper.on_train_epoch_end(trainer, m.model)
            trainer.update_lr_schedulers("epoch", plateau=True)
            trainer.progress.epoch += 1
            self.save(i, m, metrics)
            if self.epoch_end and self.epoch_end(m, epoch, metrics.get(self.monitor)):
                trainer.should_stop = True
        self.optimizer.read_rates()
        self.drop([m for m in self.members if m.stopped])

    @staticmethod
    def stoppers(m: Member) -> list[EarlyStopping]:
        return [c for c in m.trainer.callbacks if isinstance(c, EarlyStopping)]

    def save(self, i: int, m: Member, val_metrics: dict[str, float] | None) -> None:
        """Member ``i``'s weights and optimizer state into its own module and optimizer, then its trainer's
        checkpoint rule; the toyloops section's RNG is the member's own stream (a resume draws on from there)."""
        params = dict(m.model.net.named_parameters())
        with torch.no_grad():
            for name, value in self.net.member_state(i).items():
                params[name].copy_(value)
        self.optimizer.member_state(i, m.trainer.optimizer, params, self.net.names, self.net.sizes)
        held = torch.get_rng_state()
        torch.set_rng_state(m.generator.get_state())
        try:  # held in memory until the member ends: a file a save costs more than a step of all members
            m.trainer.model_checkpoint(val_metrics, save=lambda checkpoint, path: m.pending.__setitem__(path, held_copy(
                checkpoint)))
        finally:
            torch.set_rng_state(held)

    def finish(self, i: int, m: Member) -> None:
        """Member ``i`` has ended: its last.ckpt (unless it failed, as a solo run's would be the epoch's before)
        and the best it held, written; its HParams entry (as the dashboard's at a fit's end); its TensorBoard
        run closed."""
        if m.failed is None:
            m.trainer.callbacks.append(LastCheckpoint(str(m.folder / "checkpoints")))
            self.save(i, m, None)
        for path, checkpoint in m.pending.items():
            ckpt.save_checkpoint(checkpoint, path)
        m.pending.clear()
        if m.failed is None and m.best is not None:
            final_loss = m.trainer.progress.callback_metrics.get("val/loss", math.nan)
            log_hparams(m.folder, "ensemble", (m.folder / "config.yaml").read_text(),
                        {f"{self.monitor}_best": m.best, "val/loss_final": final_loss}, m.trainer.global_step - 1)
        m.trainer.logger.finalize("success" if m.failed is None else "failed")

    def drop(self, ended: list[Member]) -> None:
        """The members that ended leave the stack, their runs finished."""
        if not ended:
            return
        for i, m in enumerate(self.members):
            if m in ended:
                self.finish(i, m)
        keep = torch.tensor([i for i, m in enumerate(self.members) if m not in ended], dtype=torch.long)
        self.members = [m for m in self.members if m not in ended]
        if not self.members:
            return
        self.net.keep(keep)
        self.optimizer.keep(keep, self.net.flat)
        self.x, self.y, self.val_x, self.val_y = self.x[keep], self.y[keep], self.val_x[keep], self.val_y[keep]
        self.smoothing = self.smoothing[keep]
        self.weights = None if self.weights is None else self.weights[keep]


def held_copy(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint to hold until it is written: its weights copied, as the next epoch's writes into the
    module's parameters; everything else in it is built afresh by each dump (the optimizer's state tensors
    too: :meth:`StackedOptimizer.member_state` puts new ones in every time)."""
    return {**checkpoint, "state_dict": {name: value.clone() for name, value in checkpoint["state_dict"].items()}}


def fit_members(runs_args: dict[str, list[str]],
                epoch_end: Callable[[Member, int, float | None], bool] | None = None) -> list[Member]:
    """Build one member per ``{label: loop-fit arguments}`` and train them as one ensemble; raises
    :class:`NotStackable` when they cannot stack (their new run folders removed again)."""
    members: list[Member] = []
    with ExitStack() as stack:
        try:
            members += build_members(runs_args, stack)
            Ensemble(members, epoch_end).fit()
        except BaseException:
            for m in members:  # no writer thread may write into a folder its release removes
                m.trainer.logger.finalize("failed")
            raise
        return members
