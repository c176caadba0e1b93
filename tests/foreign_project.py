"""Another project's code using an installed toyloops (run by tests/test_foreign.py in a fresh venv,
from a folder outside the repository). Each part asserts its own outcome; the last line printed is
``foreign project: ok``.

    python foreign_project.py <a checkpoint written by `toyloops fit --config blobs_mlp`>
"""

import functools
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import toyloops
from toyloops import (
    MLP,
    Classifier,
    PointsDataModule,
    TransformerClassifier,
    classification_loss,
    probabilities,
)

TRAINER = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)


def xor_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    return x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (probabilities(logits).argmax(1) == y).float().mean().item()


class MyXorModule(L.LightningModule):
    """A LightningModule of the other project's own, with toyloops' MLP inside."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(in_features=2, num_classes=2, hidden_sizes=[32, 32])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return classification_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def own_module_with_toyloops_mlp() -> None:
    L.seed_everything(0)
    x, y = xor_points(1024, seed=1)
    module = MyXorModule()
    L.Trainer(max_epochs=30, **TRAINER).fit(module, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
    x_val, y_val = xor_points(512, seed=2)
    with torch.no_grad():
        acc = accuracy(module.net(x_val), y_val)
    assert acc > 0.9, f"own LightningModule around toyloops.MLP: XOR val acc {acc}"
    print(f"own LightningModule + toyloops.MLP: XOR val acc {acc:.3f}")


def first_token_is_largest(n: int, seed: int, vocab: int = 12, length: int = 6):
    """Token data of this project's own: is the first token the largest of the sequence?"""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, length), generator=g)
    return tokens, (tokens[:, 0] >= tokens[:, 1:].max(1).values).long()


def classifier_around_transformer(workdir: Path) -> None:
    L.seed_everything(0)
    x, y = first_token_is_largest(2048, seed=3)
    x_val, y_val = first_token_is_largest(512, seed=4)
    net = TransformerClassifier(vocab_size=12, seq_len=6, num_classes=2, d_model=32, nhead=4, num_layers=1,
                                dim_feedforward=64, dropout=0.0, pooling="mean")
    model = Classifier(net=net, optimizer=functools.partial(torch.optim.AdamW, lr=3e-3))
    trainer = L.Trainer(max_epochs=8, default_root_dir=workdir / "transformer", **TRAINER)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
                DataLoader(TensorDataset(x_val, y_val), batch_size=256))
    path = workdir / "transformer.ckpt"
    trainer.save_checkpoint(path)
    reloaded = Classifier.load_from_checkpoint(path).eval()  # no arguments: toyloops' nets record theirs
    model.eval()
    with torch.no_grad():
        logits, again = model(x_val), reloaded(x_val)
    assert torch.equal(logits, again), "the reloaded Transformer computes other logits"
    acc = accuracy(logits, y_val)
    majority = max(y_val.float().mean().item(), 1 - y_val.float().mean().item())
    assert acc > majority + 0.05, f"Classifier(TransformerClassifier) on own tokens: {acc} vs majority {majority}"
    print(f"Classifier(TransformerClassifier), own tokens: val acc {acc:.3f} (majority {majority:.3f}), reloaded equal")


def points_datamodule_with_plain_trainer() -> None:
    L.seed_everything(0)
    data = PointsDataModule(dataset="circles", n_samples=1000, batch_size=32)
    model = Classifier(net=MLP(in_features=2, num_classes=2, hidden_sizes=[32, 32]),
                       optimizer=functools.partial(torch.optim.AdamW, lr=0.01))
    trainer = L.Trainer(max_epochs=15, **TRAINER)
    trainer.fit(model, datamodule=data)
    acc = trainer.validate(model, datamodule=data, verbose=False)[0]["val/acc"]
    assert acc > 0.9, f"PointsDataModule with a plain Trainer: circles val acc {acc}"
    print(f"PointsDataModule + plain Trainer: circles val acc {acc:.3f}")


def load_a_train_py_checkpoint(ckpt: Path) -> None:
    model = Classifier.load_from_checkpoint(ckpt).eval()
    data = PointsDataModule.load_from_checkpoint(ckpt)
    data.setup("validate")
    acc = L.Trainer(**TRAINER).validate(model, datamodule=data, verbose=False)[0]["val/acc"]
    assert acc > 0.9, f"the toyloops fit checkpoint scores val acc {acc}"
    print(f"toyloops fit checkpoint reloaded: blobs val acc {acc:.3f}")


if __name__ == "__main__":
    here = Path.cwd()
    assert "site-packages" in toyloops.__file__, f"toyloops imported from {toyloops.__file__}, not the installed wheel"
    assert isinstance(MLP(2, 2), nn.Module)
    own_module_with_toyloops_mlp()
    classifier_around_transformer(here)
    points_datamodule_with_plain_trainer()
    load_a_train_py_checkpoint(Path(sys.argv[1]))
    print("foreign project: ok")
