"""``LightningDataModule``s over :mod:`toyloops.core.data`: 2-D points and token sequences.

Each exposes the facts a model needs (``num_features``, ``num_classes``, ``vocab_size``,
``seq_len``) so the CLI links them into the net and no config states a size twice. Their settings
are saved as hyperparameters and their train-split statistics as state, so
``PointsDataModule.load_from_checkpoint(path)`` returns the data module a run trained on, and its
:meth:`~PointsDataModule.preprocess` scales new raw points as the model saw them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from toyloops.core import data
from toyloops.core.errors import ConfigError
from toyloops.core.specs import check_plain, load_checkpoint

__all__ = ["LinearDataModule", "PointsDataModule", "SequenceDataModule"]

SPLITS = ("train", "val", "test")


LATER_KEYS = {"eval_batch_size", "fold", "num_folds", "val_draw"}  # newer than the first checkpoints


INDEPENDENT_VAL_SEED = 1_000_003  # val_draw='independent': the val draw's seed is the run's seed plus this


class _SplitDataModule(L.LightningDataModule):
    """Shared split/iterator plumbing; subclasses implement ``generate``."""

    def __init__(self, batch_size: int, val_fraction: float, test_fraction: float,
                 seed: int, drop_last: bool, eval_batch_size: int | None = None, fold: int | None = None,
                 num_folds: int | None = None, val_draw: Literal["split", "independent"] = "split") -> None:
        super().__init__()
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size is not None and size <= 0:
                raise ConfigError(f"{name} must be > 0, got {size}")
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.eval_batch_size = eval_batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.fold, self.num_folds = fold, num_folds  # k-fold: see data.split_indices
        if val_draw not in ("split", "independent"):
            raise ConfigError(f"data.val_draw={val_draw!r}: use 'split' (a part of the one draw) or 'independent'")
        if val_draw == "independent" and num_folds is not None:
            raise ConfigError("data.val_draw='independent' and data.num_folds: k-fold validates on folds of the "
                              "one draw; use val_draw 'split' with folds")
        self.val_draw = val_draw
        self.rank, self.world_size = 0, 1
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        needed = self.n_samples * self.bytes_per_sample * 4  # the data, its splits and their batches, roughly
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if needed > free:
            raise ConfigError(f"data.n_samples={self.n_samples:,} needs about {needed / 2**30:.1f} GiB of memory; "
                              f"{free / 2**30:.1f} GiB is free")
        self.prepare()  # small and deterministic: build now so bad arguments fail at construction
        # Every constructor argument is kept under its own name: these are the run's data settings.
        self.save_hyperparameters({name: getattr(self, name) for name in inspect.signature(type(self)).parameters})

    def generate(self, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """Draw the whole data set (with ``seed``, default the module's own)."""
        raise NotImplementedError

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> _SplitDataModule:
        """The data module a run trained on, with its settings and statistics; a checkpoint that
        holds no data module of this class is a :class:`ConfigError`, not a default one."""
        checkpoint = load_checkpoint(checkpoint_path)
        settings = checkpoint.get("datamodule_hyper_parameters")
        params = set(inspect.signature(cls).parameters)
        # keys that came later: a checkpoint written before them lacks them and means their default (None)
        if not isinstance(settings, dict) or not set(settings) <= params or params - set(settings) - LATER_KEYS:
            raise ConfigError(f"ckpt_path={str(checkpoint_path)!r} holds no {cls.__name__}: it was trained on "
                              "other data, or without a data module")
        check_plain(settings, "datamodule_hyper_parameters")
        kwargs["weights_only"] = True
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    bytes_per_sample = 16  # features and label of one sample (subclasses say more where they hold more)

    def __repr__(self) -> str:  # Lightning's own __str__ expects DataLoaders
        sizes = ", ".join(f"{name}={len(xy[0])}" for name, xy in self.splits.items())
        return f"{type(self).__name__}({sizes}, batch_size={self.batch_size}, seed={self.seed})"

    __str__ = __repr__

    def transform(self, train: Tensor, val: Tensor, test: Tensor) -> tuple[Tensor, ...]:
        return train, val, test

    def prepare(self) -> None:
        """Generate the data and split it into train/val/test (the same for every seed)."""
        x, y = self.generate()
        idx = data.split_indices(len(x), self.val_fraction, self.test_fraction, self.seed, self.fold, self.num_folds)
        parts = [(x[i], y[i]) for i in idx]
        if self.val_draw == "independent":  # seed 002: val drawn apart from train, same process, same size
            x_val, y_val = self.generate(self.seed + INDEPENDENT_VAL_SEED)
            pick = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(self.seed))[:len(idx[1])]
            parts[1] = (x_val[pick], y_val[pick])
        xs = self.transform(*(xi for xi, _ in parts))
        self.splits = {name: (xi, yi) for name, xi, (_, yi) in zip(SPLITS, xs, parts, strict=True)}
        n_train = len(idx[0])
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch_size={self.batch_size} is larger than the train split ({n_train} samples)"
            )

    def setup(self, stage: str) -> None:
        if self.trainer is not None:  # shard every epoch across DDP processes
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def iterator(self, split: str) -> data.BatchIterator:
        """A fresh batch iterator over one split (train shuffles; val/test/predict do not)."""
        x, y = self.splits[split]
        if len(x) == 0:
            raise ConfigError(f"data.{split}_fraction=0: this data has no {split} split; give it a fraction > 0")
        train = split == "train"
        batch_size = self.batch_size if train or self.eval_batch_size is None else self.eval_batch_size
        return data.BatchIterator(
            x, y, batch_size, shuffle=train, seed=self.seed,
            drop_last=self.drop_last and train, rank=self.rank, world_size=self.world_size,
        )

    def train_dataloader(self) -> data.BatchIterator:
        return self.iterator("train")

    def train_eval_dataloader(self) -> data.BatchIterator:
        """The whole train split in order, in eval batches (what ``train_metrics: eval`` scores)."""
        x, y = self.splits["train"]
        return data.BatchIterator(x, y, self.eval_batch_size or self.batch_size, shuffle=False, rank=self.rank,
                                  world_size=self.world_size)

    def val_dataloader(self) -> data.BatchIterator:
        return self.iterator("val")

    def test_dataloader(self) -> data.BatchIterator:
        return self.iterator("test")

    def predict_dataloader(self) -> data.BatchIterator:
        return self.iterator("test")

    bayes_accuracy: float | None = None  # the best accuracy any model can reach, where it is known

    @property
    def baselines(self) -> dict[str, float]:
        """What val/acc is read against: chance, the val split's majority class, Bayes where known."""
        return data.baselines(self.splits["val"][1], self.num_classes, self.bayes_accuracy)



class PointsDataModule(_SplitDataModule):
    """2-D point sets (``blobs``, ``circles``, ``moons``, ``spirals``, ``xor``), standardised with
    train-split statistics."""

    def __init__(
        self,
        dataset: str = "blobs",
        n_samples: int = 1000,
        centers: list[list[float]] | None = None,
        variance: float = 0.5,
        noise: float = 0.0,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        drop_last: bool = False,
        eval_batch_size: int | None = None,
        fold: int | None = None,
        num_folds: int | None = None,
        val_draw: Literal["split", "independent"] = "split",
    ) -> None:
        """Args:
        dataset: which generator; ``n_samples`` is split evenly across blob centers.
        centers: blob class centers (default: the seeds' (-1.5, -1.0) and (1.2, 1.3)).
        eval_batch_size: batch size of val/test/predict (None: batch_size), as seed 000's 128.
        val_draw: ``split`` takes val from the one draw; ``independent`` draws it apart (another seed, same
            process and size), as seed 002 does.
        variance: isotropic blob variance.
        noise: circles: the fraction of labels flipped; moons, spirals, xor: the std of Gaussian
            jitter added to the points.
        """
        if dataset not in data.POINT_SETS:
            raise ConfigError(f"data.dataset={dataset!r}: expected one of {', '.join(data.POINT_SETS)} "
                              "(toyloops.core.data.point_set registers more)")
        self.dataset, self.n_samples, self.variance, self.noise = dataset, n_samples, variance, noise
        self.centers = [[-1.5, -1.0], [1.2, 1.3]] if centers is None else centers
        if dataset == "blobs" and len(self.centers) < 2:
            raise ConfigError(f"data.centers must list at least 2 class centers, got {len(self.centers)}")
        super().__init__(batch_size, val_fraction, test_fraction, seed, drop_last, eval_batch_size, fold, num_folds,
                         val_draw)

    def generate(self, seed: int | None = None) -> tuple[Tensor, Tensor]:
        make = data.POINT_SETS[self.dataset][0]
        return make(**self.settings_for(make), seed=self.seed if seed is None else seed)

    def settings_for(self, function: Callable) -> dict[str, Any]:
        """This data module's settings that ``function`` (a point set's make or bayes) takes by name."""
        return {name: getattr(self, name) for name in inspect.signature(function).parameters if hasattr(self, name)
                and name != "seed"}

    def transform(self, train: Tensor, val: Tensor, test: Tensor) -> tuple[Tensor, ...]:
        self.mean, self.std = data.feature_statistics(train)
        return tuple(self.preprocess(t) for t in (train, val, test))

    def preprocess(self, x: Tensor) -> Tensor:
        """Raw points (N, F) scaled with the train split's statistics, as every split was."""
        return (x - self.mean) / self.std

    def state_dict(self) -> dict[str, Any]:
        """The train-split statistics, saved in checkpoints (Lightning and the hand loop alike)."""
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the checkpoint's statistics; they must be those this data regenerates."""
        if not (torch.allclose(state_dict["mean"], self.mean) and torch.allclose(state_dict["std"], self.std)):
            raise ConfigError("the checkpoint's train-split statistics differ from this data's: "
                              "the data settings or toyloops' generators changed since it was written")

    @property
    def num_classes(self) -> int:
        return len(self.centers) if self.dataset == "blobs" else 2

    @property
    def bayes_accuracy(self) -> float | None:
        """What the point set's registration says (:func:`toyloops.core.data.point_set`); None: unknown."""
        bayes = data.POINT_SETS[self.dataset][1]
        return None if bayes is None else bayes(**self.settings_for(bayes))

    @property
    def num_features(self) -> int:
        return self.splits["train"][0].shape[1]


class SequenceDataModule(_SplitDataModule):
    """Token-sequence tasks (``parity``, ``majority``, ``contains``) with binary labels."""

    def __init__(
        self,
        task: Literal["parity", "majority", "contains"] = "majority",
        n_samples: int = 4000,
        seq_len: int = 16,
        vocab_size: int = 50,
        target_token: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        drop_last: bool = False,
        eval_batch_size: int | None = None,
        fold: int | None = None,
        num_folds: int | None = None,
        val_draw: Literal["split", "independent"] = "split",
    ) -> None:
        """Args: see :func:`toyloops.core.data.make_sequences`; eval_batch_size: of val/test/predict
        (None: batch_size)."""
        self.task, self.n_samples, self.seq_len = task, n_samples, seq_len
        self.vocab_size, self.target_token = vocab_size, target_token
        super().__init__(batch_size, val_fraction, test_fraction, seed, drop_last, eval_batch_size, fold, num_folds,
                         val_draw)

    @property
    def bytes_per_sample(self) -> int:
        return 8 * (self.seq_len + 1)  # int64 tokens and label

    def generate(self, seed: int | None = None) -> tuple[Tensor, Tensor]:
        return data.make_sequences(self.task, self.n_samples, self.seq_len, self.vocab_size,
                                   self.seed if seed is None else seed, self.target_token)

    @property
    def num_classes(self) -> int:
        return 2  # every sequence task is a yes/no question

    bayes_accuracy = 1.0  # each label is a function of its tokens


class LinearDataModule(_SplitDataModule):
    """Regression on a line with a known answer: y = x @ weights + bias + noise (``model.objective:
    regression``). Inputs are left unscaled, so the learned weights compare with the true ones."""

    def __init__(
        self,
        n_samples: int = 1000,
        weights: list[float] | None = None,
        bias: float = 0.5,
        noise: float = 0.1,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        drop_last: bool = False,
        eval_batch_size: int | None = None,
        fold: int | None = None,
        num_folds: int | None = None,
        val_draw: Literal["split", "independent"] = "split",
    ) -> None:
        """Args: see :func:`toyloops.core.data.make_linear` (weights default to (2.0, -3.0))."""
        self.n_samples, self.bias, self.noise = n_samples, bias, noise
        self.weights = [2.0, -3.0] if weights is None else weights
        super().__init__(batch_size, val_fraction, test_fraction, seed, drop_last, eval_batch_size, fold, num_folds,
                         val_draw)

    def generate(self, seed: int | None = None) -> tuple[Tensor, Tensor]:
        return data.make_linear(self.n_samples, self.weights, self.bias, self.noise,
                                self.seed if seed is None else seed)

    @property
    def num_features(self) -> int:
        return len(self.weights)

    @property
    def baselines(self) -> dict[str, float]:
        """Val MSEs to read val/loss against: predicting the train mean, and the noise alone (Bayes)."""
        y_train, y_val = self.splits["train"][1], self.splits["val"][1]
        return {"mean_mse": (y_val - y_train.mean()).pow(2).mean().item(), "bayes_mse": self.noise**2}

    def compare_to_truth(self, net: torch.nn.Module) -> str | None:
        """The learned line next to the one that made the data (for a net with a ``linear`` layer)."""
        linear = getattr(net, "linear", None)
        if not isinstance(linear, torch.nn.Linear):
            return None
        w = ", ".join(f"{v:.4f}" for v in linear.weight.detach().flatten().tolist())
        true_w = ", ".join(f"{v:.4f}" for v in self.weights)
        return f"learned w [{w}] b {linear.bias.item():.4f} | true w [{true_w}] b {self.bias:.4f}"
