"""toyloops doctor --config blobs_mlp --config zoo/no_zero_grad   (one classic training bug, switched on)

The bug zoo: classic training bugs, each a class here that a preset in ``configs/zoo/`` swaps into
``blobs_mlp`` (a model, a net or a data module of the same arguments, wrong in one place). Every
class says which ``toyloops doctor`` check catches it; docs/zoo/ has a page per bug. The bugs live
in the hooks both engines call (Lightning's Trainer and the hand trainer), so each shows in either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from toyloops.core.classifier import Classifier
from toyloops.core.datamodules import PointsDataModule
from toyloops.core.nets import MLP

__all__ = ["BatchMixingMLP", "ClipBeforeUnscale", "DeadReluMLP", "LeakyValData", "LossKeptAlive", "NoZeroGrad",
           "OverconfidentMLP", "ShuffledLabelsData", "SoftmaxMLP", "SortedUnshuffledData", "StatsFromAllSplitsData",
           "ValidateInTrainMode"]

LOSS_SCALE = 2.0**16  # what a GradScaler starts at
CLIP_VAL = 1.0  # ClipBeforeUnscale clips to this norm (blobs_mlp's gradient_clip_val)


class NoZeroGrad(Classifier):
    """Bug: the gradients are never zeroed, so each step adds this batch's gradient to all before it.
    Both engines zero them before ``backward``; this module adds back what the last step used, which is
    what a loop without ``optimizer.zero_grad()`` computes. Caught by doctor's ``step gradient``."""

    def on_after_backward(self) -> None:
        for p in self.parameters():
            kept = getattr(p, "zoo_previous_grad", None)
            if p.grad is not None and kept is not None:
                p.grad += kept

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for p in self.parameters():  # the gradient the step used (clipped), as it would stay in .grad
            p.zoo_previous_grad = None if p.grad is None else p.grad.detach().clone()


class SoftmaxMLP(MLP):
    """Bug: a net that ends in a softmax, trained with ``cross_entropy`` (which applies its own log-softmax):
    the loss cannot fall below ln(1 + (C-1)/e), and the gradients shrink. Caught by doctor's ``overfit one batch``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).softmax(dim=-1)  # the bug: return the logits


class ValidateInTrainMode(Classifier):
    """Bug: validation runs with the net in train mode (a hook that calls ``self.train()``), so dropout
    is on and two passes over val disagree. Caught by doctor's ``eval mode``."""

    def on_validation_epoch_start(self) -> None:
        self.train()


class LossKeptAlive(Classifier):
    """Bug: the epoch's loss summed as a tensor (``self.total += loss``, not ``loss.item()``): every
    step's graph stays alive until the epoch ends, and memory grows with the step. Caught by doctor's
    ``graph freed``."""

    total: Tensor | float = 0.0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.total = self.total + loss  # the bug: + loss.item() (or loss.detach()) frees the graph
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_sum", torch.as_tensor(self.total).detach().item())
        self.total = 0.0
        super().on_train_epoch_end()


class ClipBeforeUnscale(Classifier):
    """Bug: gradients clipped while still multiplied by the loss scale, then unscaled: the clip binds at
    1/65536 of its threshold and training crawls. 16-mixed's GradScaler runs on a CUDA GPU only here, so
    this module scales the gradients by 2^16 itself, in fp32, as backward of the scaled loss would, and
    clips to norm 1 (the config's ``gradient_clip_val`` is 0). Caught by doctor's ``step gradient``."""

    def on_after_backward(self) -> None:
        for p in self.parameters():  # what backward of the loss times the scale gives, as under a GradScaler
            if p.grad is not None:
                p.grad *= LOSS_SCALE

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        nn.utils.clip_grad_norm_(self.parameters(), CLIP_VAL)  # the bug: before the division below
        for p in self.parameters():
            if p.grad is not None:
                p.grad /= LOSS_SCALE


class BatchMixingMLP(MLP):
    """Bug: a reshape where a transpose was meant (``h.t().reshape(B, H)``) after the first layer, so each
    sample's output depends on other samples of its batch. Caught by doctor's ``batch independence``."""

    def forward(self, x: Tensor) -> Tensor:
        first, rest = self.layers[0], self.layers[1:]
        h = first(x)
        h = h.t().reshape(h.shape)  # (H, B) read as (B, H): features of different samples mixed
        out = rest(h)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class DeadReluMLP(MLP):
    """Bug: the first layer's biases start at -10 (a bad init, or a bias filled by mistake), so every ReLU of
    the first hidden layer outputs 0 for every input and no gradient reaches that layer. Caught by doctor's
    ``live activations`` and ``gradients``."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden_sizes: Sequence[int] = (16,),
                 activation: str = "relu", dropout: float = 0.0, binary_logits: int = 2) -> None:
        """Args: :class:`~toyloops.core.nets.MLP`'s."""
        super().__init__(in_features, num_classes, hidden_sizes, activation, dropout, binary_logits)
        with torch.no_grad():
            self.layers[0].bias.fill_(-10.0)  # the bug: biases at 0 (nn.Linear's init), or small


class OverconfidentMLP(MLP):
    """Bug: the output layer's weights 100 times too large at init, so the first predictions are confidently
    wrong and the loss starts far above ln C (the "hockey stick"). Caught by doctor's ``loss at init``."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden_sizes: Sequence[int] = (16,),
                 activation: str = "relu", dropout: float = 0.0, binary_logits: int = 2) -> None:
        """Args: :class:`~toyloops.core.nets.MLP`'s."""
        super().__init__(in_features, num_classes, hidden_sizes, activation, dropout, binary_logits)
        with torch.no_grad():
            self.layers[-1].weight.mul_(100.0)  # the bug: keep the default init (or shrink the last layer's)


class ShuffledLabelsData(PointsDataModule):
    """Bug: the train labels shuffled apart from their inputs (a second, separate shuffle of ``y``):
    nothing to learn. Caught by doctor's ``beats zeroed input`` and ``baselines``."""

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = super().splits
        if not getattr(self, "zoo_done", False):
            x, y = splits["train"]
            splits["train"] = (x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed + 1))])
            self.zoo_done = True
        return splits


class SortedUnshuffledData(PointsDataModule):
    """Bug: the train split sorted by label and served in order (``shuffle=False``): each batch holds one
    class and the model chases the latest. Caught by doctor's ``batches mix classes``."""

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = super().splits
        if not getattr(self, "zoo_done", False):
            x, y = splits["train"]
            order = torch.argsort(y, stable=True)
            splits["train"] = (x[order], y[order])
            self.zoo_done = True
        return splits

    def train_dataloader(self) -> Any:
        return self.iterator("train", shuffle=False)


class LeakyValData(PointsDataModule):
    """Bug: the validation samples also trained on (train = train + val, as after a concatenation meant for
    a final fit): val/acc measures memory. Caught by doctor's ``splits disjoint``."""

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        splits = super().splits
        if not getattr(self, "zoo_done", False):
            (x, y), (xv, yv) = splits["train"], splits["val"]
            splits["train"] = (torch.cat([x, xv]), torch.cat([y, yv]))
            self.zoo_done = True
        return splits


class StatsFromAllSplitsData(PointsDataModule):
    """Bug: standardised with the mean and std of all splits together, so val and test statistics shape
    what train sees. Caught by doctor's ``train-only statistics``."""

    def transform(self, train: Tensor, val: Tensor, test: Tensor) -> tuple[Tensor, ...]:
        everything = torch.cat([train, val, test])
        self.mean, self.std = everything.mean(dim=0), everything.std(dim=0) + 1e-8
        return tuple((t - self.mean) / self.std for t in (train, val, test))
