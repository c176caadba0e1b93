"""What ``toyloops diff`` records of a training, step by step: a Lightning ``Callback`` on public hooks
only, so the same recorder rides in ``L.Trainer`` and in the hand trainer (which calls the same hooks
in the same order), and :func:`record_run`, which trains one side of a diff with it.

A step's record holds, by stage, in the order the step computes them (:data:`STAGES`):

    batch         on_train_batch_start: the sample indices (a BatchIterator's) and each batch tensor
    forward       forward hooks: each submodule's output, by qualified name, in the order the calls end
    loss          on_before_backward: the loss backward starts from
    grad          on_after_backward: each parameter's gradient as backward left it (scaled under fp16)
    grad_to_step  on_before_optimizer_step: unscaled, not yet clipped (as Lightning defines the hook)
    lr            on_before_optimizer_step: each param group's learning rate, the one this step uses
    grad_clipped  on_train_batch_end: the gradient the optimizer stepped with (unscaled, clipped)
    param         on_train_batch_end: each parameter after the update
    optimizer     on_train_batch_end: the optimizer's state per parameter (Adam's moments, ...)
    rng           on_train_batch_end: the torch, NumPy and Python generators' states

The lr is compared before the update it scales, so a scheduler difference is named as itself, not
as its effect on the weights. Hooks of the callbacks run before the module's own in both engines: a
user's ``on_after_backward`` that edits gradients shows at the next stage.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from toyloops.engine.loop import HandTrainer
from toyloops.engine.loop_cli import build, trainer_options
from toyloops.engine.seeding import rng_state

STAGES = ("batch", "forward", "loss", "grad", "grad_to_step", "lr", "grad_clipped", "param", "optimizer", "rng")
ENGINES = ("lightning", "hand")
Step = dict[tuple[str, str], Tensor]  # (stage, tensor name) -> a detached CPU copy, in recording order


class RecordingDone(Exception):  # noqa: N818 - not an error: the recorder has what it was asked for
    """Raised from ``on_train_batch_end`` to end a training once the recorder has its steps."""


def tensors(value: Any, name: str) -> list[tuple[str, Tensor]]:
    """The tensors in a module's output, named: ``head``, ``attn[0]``, ``block[key]``."""
    if isinstance(value, Tensor):
        return [(name, value)]
    if isinstance(value, list | tuple):
        return [item for i, v in enumerate(value) for item in tensors(v, f"{name}[{i}]")]
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in tensors(v, f"{name}[{k}]")]
    return []


def copy(value: Tensor) -> Tensor:
    return value.detach().to("cpu", copy=True)


class Recorder(Callback):
    """Records every stage of the first ``max_steps`` training steps into :attr:`steps`. ``check``, when
    given, sees each finished step (its index and record) and returns True to end the training there."""

    def __init__(self, max_steps: int, check: Callable[[int, Step], bool] | None = None) -> None:
        self.max_steps, self.check = max_steps, check
        self.steps: list[Step] = []
        self.current: Step | None = None  # the step being recorded; None outside a training step
        self.calls: dict[str, int] = {}  # forward calls of each module in this step
        self.handles: list[Any] = []
        self.optimizer: Any = None

    def setup(self, trainer: Any, pl_module: L.LightningModule, stage: str) -> None:
        for name, module in pl_module.named_modules():
            if name:  # the LightningModule itself is not a layer: its training_step calls its submodules
                self.handles.append(module.register_forward_hook(self.forward_hook(name)))

    def teardown(self, trainer: Any, pl_module: L.LightningModule, stage: str) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def forward_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self.current is None:  # validation, or past max_steps
                return
            calls = self.calls[name] = self.calls.get(name, 0) + 1  # a module called twice: name, name#2
            for key, tensor in tensors(output, name if calls == 1 else f"{name}#{calls}"):
                self.current["forward", key] = copy(tensor)
        return hook

    def add(self, stage: str, named: Any) -> None:
        for name, tensor in named:
            if tensor is not None:
                self.current[stage, name] = copy(tensor)

    def on_train_batch_start(self, trainer: Any, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.current, self.calls = {}, {}
        loader = trainer.train_dataloader
        if callable(getattr(loader, "indices", None)):  # a BatchIterator: which samples this batch holds
            self.add("batch", [("indices", loader.indices(loader.epoch).split(loader.batch_size)[batch_idx])])
        self.add("batch", tensors(batch, "batch"))

    def on_before_backward(self, trainer: Any, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self.current is not None:
            self.add("loss", [("loss", loss)])

    def on_after_backward(self, trainer: Any, pl_module: L.LightningModule) -> None:
        if self.current is not None:
            self.add("grad", [(name, p.grad) for name, p in pl_module.named_parameters()])

    def on_before_optimizer_step(self, trainer: Any, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self.current is not None:
            self.optimizer = optimizer
            self.add("grad_to_step", [(name, p.grad) for name, p in pl_module.named_parameters()])
            self.add("lr", [(f"group{i}", torch.tensor(g["lr"], dtype=torch.float64))
                            for i, g in enumerate(optimizer.param_groups)])

    def on_train_batch_end(self, trainer: Any, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.current is None:
            return
        params = list(pl_module.named_parameters())
        self.add("grad_clipped", [(name, p.grad) for name, p in params])
        self.add("param", params)
        state = getattr(self.optimizer, "state", {})
        self.add("optimizer", [(f"{name}:{key}", value if isinstance(value, Tensor) else torch.tensor(value))
                               for name, p in params for key, value in sorted(state.get(p, {}).items())
                               if isinstance(value, Tensor | int | float)])
        self.add("rng", rng_tensors())
        self.steps.append(self.current)
        self.current = None
        stop = self.check is not None and self.check(len(self.steps) - 1, self.steps[-1])
        if stop or len(self.steps) >= self.max_steps:
            raise RecordingDone


def rng_tensors() -> list[tuple[str, Tensor]]:
    """Each generator's state as a tensor of integers (equal tensors: the same stream position)."""
    state = rng_state()
    name, keys, pos, *_ = state["numpy"]
    version, internal, gauss = state["python"]
    return [("torch", state["torch"]), *((f"cuda:{i}", s) for i, s in enumerate(state["cuda"])),
            ("numpy", torch.tensor(np.append(np.asarray(keys, dtype=np.int64), pos))),
            ("python", torch.tensor([*internal, version], dtype=torch.int64))]


def record_run(args: list[str], engine: str, max_steps: int,
               check: Callable[[int, Step], bool] | None = None) -> list[Step]:
    """Train ``args`` (a ``toyloops loop fit`` command line, without ``fit``) on ``engine`` for up to
    ``max_steps`` steps and return each step's record."""
    recorder = Recorder(max_steps, check)
    try:
        train(args, engine, recorder)
    finally:  # Lightning skips the callbacks' teardown when a run ends in an exception, RecordingDone included
        recorder.remove_hooks()
    return recorder.steps


def train(args: list[str], engine: str, callback: Callback) -> None:
    """``args`` trained on ``engine`` with ``callback``, writing nothing (no logger, no checkpoints), until
    the callback raises :class:`RecordingDone` or the run ends. Both engines get the objects the same
    parser builds from the same seed."""
    cfg, objects = build(args)
    options = trainer_options(cfg)
    settings = {**options, "callbacks": [*options["callbacks"], callback], "logger": False,
                "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    for name in ("lightning.pytorch", "lightning.fabric"):  # no banners between the report's lines
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = L.Trainer(**settings) if engine == "lightning" else HandTrainer(**settings)
    try:
        with redirect_stdout(io.StringIO()):  # a config's own prints (epoch lines) are not the report
            trainer.fit(objects.model, datamodule=objects.data)
    except RecordingDone:
        pass
