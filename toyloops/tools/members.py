"""An ensemble's members, each built as its solo run is: ``toyloops loop fit``'s parse, instantiation, run
folder and attached ``HandTrainer`` (:func:`build_members`); members whose arguments only change values
of the first member's keys share its parse."""

from __future__ import annotations

import copy
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from toyloops.engine import loop_cli, runs
from toyloops.engine.callbacks import RunSummary
from toyloops.engine.defaults import PARSE_LINKS
from toyloops.engine.loggers import TensorBoardLogger
from toyloops.engine.loop import HandTrainer
from toyloops.engine.validation import check_values
from toyloops.rules.errors import ConfigError


class NotStackable(ConfigError):
    """These runs cannot train as one ensemble (the message says why); run them one at a time."""


@dataclass(eq=False)
class Member:
    """One run of the ensemble: its config, its module and data as its solo run builds them, and the
    ``HandTrainer`` that keeps its books."""

    label: str
    cfg: Any
    model: Any
    data: Any
    trainer: HandTrainer
    generator: torch.Generator  # the global RNG's state after its solo set-up: its dropout masks
    folder: Path
    failed: str | None = None
    pending: dict[Path, dict[str, Any]] = field(default_factory=dict)  # checkpoints written when it ends

    @property
    def best(self) -> float | None:
        score = self.trainer.checkpoint_callback.best_model_score
        return None if score is None else score.item()

    @property
    def stopped(self) -> bool:
        return self.trainer.should_stop or self.failed is not None


def build_members(runs_args: dict[str, list[str]], stack: ExitStack) -> list[Member]:
    """One member per ``{label: loop-fit arguments}``, each built as ``toyloops loop fit`` builds it: the
    first parsed and checked in full; the others, where their arguments change only values of the first's
    keys (seed, fold, learning rate, ...) and keep their types, share its parse (a copy with those values)."""
    parser = loop_cli.build_parser()
    (first_label, first_args), *others = runs_args.items()
    cfg, objects = loop_cli.build(runs.with_shipped_configs(first_args), parser)
    text = parser.dump(cfg)
    members = [attach(first_label, cfg, objects, text, stack)]
    for label, args in others:
        changed = changed_values(cfg, first_args, args)
        if changed is None:
            own = loop_cli.build(runs.with_shipped_configs(args), parser)[0]
            own_text = parser.dump(own)
        else:
            own, own_text = copy.deepcopy(cfg), yaml.safe_load(text)
            for key, value in changed.items():
                own[key] = value
                *parents, last = key.split(".")
                node = reduce(lambda node, part: node[part], parents, own_text)
                if last in node:  # a parse-time link's target is not dumped
                    node[last] = value
            check_values(own)
            own_text = yaml.safe_dump(own_text, sort_keys=False)
        members.append(attach(label, own, loop_cli.instantiate(own, parser), own_text, stack))
    return members


def changed_values(cfg: Any, first: list[str], args: list[str]) -> dict[str, Any] | None:
    """``{config key: value}`` where ``args`` differ from ``first`` only in the values of the same
    ``--key value`` pairs (outside ``trainer:``, its folder aside), each of the type ``cfg`` holds; else None."""
    if len(args) != len(first) or [a for a in args if a.startswith("--")] != [a for a in first if a.startswith("--")]:
        return None
    changed = {}
    for i, (ours, theirs) in enumerate(zip(args, first, strict=True)):
        if ours == theirs:
            continue
        flag = args[i - 1] if i else ""
        key = config_key(cfg, flag[2:]) if flag.startswith("--") and flag != "--config" else None
        if key is None or (key.startswith("trainer.") and key != "trainer.default_root_dir"):
            return None
        value, held = yaml.safe_load(ours), cfg[key]
        value = float(value) if isinstance(held, float) and type(value) is int else value
        if type(value) is not type(held):
            return None
        changed[key] = value
        changed.update({target: value for source, target in PARSE_LINKS if source == key})  # as parsing links them
    return changed


def config_key(cfg: Any, key: str) -> str | None:
    """The parsed config's key for a command-line key (which may leave out ``init_args``), or None."""
    path, node = [], cfg
    for part in key.split("."):
        if isinstance(node, Namespace) and part in node:
            path.append(part)
        elif isinstance(node, Namespace) and isinstance(node.get("init_args"), Namespace) and part in node.init_args:
            path += ["init_args", part]
        else:
            return None
        node = cfg[".".join(path)]
    return ".".join(path)


def attach(label: str, cfg: Any, objects: Any, config_text: str, stack: ExitStack) -> Member:
    """A built member's run folder claimed and its ``config.yaml`` written, its trainer attached to
    its module and data: what ``toyloops loop fit`` does before its first step."""
    model, data, options = objects.model, objects.data, loop_cli.trainer_options(cfg)
    root = loop_cli.run_root(copy.deepcopy(cfg))  # as a solo run's (the copy: other members copy this cfg)
    folder = stack.enter_context(loop_cli.held(runs.open_run(root, loop_cli.RUN_PREFIX), config_text))
    logger = TensorBoardLogger(save_dir=str(folder.parent), name="", version=folder.name, default_hp_metric=False)
    checkpoints = str(folder / "checkpoints")
    trainer = HandTrainer(**{**options, "logger": logger, "callbacks": [
        *options["callbacks"], ModelCheckpoint(checkpoints, "best", cfg.checkpoint.monitor, mode=cfg.checkpoint.mode),
        LearningRateMonitor()]})  # LastCheckpoint joins at the member's end: its one last.ckpt
    stack.enter_context(trainer.attached(model, data, TrainerFn.FITTING))
    trainer.train_batches, trainer.val_batches = data.train_dataloader(), data.val_dataloader()
    trainer.configure_optimizers(model)
    RunSummary().on_train_start(trainer, model)  # the data's baselines at step 0, as in any run
    generator = torch.Generator()
    generator.set_state(torch.get_rng_state())  # where the solo run's dropout draws would start
    return Member(label, cfg, model, data, trainer, generator, folder)
