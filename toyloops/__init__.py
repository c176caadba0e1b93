"""toyloops: toy data, three classifiers, and the same training loop three ways."""

from importlib.metadata import PackageNotFoundError, version

from toyloops.data import (
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
from toyloops.datamodules import LinearDataModule, PointsDataModule, SequenceDataModule
from toyloops.models import (
    MLP,
    LinearRegression,
    LogisticRegression,
    TransformerClassifier,
    classification_loss,
    probabilities,
)
from toyloops.module import Classifier

try:
    __version__ = version("toyloops")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "MLP",
    "BatchIterator",
    "Classifier",
    "LinearDataModule",
    "LinearRegression",
    "LogisticRegression",
    "PointsDataModule",
    "SequenceDataModule",
    "TransformerClassifier",
    "classification_loss",
    "make_blobs",
    "make_circles",
    "make_linear",
    "make_moons",
    "make_sequences",
    "make_spirals",
    "make_xor",
    "probabilities",
    "split_indices",
    "standardize",
]
