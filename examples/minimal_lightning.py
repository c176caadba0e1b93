"""python examples/minimal_lightning.py   (configs/blobs_mlp.yaml with Lightning)

The minimal pair: this file and examples/minimal_torch.py are the same run, with Lightning's
Trainer.fit here and the loop written out there. Same order, same names; each line that
differs says so at the line. Read them side by side:
    diff -y -W 200 examples/minimal_torch.py examples/minimal_lightning.py
tests/test_minimal.py trains both and finds every weight equal (torch.equal, on CPU).
"""

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingLR

from toyloops import MLP, PointsDataModule


class Model(L.LightningModule):  # instead of nn.Module: Trainer.fit calls its hooks
    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(in_features=2, num_classes=3, hidden_sizes=[32, 32], dropout=0.1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)  # logits (B, 3)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:  # logs
        x, y = batch
        acc = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val/acc", acc, batch_size=len(y))  # the epoch's mean, weighted by batch size

    def configure_optimizers(self) -> tuple[list[AdamW], list[CosineAnnealingLR]]:  # two lists
        optimizer = AdamW(self.parameters(), lr=0.01)
        scheduler = CosineAnnealingLR(optimizer, T_max=10)
        return [optimizer], [scheduler]  # a scheduler without a config steps once per epoch


def main() -> nn.Module:
    """Train, print the last epoch's val accuracy and return the trained net."""
    L.seed_everything(0)  # instead of torch.manual_seed(0); seeds random and numpy too
    dm = PointsDataModule(dataset="blobs", centers=[[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]],
                          n_samples=1500, batch_size=64, seed=0)
    model = Model()
    trainer = L.Trainer(max_epochs=10, gradient_clip_val=1.0, accelerator="cpu",  # the loop's
                        num_sanity_val_steps=0,  # no val batches before training, as the loop
                        logger=False, enable_checkpointing=False,  # no logs, no checkpoints
                        enable_progress_bar=False, enable_model_summary=False)  # one line out
    trainer.fit(model, dm)  # instead of the loop in minimal_torch.py
    val_acc = trainer.callback_metrics["val/acc"]  # the last epoch's, as self.log left it
    print(f"val/acc {val_acc:.4f}")
    return model.net


if __name__ == "__main__":
    main()
