"""Checkpoint files, one format for both engines: Lightning's keys plus a ``toyloops`` section.

Lightning's keys (``state_dict``, ``hyper_parameters``, ``optimizer_states``, ``lr_schedulers``,
``epoch``, ``global_step``, ...) let either engine evaluate the other's checkpoints and let
``Classifier.load_from_checkpoint`` read both. The ``toyloops`` section holds what a resume needs
beyond them: which engine wrote it, the RNG state and (hand loop) the loop and data position.
Files are written atomically and read as data only (``weights_only=True``).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import torch

from toyloops.core.errors import ConfigError
from toyloops.engine.config import NOT_STORED, check_plain, resolve
from toyloops.engine.seeding import rng_state

SECTION = "toyloops"
HPARAM_SPECS = ("net", "optimizer", "scheduler")  # hyperparameters that name a class
LEGACY_HPARAM_KEYS = ("hparams", "module_arguments")  # older Lightning's names for hyper_parameters


def toyloops_section(engine: str, **extra: Any) -> dict[str, Any]:
    """What a resume needs beyond Lightning's keys: the engine and every generator's state."""
    return {"engine": engine, "rng": rng_state(), **extra}


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Serialise, then :func:`write_atomic`: a crash mid-save never leaves a broken checkpoint."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # serialised first, so a full disk is a plain OSError (ENOSPC)
    write_atomic(path, buffer.getbuffer())


def write_atomic(path: str | Path, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers see the old file or
    the new one, never half, on any filesystem. A failing write (read-only, full disk) raises an
    OSError naming ``path`` and leaves no temporary file.
    """
    path = Path(path)  # one writer a path (a run's folder is locked to its run), so one temporary name
    _write_then(path, data, path.with_name(f".{path.name}.tmp"), lambda tmp, path: tmp.replace(path))


def write_new(path: str | Path, data: bytes | memoryview) -> None:
    """As :func:`write_atomic`, but only if ``path`` does not exist: the file appears whole, and an
    existing one (another process's, written a moment ago) is never replaced (FileExistsError)."""
    path = Path(path)  # writers may race for the name: each has its own temporary
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    _write_then(path, data, tmp, os.link)  # a hard link fails if the name exists; the temporary goes after


def _write_then(path: Path, data: bytes | memoryview, tmp: Path, publish: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        publish(tmp, path)
        tmp.unlink(missing_ok=True)  # after a link; a rename left nothing
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read any checkpoint as plain data; never runs pickled code.

    A missing, truncated or hostile file raises :class:`ConfigError` naming the file. There is
    no retry with ``weights_only=False``: a checkpoint that needs it is refused.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"ckpt_path={str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"ckpt_path={str(path)!r} is a folder, not a checkpoint file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        weights_only = str(err).startswith("Weights only load failed")
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), None)
        if weights_only and detail:  # a pickle that names code to run
            reason = f"refused, it needs code to load: {detail.split('. ')[0]}"
        elif weights_only:  # torch's own advice fills the first lines; the cause comes after them
            cause = next((line for line in lines if line.startswith("Unsupported") or "load key" in line),
                         "not plain data")
            reason = f"{type(err).__name__}: {cause}"
        else:
            reason = f"{type(err).__name__}: {lines[0] if lines else 'empty or truncated file'}"
        raise ConfigError(f"ckpt_path={str(path)!r} is not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"ckpt_path={str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def read_checkpoint(path: str | Path, given: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model checkpoint (either engine's, or a plain Trainer's), checked before anything is built
    from it: plain data, weights present, hyperparameters naming only allowed classes."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"ckpt_path={str(path)!r} has no state_dict: not a Lightning or toyloops checkpoint "
                          "(a bare state_dict loads with model.net.load_state_dict)")
    for key in ("hyper_parameters", *LEGACY_HPARAM_KEYS):  # Lightning merges the old keys in too
        if key in checkpoint:
            if not isinstance(checkpoint[key], dict):
                raise ConfigError(f"ckpt_path={str(path)!r}: its {key} are not a mapping")
            check_hparams(checkpoint[key], path, given, key)
    version = checkpoint.get("pytorch-lightning_version", "0")
    if not (isinstance(version, str) and re.fullmatch(r"\d+(\.\d+)*(\S*)", version)):
        raise ConfigError(f"ckpt_path={str(path)!r}: its pytorch-lightning_version {version!r} is not a version")
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


def check_hparams(hparams: dict[str, Any], path: str | Path, given: tuple[str, ...] = (),
                  key_name: str = "hyper_parameters") -> None:
    """Refuse hyperparameters that would import or call code when a model is rebuilt from them.

    A net, optimizer or scheduler may only name toyloops' nets and torch's optimizers and
    schedulers; every other value must be plain data. Checked before anything is built.
    """
    where = f"ckpt_path={str(path)!r}: {key_name}"
    for key, value in hparams.items():
        if key in given:  # the caller passes this one itself (e.g. net=): the stored spec is not used
            continue
        if key in HPARAM_SPECS and value not in (None, NOT_STORED):
            resolve(value, key, f"{where}.{key}")
        else:
            check_plain(value, f"{where}.{key}")


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
