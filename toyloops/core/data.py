"""Toy datasets as pure functions of a seed, and the point-set registry. Nothing here knows about
Lightning; :mod:`toyloops.core.datamodules` splits and serves them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from toyloops.rules.errors import ConfigError, check_positive

__all__ = ["make_blobs", "make_circles", "make_linear", "make_moons", "make_sequences", "make_spirals", "make_xor",
           "standardize"]

SEQUENCE_TASKS = ("parity", "majority", "contains")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# data.dataset -> (make(n_samples, noise, seed, ...), bayes(...) or None): the 2-D point sets.
POINT_SETS: dict[str, tuple[Callable[..., tuple[Tensor, Tensor]], Callable[..., float | None] | None]] = {}


def point_set(name: str, bayes: Callable[..., float | None] | None = None) -> Callable:
    """Register ``make`` as ``data.dataset: name`` of :class:`~toyloops.core.datamodules.PointsDataModule`.

    ``make`` takes ``n_samples``, ``noise`` and ``seed`` (and any other setting of the data module
    by name) and returns points (N, 2) float32 and labels (N,) int64; ``bayes`` takes the same
    settings and returns the best accuracy any model can reach, where it is known (None claims nothing).
    """
    def register(make: Callable[..., tuple[Tensor, Tensor]]) -> Callable[..., tuple[Tensor, Tensor]]:
        POINT_SETS[name] = (make, bayes)
        return make
    return register


def make_blobs(n_per_class: int = 100, centers: Sequence[Sequence[float]] = ((-1.5, -1.0), (1.2, 1.3)),
               variance: float = 0.5, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Isotropic Gaussian blobs, one per center: features (N, D) float32, labels (N,) int64."""
    check_positive("n_per_class", n_per_class)
    check_positive("variance", variance)
    if len(centers) < 2:
        raise ConfigError(f"centers must list at least 2 class centers, got {len(centers)}")
    means = torch.tensor(centers, dtype=torch.float32)  # (C, D)
    g = _generator(seed)
    noise = torch.randn(len(centers), n_per_class, means.shape[1], generator=g)
    x = (means[:, None, :] + math.sqrt(variance) * noise).reshape(-1, means.shape[1])
    y = torch.arange(len(centers)).repeat_interleave(n_per_class)
    return x, y


@point_set("blobs", bayes=lambda centers, variance, **_: bayes_accuracy_blobs(centers, variance))
def blobs(n_samples: int, noise: float, seed: int, centers: Sequence[Sequence[float]], variance: float):  # noqa: ANN201
    """``make_blobs`` with ``n_samples`` split evenly across the centers (``noise`` is unused)."""
    return make_blobs(n_samples // len(centers), centers, variance, seed)


@point_set("circles", bayes=lambda noise, **_: 1.0 - noise)  # the flipped labels are all any model misses
def make_circles(n_samples: int = 1000, noise: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Points ~ N(0, I) in 2-D; label 1 outside the unit circle (radius^2 > 1).

    ``noise`` is the fraction of labels flipped at random (label noise, 0 <= noise < 0.5).
    """
    check_positive("n_samples", n_samples)
    if not 0.0 <= noise < 0.5:
        raise ConfigError(f"noise must be in [0, 0.5), got {noise}")
    g = _generator(seed)
    x = torch.randn(n_samples, 2, generator=g)
    y = (x.pow(2).sum(dim=1) > 1.0).long()
    flip = torch.rand(n_samples, generator=g) < noise
    return x, torch.where(flip, 1 - y, y)


@point_set("moons", bayes=lambda noise, **_: 1.0 if noise == 0 else None)  # the classes overlap only when jittered
def make_moons(n_samples: int = 1000, noise: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles (class 0 on top, class 1 below, shifted), jittered by N(0, noise^2).

    Class 0 gets ``n_samples - n_samples // 2`` points, class 1 the rest; each arc's angle is uniform.
    """
    y, g = _two_classes(n_samples, noise, seed)
    angle = math.pi * torch.rand(n_samples, generator=g)
    top = torch.stack([angle.cos(), angle.sin()], dim=1)  # (N, 2) the upper arc
    bottom = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)  # the lower arc, shifted right
    x = torch.where(y[:, None] == 0, top, bottom)
    return x + noise * torch.randn(n_samples, 2, generator=g), y


@point_set("spirals", bayes=lambda noise, **_: 1.0 if noise == 0 else None)  # the classes overlap only when jittered
def make_spirals(n_samples: int = 1000, noise: float = 0.0, turns: float = 1.0,
                 seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two interleaved spiral arms, the second the first turned by pi, jittered by N(0, noise^2).

    A point at fraction ``t ~ U(0, 1)`` along its arm sits at radius ``t`` and angle
    ``2 pi turns t`` (+ pi for class 1). Class sizes as in :func:`make_moons`.
    """
    check_positive("turns", turns)
    y, g = _two_classes(n_samples, noise, seed)
    t = torch.rand(n_samples, generator=g)
    angle = 2 * math.pi * turns * t + math.pi * y
    x = t[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return x + noise * torch.randn(n_samples, 2, generator=g), y


@point_set("xor", bayes=lambda noise, **_: 1.0 if noise == 0 else None)  # the classes overlap only when jittered
def make_xor(n_samples: int = 1000, noise: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """XOR quadrants: points uniform in [-1, 1]^2, label 1 where the two coordinates differ in
    sign; then jittered by N(0, noise^2). Class sizes as in :func:`make_moons`.
    """
    y, g = _two_classes(n_samples, noise, seed)
    magnitude = torch.rand(n_samples, 2, generator=g)
    sign0 = torch.randint(0, 2, (n_samples,), generator=g) * 2 - 1
    sign1 = sign0 * (1 - 2 * y)  # same sign for class 0, opposite for class 1
    x = magnitude * torch.stack([sign0, sign1], dim=1)
    return x + noise * torch.randn(n_samples, 2, generator=g), y


def make_linear(n_samples: int = 1000, weights: Sequence[float] = (2.0, -3.0), bias: float = 0.5,
                noise: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A regression set with a known answer: x ~ N(0, I) (N, F), y = x @ weights + bias + N(0, noise^2)."""
    check_positive("n_samples", n_samples)
    _check_jitter(noise)
    if not weights:
        raise ConfigError("weights must list at least one weight (one per feature)")
    g = _generator(seed)
    x = torch.randn(n_samples, len(weights), generator=g)
    y = x @ torch.tensor(weights, dtype=torch.float32) + bias
    return x, y + noise * torch.randn(n_samples, generator=g)


def bayes_accuracy_blobs(centers: Sequence[Sequence[float]], variance: float) -> float | None:
    """Bayes-optimal accuracy of two equal-size isotropic Gaussian blobs: Phi(|mu1 - mu2| / (2 sigma));
    None for more than two (no closed form)."""
    if len(centers) != 2:
        return None
    distance = math.dist(centers[0], centers[1])
    return 0.5 * (1 + math.erf(distance / (2 * math.sqrt(variance)) / math.sqrt(2)))


def make_sequences(task: str = "parity", n_samples: int = 2000, seq_len: int = 16, vocab_size: int = 50,
                   seed: int = 0, target_token: int = 1) -> tuple[Tensor, Tensor]:
    """Token sequences (N, seq_len) over [1, vocab_size) and binary labels (N,).

    Tasks: ``parity`` (sum of tokens is odd), ``majority`` (more than half of the tokens are
    below vocab_size / 2), ``contains`` (``target_token`` occurs). Token 0 is never drawn.
    """
    if task not in SEQUENCE_TASKS:
        raise ConfigError(f"task must be one of {', '.join(SEQUENCE_TASKS)}, got {task!r}")
    check_positive("n_samples", n_samples)
    check_positive("seq_len", seq_len)
    if vocab_size < 3:
        raise ConfigError(f"vocab_size must be >= 3, got {vocab_size}")
    if not 1 <= target_token < vocab_size:
        raise ConfigError(f"target_token must be in [1, vocab_size={vocab_size}), got {target_token}")
    tokens = torch.randint(1, vocab_size, (n_samples, seq_len), generator=_generator(seed))
    if task == "parity":
        y = tokens.sum(dim=1) % 2
    elif task == "majority":
        y = ((tokens < vocab_size / 2).sum(dim=1) > seq_len / 2).long()
    else:
        y = (tokens == target_token).any(dim=1).long()
    return tokens, y

def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Scale every tensor with the mean/std of ``train`` alone (fitting on all data would leak)."""
    mean, std = feature_statistics(train)
    return tuple((t - mean) / std for t in (train, *others))


def feature_statistics(train: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std (+1e-8) of the train split: what :func:`standardize` scales by."""
    return train.mean(dim=0), train.std(dim=0) + 1e-8


def _two_classes(n_samples: int, noise: float, seed: int) -> tuple[Tensor, torch.Generator]:
    """The labels of a two-class point set (class 0 the larger half, first) and its seeded generator."""
    check_positive("n_samples", n_samples)
    _check_jitter(noise)
    n1 = n_samples // 2
    y = torch.cat([torch.zeros(n_samples - n1, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
    return y, _generator(seed)


def _check_jitter(noise: float) -> None:
    if not 0.0 <= noise < math.inf:
        raise ConfigError(f"noise must be a finite number >= 0 (the std of the jitter), got {noise}")

