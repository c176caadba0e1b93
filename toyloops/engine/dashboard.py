"""What both engines add to TensorBoard beyond scalars: hparams, model graph, decision boundary
and confusion-matrix images. Plain PyTorch + Pillow; Lightning reaches it through
:class:`toyloops.engine.callbacks.DashboardCallback`, the hand loop calls it directly.

Nothing here draws from the global random generator (forward passes run in eval mode under
``no_grad``; tracing runs inside ``fork_rng``), so switching it on or off changes no weights.
"""

from __future__ import annotations

import os
import tempfile
import time
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
from torch.utils.tensorboard.summary import hparams
from torchmetrics.classification import MulticlassConfusionMatrix

from toyloops.core.errors import ConfigError
from toyloops.core.nets import probabilities

# one colour per class (RGB), light enough to show the points drawn over it
PALETTE = np.array([(66, 133, 244), (234, 67, 53), (52, 168, 83), (251, 188, 5), (155, 89, 182),
                    (26, 188, 156)], dtype=np.float32)
HPARAM_SECTIONS = ("seed_everything", "model", "data")
HPARAM_TRAINER_KEYS = ("max_epochs", "precision", "accelerator", "devices", "strategy", "gradient_clip_val")
LIGHTNING_DEFAULTS = {"precision": "32-true", "accelerator": "auto", "devices": "auto", "strategy": "auto"}
HPARAMS_SUFFIX = ".hparams"  # the run's one HParams record, replaced by each resumed leg


HOLD_EVENTS_S = 5.0  # the longest a logged event waits before it is in the file, mid-epoch


class HeldEvents:
    """A SummaryWriter's event file writer that hands events to its writing thread in bursts.

    Every event handed over wakes the thread that writes the file, and on a busy 2-core machine
    each wake-up is a GIL hand-off that costs the training thread far more than the event
    (~30-50 µs a step for the hand loop at ``log_every_n_steps: 10``, measured in
    ``benchmarks/RESULTS.md``, more than a tiny net's forward pass). Held here, events go over
    together, and the file is flushed, at each ``flush`` (every epoch boundary, in both engines),
    at ``close``, and with the first event logged once the oldest is HOLD_EVENTS_S old (nothing
    runs on a timer), so within a long epoch a live TensorBoard is that far behind, or one logging
    interval where logs come less often. Each event keeps the wall time it was logged at (the writer
    stamps it before this sees it), so TensorBoard's time axes are unchanged; a SIGKILL loses what
    an unflushed file would lose anyway (events since the last flush).
    """

    def __init__(self, events: Any) -> None:
        self.events, self.held, self.oldest = events, [], 0.0

    def add_event(self, event: Any) -> None:
        if not self.held:
            self.oldest = time.monotonic()
        self.held.append(event)
        if time.monotonic() - self.oldest >= HOLD_EVENTS_S:
            self.flush()

    def hand_over(self) -> None:
        for event in self.held:
            self.events.add_event(event)
        self.held.clear()

    def flush(self) -> None:
        self.hand_over()
        self.events.flush()

    def close(self) -> None:
        self.hand_over()
        self.events.close()

    def __getattr__(self, name: str) -> Any:  # get_logdir and the rest: the wrapped writer's
        return getattr(self.events, name)


def hold_events(writer: SummaryWriter) -> SummaryWriter:
    """``writer`` with its events held back and written in bursts (:class:`HeldEvents`).

    Wraps ``writer.file_writer.event_writer``: attributes torch.utils.tensorboard's SummaryWriter
    and FileWriter set in their constructors but do not document (there is no public way to change
    how events reach the file). Tested with torch 2.13 and tensorboard 2.21; both engines call this,
    here only.
    """
    file_writer = writer.file_writer  # None once closed: its next event opens a new file, held from then on
    if file_writer is not None and not isinstance(file_writer.event_writer, HeldEvents):
        file_writer.event_writer = HeldEvents(file_writer.event_writer)
    return writer


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
            device = next(net.parameters()).device
            return net(x.to(device)).float().cpu()
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
    """Register the run in the HParams tab with its effective config and final metrics.

    One record a run, in the run's own folder (not a new run, as ``add_hparams`` makes): an event
    file ending in ``.hparams``, written whole beside the run's events and then replacing the one an
    earlier leg of a resumed run left. TensorBoard shows the first session record it finds for a
    run, so without the replacement a resumed run would show its first leg's settings. ``run`` and
    ``engine`` are columns of their own: the tab cuts long run names.
    """
    flat = {"run": f"{run_dir.parent.name}/{run_dir.name}", "engine": engine, **flat_hparams(config_yaml)}
    earlier = list(run_dir.glob(f"events.*{HPARAMS_SUFFIX}"))
    with tempfile.TemporaryDirectory(prefix=".hparams-", dir=run_dir) as tmp:
        writer = SummaryWriter(tmp, filename_suffix=HPARAMS_SUFFIX)
        for summary in hparams(flat, metrics):  # experiment, session start, session end
            writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        writer.close()
        (written,) = Path(tmp).glob("events.*")
        os.replace(written, run_dir / written.name)
    for path in earlier:
        path.unlink()  # this run's own superseded record
