"""toyloops: toy data, three classifiers, and the same training loop three ways.

The names below load on first use (PEP 562), so ``import toyloops`` (and the ``toyloops`` command's
``--help``, ``configs`` and ``init``) does not pay for torch and Lightning until a name needs them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("toyloops")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_HOMES = {
    "toyloops.core.data": ("BatchIterator", "make_blobs", "make_circles", "make_linear", "make_moons", "make_sequences",
                      "make_spirals", "make_xor", "split_indices", "standardize"),
    "toyloops.core.datamodules": ("LinearDataModule", "PointsDataModule", "SequenceDataModule"),
    "toyloops.core.nets": ("MLP", "LinearRegression", "LogisticRegression", "TransformerClassifier",
                        "classification_loss", "probabilities"),
    "toyloops.core.classifier": ("Classifier",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [  # noqa: RUF022 - as _HOMES lists them
    "__version__",
    "BatchIterator", "make_blobs", "make_circles", "make_linear", "make_moons", "make_sequences", "make_spirals",
    "make_xor", "split_indices", "standardize",
    "LinearDataModule", "PointsDataModule", "SequenceDataModule",
    "MLP", "LinearRegression", "LogisticRegression", "TransformerClassifier", "classification_loss", "probabilities",
    "Classifier",
]

if TYPE_CHECKING:  # what type checkers and IDEs see (py.typed): the same names, imported eagerly
    from toyloops.core.classifier import Classifier
    from toyloops.core.data import (
        BatchIterator,
        make_blobs,
        make_circles,
        make_linear,
        make_moons,
        make_sequences,
        make_spirals,
        make_xor,
        split_indices,
        standardize,
    )
    from toyloops.core.datamodules import LinearDataModule, PointsDataModule, SequenceDataModule
    from toyloops.core.nets import (
        MLP,
        LinearRegression,
        LogisticRegression,
        TransformerClassifier,
        classification_loss,
        probabilities,
    )


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'toyloops' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})
