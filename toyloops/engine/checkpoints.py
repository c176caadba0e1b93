"""Checkpoint files, one format for both engines: Lightning's keys, so either engine (and
``Classifier.load_from_checkpoint``) reads the other's, plus a ``toyloops`` section with what a resume needs beyond
them: the engine that wrote it, the RNG state, the hand loop's loop and data position. Written atomically, read as
data only (``weights_only=True``)."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import lightning
import torch

from toyloops.engine.defaults import keep_built_implementation
from toyloops.engine.seeding import rng_state
from toyloops.rules import specs  # its names stay its own (toyloops.checkpoints' shim looks here first)
from toyloops.rules.errors import ConfigError

SECTION = "toyloops"


def toyloops_section(engine: str, **extra: Any) -> dict[str, Any]:
    """What a resume needs beyond Lightning's keys: the engine and every generator's state."""
    return {"engine": engine, "rng": rng_state(), **extra}


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Serialise, then :func:`write_atomic`: a crash mid-save never leaves a broken checkpoint."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # serialised first, so a full disk is a plain OSError (ENOSPC)
    write_atomic(path, buffer.getbuffer())


def write_atomic(path: str | Path, data: bytes | memoryview) -> None:
    """Write a temporary file in the same folder, fsync, rename: readers see the old file or the new one,
    never half, and writers racing for one path never fail (the last rename wins). A failing write
    (read-only, full disk) raises an OSError naming ``path``, leaving no temporary."""
    _write_then(Path(path), data, os.replace)


def write_new(path: str | Path, data: bytes | memoryview) -> None:
    """As :func:`write_atomic`, but only if ``path`` does not exist: the file appears whole, and an
    existing one (another process's, written a moment ago) is never replaced (FileExistsError)."""
    _write_then(Path(path), data, os.link)  # a hard link fails if the name exists; the temporary goes after


def _write_then(path: Path, data: bytes | memoryview, publish: Any) -> None:
    # Each writer's own temporary (created exclusively, so no other writer renames it away), of a fixed
    # length: any name that fits the folder fits it too. Not mkstemp: its files are private (0600).
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        publish(tmp, path)
    except OSError as err:
        if isinstance(err, FileExistsError):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)  # after a link, or a failure; a rename left nothing


def read_checked(path: str | Path, model: torch.nn.Module, resume_in: str | None) -> dict[str, Any]:
    """A checkpoint to evaluate, or to resume in engine ``resume_in``: read as data, its weights fitting ``model``."""
    checkpoint = specs.read_checkpoint(path)
    if resume_in is not None:
        check_resume(checkpoint, resume_in, path)
    check_weights(checkpoint, model, path)
    return checkpoint


def check_weights(checkpoint: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """The checkpoint's weights fit ``model`` and are finite (else an evaluation scores nonsense)."""
    state, expected = checkpoint["state_dict"], model.state_dict()
    if state.keys() != expected.keys():
        names = sorted(state.keys() ^ expected.keys())
        raise ConfigError(f"ckpt_path={str(path)!r} does not fit the configured model: {len(names)} weights "
                          f"differ by name, e.g. {names[0]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ConfigError(f"ckpt_path={str(path)!r} does not fit the configured model: {name} is "
                              f"{tuple(tensor.shape)} in the checkpoint, {tuple(expected[name].shape)} here")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"ckpt_path={str(path)!r} holds NaN or infinite weights ({name})")


def check_resume(checkpoint: dict[str, Any], engine: str, path: str | Path) -> None:
    """A run resumes only in the engine that wrote it (either engine can evaluate any checkpoint)."""
    section = checkpoint.get(SECTION)
    complete = isinstance(section, dict) and {"engine", "rng"} <= section.keys() and (
        section["engine"] != "loop" or {"loop", "data"} <= section.keys())
    wrote = section["engine"] if complete else None
    if wrote != engine:
        how = {"lightning": "toyloops fit (or python train.py fit)", "loop": "toyloops loop fit"}.get(wrote)
        hint = f"resume it with `{how} ... --ckpt_path {path}`" if how else "it holds no toyloops resume state"
        raise ConfigError(f"ckpt_path={str(path)!r} was written by {wrote or 'another program'}, not {engine}: {hint} "
                          "(validate, test and predict read it in either engine)")


def upgraded(path: Path, folder: Path) -> Path:
    """``path``, or for a 0.1 checkpoint (its hyperparameters hold ``objective``) a copy in ``folder`` with
    :func:`~toyloops.rules.specs.upgrade_hparams`' (LightningCLI parses a checkpoint's into the config)."""
    checkpoint = specs.load_checkpoint(path)
    if "objective" not in checkpoint.get("hyper_parameters", {}):
        return path
    checkpoint["hyper_parameters"] = specs.upgrade_hparams(checkpoint["hyper_parameters"])
    save_checkpoint(checkpoint, new := folder / f"upgraded_{path.name}")
    return new


def dump_lightning_keys(trainer: Any) -> dict[str, Any]:
    """What Lightning's checkpoint connector writes for a trainer's module, data module, optimizer,
    scheduler, fp16 scaler and callbacks, under its keys (``epoch``: the one that ended)."""
    model, datamodule, scheduler = trainer.lightning_module, trainer.datamodule, trainer.scheduler
    checkpoint = {"epoch": trainer.current_epoch - 1, "global_step": trainer.global_step,
                  "pytorch-lightning_version": lightning.__version__, "state_dict": model.state_dict(),
                  "optimizer_states": [trainer.optimizer.state_dict()],
                  "lr_schedulers": [scheduler["scheduler"].state_dict()] if scheduler else [],
                  "callbacks": {c.state_key: c.state_dict() for c in trainer.callbacks},
                  "hparams_name": "kwargs", "hyper_parameters": dict(model.hparams)}
    if datamodule is not None:
        checkpoint.update({"datamodule_hparams_name": "kwargs", "datamodule_hyper_parameters": dict(
            datamodule.hparams), type(datamodule).__qualname__: datamodule.state_dict()})
    if trainer.scaler.is_enabled():
        checkpoint["MixedPrecision"] = trainer.scaler.state_dict()
    return checkpoint


def restore_lightning_keys(trainer: Any, checkpoint: dict[str, Any]) -> None:
    """:func:`dump_lightning_keys`' optimizer, scheduler, scaler and callback states back into a trainer."""
    trainer.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    keep_built_implementation(trainer.optimizer)  # ResumeState.on_train_start in Lightning
    if trainer.scheduler:
        trainer.scheduler["scheduler"].load_state_dict(checkpoint["lr_schedulers"][0])
    if "MixedPrecision" in checkpoint:
        trainer.scaler.load_state_dict(checkpoint["MixedPrecision"])
    for callback in trainer.callbacks:
        if callback.state_key in checkpoint.get("callbacks", {}):
            callback.load_state_dict(checkpoint["callbacks"][callback.state_key])
