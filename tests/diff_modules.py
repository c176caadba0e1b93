"""A user's code as tests/test_diff.py diffs it: modules, nets and data given by import path
(``--b.model diff_modules.ExtraDraw``), each a small variant of a shipped one with one known bug or edit."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from toyloops import Classifier, PointsDataModule
from toyloops.rules.batches import BatchIterator


class ExtraDraw(Classifier):
    """Draws one random number before the forward pass: every dropout mask after it moves one place along the stream."""

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        if stage == "train":
            torch.rand(1)
        return super().model_step(batch, stage)


class DrawAfter(Classifier):
    """Draws one random number after its training step: no tensor of the step changes, the stream does."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        torch.rand(1)
        return loss


class ShuffleSeed(PointsDataModule):
    """Points whose training order is drawn from a seed of its own (the data and the split from ``seed``)."""

    def __init__(self, shuffle_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shuffle_seed = shuffle_seed

    def train_dataloader(self) -> BatchIterator:
        loader = super().train_dataloader()
        loader.seed = self.shuffle_seed
        return loader


class ScaledLoss(Classifier):
    """Scales its loss by 1024 and unscales the gradients in ``on_before_optimizer_step``, as an fp16 GradScaler
    does; the trainer's ``gradient_clip_val`` then clips them in real units (Lightning clips after that hook)."""

    scale = 1024.0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return super().training_step(batch, batch_idx) * self.scale

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for p in self.parameters():
            p.grad /= self.scale


class ClipBeforeUnscale(ScaledLoss):
    """The classic fp16 bug: clipping the still-scaled gradients (norm ~1000x the real one), so the clip binds
    on every step and the unscaled update is ~1000x too small."""

    def on_after_backward(self) -> None:
        nn.utils.clip_grad_norm_(self.parameters(), 1.0)


class UserNet(nn.Module):
    """A user's net, version 1: encoder -> activation -> head."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder, self.act, self.head = nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.encoder(x)))


class UserNetEdited(UserNet):
    """Version 2: one edit, the activation (same parameters, so both start from the same weights)."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden: int = 16) -> None:
        super().__init__(in_features, num_classes, hidden)
        self.act = nn.Softsign()


class SharedLayerNet(UserNet):
    """Calls one layer twice in a forward pass (weights shared across depth)."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden: int = 16) -> None:
        super().__init__(in_features, num_classes, hidden)
        self.shared = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.shared(self.act(self.shared(self.act(self.encoder(x))))))
