"""python examples/minimal_torch.py   (configs/blobs_mlp.yaml in plain PyTorch)

The minimal pair: this file and examples/minimal_lightning.py are the same run, with the loop
written out here and Lightning's Trainer.fit there. Same order, same names; each line that
differs says so at the line (here: what Lightning does in its place). Read them side by side:
    diff -y -W 200 examples/minimal_torch.py examples/minimal_lightning.py
tests/test_minimal.py trains both and finds every weight equal (torch.equal, on CPU).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingLR

from toyloops import MLP, PointsDataModule


class Model(nn.Module):  # instead of L.LightningModule: the loop below calls its methods
    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(in_features=2, num_classes=3, hidden_sizes=[32, 32], dropout=0.1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)  # logits (B, 3)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:  # count
        x, y = batch
        acc = (self.net(x).argmax(dim=1) == y).float().mean()
        return acc * len(y)  # instead of self.log: the loop sums these, then divides

    def configure_optimizers(self) -> tuple[AdamW, CosineAnnealingLR]:  # a pair
        optimizer = AdamW(self.parameters(), lr=0.01)
        scheduler = CosineAnnealingLR(optimizer, T_max=10)
        return optimizer, scheduler  # instead of two lists: the loop below steps each


def main() -> nn.Module:
    """Train, print the last epoch's val accuracy and return the trained net."""
    torch.manual_seed(0)  # instead of L.seed_everything(0): the same torch seed, the same init
    dm = PointsDataModule(dataset="blobs", centers=[[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]],
                          n_samples=1500, batch_size=64, seed=0)
    model = Model()
    optimizer, scheduler = model.configure_optimizers()  # fit, the model on its device
    train_batches, val_batches = dm.train_dataloader(), dm.val_dataloader()  # fit, once each
    for epoch in range(10):  # fit_loop: max_epochs=10
        train_batches.set_epoch(epoch)  # fit_loop: loader.sampler.set_epoch
        for batch_idx, batch in enumerate(train_batches):  # fit_loop.epoch_loop
            loss = model.training_step(batch, batch_idx)  # training_step, run in a closure
            optimizer.zero_grad()  # optimizer_zero_grad: after training_step, before backward
            loss.backward()  # backward
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # configure_gradient_clipping
            optimizer.step()  # optimizer_step
        scheduler.step()  # lr_scheduler_step: interval "epoch", after the epoch's last batch
        model.eval()  # on_validation_model_eval, at the epoch's end: dropout off
        correct = 0  # what self.log sums: each batch's accuracy times its size
        with torch.no_grad():  # Lightning: torch.inference_mode(), the same numbers
            for batch_idx, batch in enumerate(val_batches):  # epoch_loop.val_loop
                correct += model.validation_step(batch, batch_idx)  # validation_step
        model.train()  # on_validation_model_train: back to train mode
        val_acc = correct / len(val_batches.x)  # self.log's epoch mean
    print(f"val/acc {val_acc:.4f}")
    return model.net


if __name__ == "__main__":
    main()
