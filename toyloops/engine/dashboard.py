"""What both engines add to TensorBoard beyond scalars (docs/outputs.md): hparams, model graph, decision boundary
and confusion-matrix images. Nothing here draws from the global random generator (eval mode under ``no_grad``;
tracing inside ``fork_rng``), so switching it on or off changes no weights.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams, scalar
from torch.utils.tensorboard.writer import FileWriter
from torchmetrics.classification import MulticlassConfusionMatrix

from toyloops.core.nets import probabilities
from toyloops.rules.errors import ConfigError

# one colour per class (RGB), light enough to show the points drawn over it
PALETTE = np.array([(66, 133, 244), (234, 67, 53), (52, 168, 83), (251, 188, 5), (155, 89, 182),
                    (26, 188, 156)], dtype=np.float32)
HPARAM_SECTIONS = ("seed_everything", "model", "data")
HPARAM_TRAINER_KEYS = ("max_epochs", "precision", "accelerator", "devices", "strategy", "gradient_clip_val")
LIGHTNING_DEFAULTS = {"precision": "32-true", "accelerator": "auto", "devices": "auto", "strategy": "auto"}
HPARAMS_SUFFIX = ".hparams"  # the run's one HParams record, replaced by each resumed leg


FLUSH_SECS = 5  # SummaryWriter's documented flush_secs, in both engines' writers


@dataclass
class Dashboard:
    """Which extras to log. ``boundary_every_n_epochs=0`` switches the boundary images off.

    Args:
        boundary_every_n_epochs: decision-boundary image (2-D point data only) every N epochs,
            and after the last one.
        confusion_matrix: a confusion-matrix image of the validation split at the end of fit.
        graph: the model graph (where ``torch.jit.trace`` can follow the net).
        resolution: pixels per side of the boundary image.
    """

    boundary_every_n_epochs: int = 5
    confusion_matrix: bool = True
    graph: bool = True
    resolution: int = 160

    def __post_init__(self) -> None:
        if not 16 <= self.resolution <= 2048:
            raise ConfigError(f"dashboard.resolution={self.resolution}: expected 16 to 2048 pixels a side")
        if self.boundary_every_n_epochs < 0:
            raise ConfigError(f"dashboard.boundary_every_n_epochs={self.boundary_every_n_epochs}: expected >= 0 "
                              "(0: off)")

    def epoch_end(self, writer: SummaryWriter, net: nn.Module, val: tuple[Tensor, Tensor], epoch: int,
                  step: int, last: bool) -> None:
        """Boundary image after epochs N, 2N, ... and the last one."""
        n = self.boundary_every_n_epochs
        if n > 0 and val[0].ndim == 2 and val[0].shape[1] == 2 and ((epoch + 1) % n == 0 or last):
            writer.add_image("val/decision_boundary", decision_boundary(net, *val, self.resolution), step,
                             dataformats="HWC")

    def fit_end(self, writer: SummaryWriter, net: nn.Module, val: tuple[Tensor, Tensor], num_classes: int,
                step: int) -> None:
        if self.confusion_matrix:
            writer.add_image("val/confusion_matrix", confusion_matrix_image(net, *val, num_classes), step,
                             dataformats="HWC")


def _eval_logits(net: nn.Module, x: Tensor) -> Tensor:
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(x.to(next(net.parameters()).device)).float().cpu()
    finally:
        net.train(was_training)


def decision_boundary(net: nn.Module, x: Tensor, y: Tensor, resolution: int = 160) -> np.ndarray:
    """(H, W, 3) uint8: class probabilities over the plane as blended colours, points on top."""
    lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
    xs, ys = torch.linspace(lo[0], hi[0], resolution), torch.linspace(hi[1], lo[1], resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2).to(x.dtype)
    probs = probabilities(_eval_logits(net, grid)).numpy()  # (R*R, C)
    colours = probs @ PALETTE[: probs.shape[1]]  # expected colour under the model
    image = (0.55 * colours + 0.45 * 255).reshape(resolution, resolution, 3)  # lighten the background
    picture = Image.fromarray(image.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    px = ((x - lo) / (hi - lo) * torch.tensor([resolution - 1, -(resolution - 1)])
          + torch.tensor([0, resolution - 1])).numpy()
    for (u, v), label in zip(px, y.tolist(), strict=True):
        draw.ellipse((u - 2, v - 2, u + 2, v + 2), fill=tuple(int(c) for c in PALETTE[label]), outline=(0, 0, 0))
    return np.asarray(picture)


def confusion_matrix_image(net: nn.Module, x: Tensor, y: Tensor, num_classes: int, cell: int = 48) -> np.ndarray:
    """(H, W, 3) uint8 grid: rows are true classes, columns predicted, each cell its count."""
    matrix = MulticlassConfusionMatrix(num_classes)(probabilities(_eval_logits(net, x)).argmax(-1), y).numpy()
    size = cell * num_classes
    picture = Image.new("RGB", (size + cell, size + cell), "white")
    draw = ImageDraw.Draw(picture)
    shade = matrix / max(matrix.max(), 1)
    for i in range(num_classes):
        draw.text((cell // 3, cell + i * cell + cell // 3), f"t{i}", fill="black")  # true class, left
        draw.text((cell + i * cell + cell // 3, cell // 3), f"p{i}", fill="black")  # predicted, top
        for j in range(num_classes):
            level = int(255 - 180 * shade[i, j])
            box = (cell + j * cell, cell + i * cell, cell + (j + 1) * cell - 1, cell + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(level, level, 255), outline=(200, 200, 200))
            draw.text((box[0] + 6, box[1] + cell // 3), str(int(matrix[i, j])), fill="black")
    return np.asarray(picture)


def log_graph(writer: SummaryWriter, net: nn.Module, example: Tensor) -> bool:
    """Add the traced model graph; False where tracing cannot follow the net."""
    was_training = net.training
    net.eval()
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.add_graph(net, example.to(next(net.parameters()).device))
        return True
    except Exception:  # noqa: BLE001 - tracing limits are the net's, not an error of the run
        return False
    finally:
        net.train(was_training)


def flat_hparams(config_yaml: str) -> dict[str, Any]:
    """The run's config as flat ``section.key`` scalars, for the HParams tab (same in both engines)."""
    config = yaml.safe_load(config_yaml) or {}
    selected = {key: config[key] for key in HPARAM_SECTIONS if key in config}
    trainer = config.get("trainer") or {}
    # an unset key is Lightning's (and the hand loop's) default, shown as what ran
    selected["trainer"] = {key: trainer.get(key, LIGHTNING_DEFAULTS.get(key)) for key in HPARAM_TRAINER_KEYS}
    selected["trainer"] |= {key: value for key, value in LIGHTNING_DEFAULTS.items() if trainer.get(key) is None}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            if "class_path" in value:  # name the class, then its arguments
                flat[prefix] = value["class_path"].rsplit(".", 1)[-1]
                value = value.get("init_args") or {}
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    for key, value in selected.items():
        walk(key, value)
    return flat


def log_hparams(run_dir: Path, engine: str, config_yaml: str, metrics: dict[str, float], step: int) -> None:
    """The run's one HParams record (effective config, final metrics), in its own folder, not a new run as
    ``add_hparams`` makes: written whole, then replacing an earlier leg's (why: docs/outputs.md)."""
    flat = {"run": f"{run_dir.parent.name}/{run_dir.name}", "engine": engine, **flat_hparams(config_yaml)}
    earlier = list(run_dir.glob(f"events.*{HPARAMS_SUFFIX}"))
    with tempfile.TemporaryDirectory(prefix=".hparams-", dir=run_dir) as tmp:
        writer = FileWriter(tmp, filename_suffix=HPARAMS_SUFFIX)  # what SummaryWriter writes through
        for summary in hparams(flat, metrics):  # experiment, session start, session end
            writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_summary(scalar(tag, value), step)  # as SummaryWriter.add_scalar makes it
        writer.close()
        (written,) = Path(tmp).glob("events.*")
        os.replace(written, run_dir / written.name)
    for path in earlier:
        path.unlink()  # this run's own superseded record
