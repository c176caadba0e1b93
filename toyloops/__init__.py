"""toyloops: toy data, three classifiers, and the same training loop three ways."""

from toyloops.data import (
    BatchIterator,
    make_blobs,
    make_circles,
    make_sequences,
    split_indices,
    standardize,
)
from toyloops.datamodules import PointsDataModule, SequenceDataModule
from toyloops.models import (
    MLP,
    LogisticRegression,
    TransformerClassifier,
    classification_loss,
    probabilities,
)
from toyloops.module import Classifier

__all__ = [
    "MLP",
    "BatchIterator",
    "Classifier",
    "LogisticRegression",
    "PointsDataModule",
    "SequenceDataModule",
    "TransformerClassifier",
    "classification_loss",
    "make_blobs",
    "make_circles",
    "make_sequences",
    "probabilities",
    "split_indices",
    "standardize",
]
