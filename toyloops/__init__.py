"""toyloops: toy data, nets, LightningModules, and the same training loop three ways.

The public names are each module's ``__all__``, loaded on first use (PEP 562): ``import toyloops``
(and the ``toyloops`` command's ``--help``, ``configs`` and ``init``) does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("toyloops")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# The modules whose __all__ is toyloops' public API, in the order a reader meets them.
PUBLIC_MODULES = ("toyloops.core.data", "toyloops.core.datamodules", "toyloops.core.nets", "toyloops.core.classifier",
                  "toyloops.core.regressor", "toyloops.rules.batches", "toyloops.rules.specs", "toyloops.engine.loop")

if TYPE_CHECKING:  # what type checkers and IDEs see (py.typed)
    from toyloops.core.classifier import *  # noqa: F403
    from toyloops.core.data import *  # noqa: F403
    from toyloops.core.datamodules import *  # noqa: F403
    from toyloops.core.nets import *  # noqa: F403
    from toyloops.core.regressor import *  # noqa: F403
    from toyloops.engine.loop import *  # noqa: F403
    from toyloops.rules.batches import *  # noqa: F403
    from toyloops.rules.specs import *  # noqa: F403


def _public() -> dict[str, str]:
    return {name: module for module in PUBLIC_MODULES for name in importlib.import_module(module).__all__}


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return list(_public())
    home = _public().get(name) if not name.startswith("_") else None
    if home is None:
        raise AttributeError(f"module 'toyloops' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_public()})
