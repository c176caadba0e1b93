"""Checkpoint files: written atomically, read as data only (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from toyloops.errors import ConfigError


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file, then rename: a crash mid-save never leaves a broken checkpoint.

    A failing write (read-only folder, full disk) raises; it is never swallowed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
    tmp.replace(path)  # atomic on POSIX: readers see the old file or the new one, never half


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read any toyloops checkpoint (either engine) as plain data; never runs pickled code.

    A missing, truncated or hostile file raises :class:`ConfigError` naming the file. There is
    no retry with ``weights_only=False``: a checkpoint that needs it is refused.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"ckpt_path={str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"ckpt_path={str(path)!r} is a folder, not a checkpoint file") from None
    except Exception as err:  # truncated zip, garbage bytes, or a pickle that wants to run code
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if str(err).startswith("Weights only load failed"):
            detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), "not plain data")
            reason = f"refused, it needs code to load: {detail}"
        else:
            reason = f"{type(err).__name__}: {lines[0] if lines else 'empty or truncated file'}"
        raise ConfigError(f"ckpt_path={str(path)!r} is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"ckpt_path={str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint
