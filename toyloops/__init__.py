"""toyloops: toy data, nets, LightningModules, and the same training loop three ways.

The public names are each module's ``__all__``, loaded on first use (PEP 562), so ``import toyloops`` does not
import torch. 0.1's flat modules (``toyloops.loop``, ...) import with a DeprecationWarning until 0.3 (:data:`MOVED`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
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


# The flat layout's modules (0.1, commit ad96440) and where their names live now (the first home
# first); a module with one home warns when imported, the others when a name is used. Until 0.3.
MOVED = {"callbacks": "engine.callbacks", "checkpoints": "engine.checkpoints rules.specs", "cli": "engine.cli",
         "compare": "tools.compare", "config": "engine.defaults engine.validation rules.specs core.module",
         "dashboard": "engine.dashboard", "data": "core.data rules.batches", "datamodules": "core.datamodules",
         "entry": "engine.entry", "errors": "rules.errors", "export": "tools.export", "init": "tools.init",
         "loggers": "engine.loggers", "loop": "engine.loop_cli engine.loop", "models": "core.nets core.classifier",
         "module": "core.classifier", "profile": "tools.profile", "runs": "engine.runs", "scratch": "tools.scratch",
         "seeding": "engine.seeding", "seeds": "tools.seeds", "stats": "tools.stats", "sweep": "tools.sweep"}
RENAMED = {"config.default_optimizer": "torch.optim.AdamW"}  # removed names whose behaviour has another name


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``toyloops.<old>`` (a key of :data:`MOVED`) as a module that hands out the objects of its
    new homes, warning once with the new path (a finder on ``sys.meta_path``: importlib's own hook)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in MOVED:
            return None
        home = importlib.util.find_spec(f"{__name__}.{MOVED[old].split()[0]}")  # its file: python -m's argv[0]
        return importlib.util.spec_from_loader(fullname, self, origin=home.origin)

    def exec_module(self, module: Any) -> None:
        old = module.__name__.partition(".")[2]
        homes = [f"{__name__}.{home}" for home in MOVED[old].split()]
        if len(homes) == 1:
            warnings.warn(f"{module.__name__} is deprecated: import {homes[0]}", DeprecationWarning, stacklevel=2)

        def moved(name: str) -> Any:  # the module's __getattr__ (PEP 562): a name's new home, once
            home = next((h for h in homes if hasattr(importlib.import_module(h), name)), None)
            new = f"{home}.{name}" if home else RENAMED.get(f"{old}.{name}")
            if new is None or name.startswith("__"):
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            if len(homes) > 1 or home is None:  # else the module's own warning named the home
                warnings.warn(f"{module.__name__}.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=2)
            owner, _, attr = new.rpartition(".")
            module.__dict__[name] = getattr(importlib.import_module(owner), attr)  # the next use does not warn
            return module.__dict__[name]

        module.__dict__.update(__getattr__=moved)  # a loader fills its new module's namespace (PEP 451)

    def get_code(self, fullname: str) -> Any:  # python -m toyloops.loop runs toyloops.engine.loop
        home = f"{__name__}.{MOVED[fullname.partition('.')[2]].split()[0]}"
        return importlib.util.find_spec(home).loader.get_code(home)


sys.meta_path.append(MovedModules())


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
