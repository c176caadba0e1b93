"""Adding a net and a point set from outside the package: one Python file plus a YAML config, as
docs/extending.md shows them."""

import sys

from conftest import run_cli

from toyloops import Classifier

PROJECT = '''
import torch
from torch import Tensor, nn

from toyloops.core.data import point_set
from toyloops.core.specs import allow_net


@point_set("rings", bayes=lambda **_: 1.0)  # label 1 on the outer ring: the classes never overlap
def make_rings(n_samples: int, noise: float, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_samples) % 2
    angle = 2 * torch.pi * torch.rand(n_samples, generator=g)
    radius = 1.0 + y + noise * torch.randn(n_samples, generator=g)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1), y


@allow_net  # a checkpoint may rebuild it from its hyperparameters
class RingNet(nn.Module):
    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.init_args = dict(in_features=in_features, num_classes=num_classes, hidden=hidden)
        self.num_classes = num_classes
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
'''

CONFIG = '''
trainer:
  max_epochs: 8
model:
  net:
    class_path: ring_project.RingNet
    init_args:
      hidden: 16
  optimizer:
    class_path: torch.optim.AdamW
    init_args:
      lr: 0.02
data:
  class_path: toyloops.PointsDataModule
  init_args:
    dataset: rings
    n_samples: 800
'''


def test_a_net_and_a_point_set_of_ones_own_train_and_reload(in_tmp, monkeypatch):
    (in_tmp / "ring_project.py").write_text(PROJECT)
    (in_tmp / "rings.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(in_tmp))
    try:
        cli = run_cli("fit", "--config", "rings.yaml")
        assert type(cli.model.net).__name__ == "RingNet"
        assert cli.datamodule.baselines["bayes"] == 1.0  # as registered
        assert cli.trainer.callback_metrics["val/acc"] > 0.95
        reloaded = Classifier.load_from_checkpoint(in_tmp / "logs/rings/version_0/checkpoints/last.ckpt")
        assert type(reloaded.net).__name__ == "RingNet"  # rebuilt from its spec: allow_net let it
    finally:
        sys.modules.pop("ring_project", None)
