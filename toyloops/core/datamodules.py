"""``LightningDataModule``s over :mod:`toyloops.core.data`: 2-D points, token sequences, a line.

:class:`ToyDataModule` holds what every one of them does (seeded splits, k-fold, an independent
val draw, batch iterators, checkpointed settings); one's own subclasses it and overrides
:meth:`~ToyDataModule.generate`. Each exposes the facts a model needs (``num_features``,
``num_classes``, ``vocab_size``, ``seq_len``), which the CLI links into the net, and
``load_from_checkpoint`` returns the data module a run trained on.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities.parsing import collect_init_args
from torch import Tensor

from toyloops.core import data
from toyloops.rules.batches import BatchIterator, split_indices
from toyloops.rules.errors import ConfigError, checked
from toyloops.rules.specs import check_data_settings

__all__ = ["LinearDataModule", "PointsDataModule", "SequenceDataModule", "ToyDataModule"]

SPLITS = ("train", "val", "test")
OPTIONAL_SETTINGS = {"eval_batch_size", "fold", "num_folds", "val_draw"}  # a checkpoint without them means None
INDEPENDENT_VAL_SEED = 1_000_003  # val_draw='independent': the val draw's seed is the run's seed plus this


class ToyDataModule(L.LightningDataModule):
    """Seeded train/val/test splits of a data set drawn by :meth:`generate`, served by
    :class:`~toyloops.core.BatchIterator` (the same batches to both engines).

    Args:
        n_samples: how many samples :meth:`generate` draws.
        batch_size / eval_batch_size: of the train split / of val, test and predict (None: batch_size).
        val_fraction, test_fraction: the split sizes (test 0: no test split).
        seed: draws the data, the split and each epoch's order.
        drop_last: drop the last, smaller train batch.
        fold, num_folds: k-fold cross-validation: fold ``fold`` of ``num_folds`` is the val split.
        val_draw: ``split`` takes val from the one draw; ``independent`` draws it apart (another seed,
            same process and size).
    """

    bytes_per_sample = 16  # memory one sample takes (features and label); a subclass holding more says so
    bayes_accuracy: float | None = None  # the best accuracy any model can reach, where a subclass knows it

    def __init__(self, n_samples: int = 1000, batch_size: int = 64, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, seed: int = 0, drop_last: bool = False,
                 eval_batch_size: int | None = None, fold: int | None = None, num_folds: int | None = None,
                 val_draw: Literal["split", "independent"] = "split") -> None:
        super().__init__()
        # Every constructor argument, a subclass's own included, read from the __init__ frames: the
        # run's data settings, given as a dict so no CLI bookkeeping (``_instantiator``) is stored.
        settings = collect_init_args(inspect.currentframe(), [], classes=(L.LightningDataModule,))
        settings = {name: value for frame in settings for name, value in frame.items()}
        self.save_hyperparameters(checked(type(self), **settings))
        for name, value in self.hparams.items():
            setattr(self, name, value)
        for name, size in (("n_samples", n_samples), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size is not None and size <= 0:
                raise ConfigError(f"data.{name} must be > 0, got {size}")
        if val_draw == "independent" and num_folds is not None:
            raise ConfigError("data.val_draw='independent' and data.num_folds: k-fold validates on folds of the "
                              "one draw; use val_draw 'split' with folds")
        needed = n_samples * self.bytes_per_sample * 4  # the data, its splits and their batches, roughly
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if needed > free:
            raise ConfigError(f"data.n_samples={n_samples:,} needs about {needed / 2**30:.1f} GiB of memory; "
                              f"{free / 2**30:.1f} GiB is free")
        self.split = split_indices(n_samples, val_fraction, test_fraction, seed, fold, num_folds)
        if batch_size > len(self.split[0]):
            raise ConfigError(f"data.batch_size={batch_size} is larger than the train split "
                              f"({len(self.split[0])} samples)")
        self.rank, self.world_size = 0, 1
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def generate(self, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
        """Draw ``n_samples`` samples from ``seed``: inputs (N, ...) and targets (N,). Override this;
        read your own settings from ``self.hparams``."""
        raise NotImplementedError(f"{type(self).__name__}.generate(n_samples, seed)")

    def transform(self, train: Tensor, val: Tensor, test: Tensor) -> tuple[Tensor, ...]:
        """The splits' inputs as the model sees them (unchanged here; points are standardised)."""
        return train, val, test

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (x, y), "val": ..., "test": ...}``, drawn on first use (after every ``__init__`` ran)."""
        if self._splits is None:
            x, y = self.generate(self.n_samples, self.seed)  # a set may draw fewer: blobs, evenly per center
            self.split = split_indices(len(x), self.val_fraction, self.test_fraction, self.seed, self.fold,
                                       self.num_folds)
            parts = [(x[i], y[i]) for i in self.split]
            if self.val_draw == "independent":  # val drawn apart from train: same process, same size
                x_val, y_val = self.generate(self.n_samples, self.seed + INDEPENDENT_VAL_SEED)
                pick = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(self.seed))
                parts[1] = (x_val[pick[:len(self.split[1])]], y_val[pick[:len(self.split[1])]])
            xs = self.transform(*(xi for xi, _ in parts))
            self._splits = {name: (xi, yi) for name, xi, (_, yi) in zip(SPLITS, xs, parts, strict=True)}
        return self._splits

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> ToyDataModule:
        """The data module a run trained on, with its settings and statistics; a checkpoint that
        holds no data module of this class is a :class:`ConfigError`, not a default one."""
        names = {name for klass in cls.__mro__ if issubclass(klass, ToyDataModule) and "__init__" in vars(klass)
                 for name, p in inspect.signature(klass.__init__).parameters.items()
                 if name != "self" and p.kind is not p.VAR_KEYWORD}
        check_data_settings(checkpoint_path, cls.__name__, names, OPTIONAL_SETTINGS)
        kwargs["weights_only"] = True
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def __repr__(self) -> str:  # Lightning's own __str__ expects DataLoaders
        sizes = ", ".join(f"{name}={len(index)}" for name, index in zip(SPLITS, self.split, strict=True))
        return f"{type(self).__name__}({sizes}, batch_size={self.batch_size}, seed={self.seed})"

    __str__ = __repr__

    def setup(self, stage: str) -> None:
        if self.trainer is not None:  # shard every epoch across DDP processes
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def iterator(self, split: str, shuffle: bool | None = None) -> BatchIterator:
        """A fresh batch iterator over one split (train shuffles; val/test/predict do not)."""
        x, y = self.splits[split]
        if len(x) == 0:
            raise ConfigError(f"data.{split}_fraction=0: this data has no {split} split; give it a fraction > 0")
        train = split == "train" and shuffle is not False
        batch_size = self.batch_size if train or self.eval_batch_size is None else self.eval_batch_size
        return BatchIterator(x, y, batch_size, shuffle=train, seed=self.seed, drop_last=self.drop_last and train,
                                  rank=self.rank, world_size=self.world_size)

    def train_dataloader(self) -> BatchIterator:
        return self.iterator("train")

    def train_eval_dataloader(self) -> BatchIterator:
        """The whole train split in order, in eval batches (what ``train_metrics: eval`` scores)."""
        return self.iterator("train", shuffle=False)

    def val_dataloader(self) -> BatchIterator:
        return self.iterator("val")

    def test_dataloader(self) -> BatchIterator:
        return self.iterator("test")

    def predict_dataloader(self) -> BatchIterator:
        return self.iterator("test")

    @property
    def num_features(self) -> int:
        """Features per sample; none for integer inputs (token ids: ``vocab_size`` and ``seq_len`` say more)."""
        x = self.splits["train"][0]
        if not x.is_floating_point():
            raise AttributeError(f"{type(self).__name__} serves token ids, not features")
        return x.shape[-1]

    @property
    def num_classes(self) -> int:
        """The classes the train split's labels count (a subclass that knows better says so); none
        for real-valued targets (``hasattr(dm, "num_classes")`` is False: a regression)."""
        y = self.splits["train"][1]
        if y.is_floating_point():
            raise AttributeError(f"{type(self).__name__} has real-valued targets, not classes")
        return int(y.max()) + 1

    @property
    def baselines(self) -> dict[str, float]:
        """The accuracies val/acc is read against: ``chance`` (1/C), ``majority`` (always predict val's most
        common class) and ``bayes`` (the best any model can reach; left out where not stated)."""
        y_val = self.splits["val"][1]
        rates = {"chance": 1 / self.num_classes, "majority": y_val.bincount().max().item() / len(y_val)}
        return rates if self.bayes_accuracy is None else {**rates, "bayes": self.bayes_accuracy}


class PointsDataModule(ToyDataModule):
    """2-D point sets (``blobs``, ``circles``, ``moons``, ``spirals``, ``xor`` and those registered
    with :func:`toyloops.core.data.point_set`), standardised with train-split statistics.

    Args:
        dataset: which point set; blobs split ``n_samples`` evenly across their centers.
        centers: blob class centers (default (-1.5, -1.0) and (1.2, 1.3)).
        variance: isotropic blob variance.
        noise: circles: the fraction of labels flipped; moons, spirals, xor: the std of Gaussian
            jitter added to the points.
        kwargs: the arguments of :class:`ToyDataModule`.
    """

    def __init__(self, dataset: str = "blobs", n_samples: int = 1000, centers: list[list[float]] | None = None,
                 variance: float = 0.5, noise: float = 0.0, **kwargs: Any) -> None:
        centers = [[-1.5, -1.0], [1.2, 1.3]] if centers is None else centers
        super().__init__(n_samples, **kwargs)
        if dataset not in data.POINT_SETS:
            raise ConfigError(f"data.dataset={dataset!r}: expected one of {', '.join(data.POINT_SETS)} "
                              "(toyloops.core.data.point_set registers more)")
        if dataset == "blobs" and len(centers) < 2:
            raise ConfigError(f"data.centers must list at least 2 class centers, got {len(centers)}")
        self.splits  # noqa: B018 - drawn now, so bad settings fail at construction

    def generate(self, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
        make = data.POINT_SETS[self.dataset][0]
        return make(n_samples=n_samples, seed=seed, **self.settings_for(make))

    def settings_for(self, function: Any) -> dict[str, Any]:
        """This data module's settings that ``function`` (a point set's make or bayes) takes by name."""
        return {name: getattr(self, name) for name in inspect.signature(function).parameters
                if hasattr(self, name) and name not in ("seed", "n_samples")}

    def transform(self, train: Tensor, val: Tensor, test: Tensor) -> tuple[Tensor, ...]:
        self.mean, self.std = data.feature_statistics(train)
        return tuple((t - self.mean) / self.std for t in (train, val, test))

    def preprocess(self, x: Tensor) -> Tensor:
        """Raw points (N, F) scaled with the train split's statistics, as every split was."""
        statistics = self.state_dict()
        return (x - statistics["mean"]) / statistics["std"]

    def state_dict(self) -> dict[str, Any]:
        """The train-split statistics, saved in checkpoints (Lightning and the hand loop alike)."""
        self.splits  # noqa: B018
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the checkpoint's statistics; they must be those this data regenerates."""
        current = self.state_dict()
        if not (torch.allclose(state_dict["mean"], current["mean"]) and torch.allclose(state_dict["std"],
                                                                                      current["std"])):
            raise ConfigError("the checkpoint's train-split statistics differ from this data's: "
                              "the data settings or toyloops' generators changed since it was written")

    @property
    def num_classes(self) -> int:
        return len(self.centers) if self.dataset == "blobs" else 2

    @property
    def bayes_accuracy(self) -> float | None:
        """What the point set's registration states, unless a subclass draws its own points."""
        bayes = data.POINT_SETS[self.dataset][1]
        ours = type(self).generate is PointsDataModule.generate
        return bayes(**self.settings_for(bayes)) if bayes is not None and ours else None


class SequenceDataModule(ToyDataModule):
    """Token-sequence tasks (``parity``, ``majority``, ``contains``) with binary labels; see
    :func:`toyloops.core.data.make_sequences` for the arguments, ``kwargs`` are :class:`ToyDataModule`'s."""

    bayes_accuracy = 1.0  # each label is a function of its tokens

    @property
    def bytes_per_sample(self) -> int:
        return 8 * (self.seq_len + 1)  # int64 tokens and label

    def __init__(self, task: Literal["parity", "majority", "contains"] = "majority", n_samples: int = 4000,
                 seq_len: int = 16, vocab_size: int = 50, target_token: int = 1, **kwargs: Any) -> None:
        super().__init__(n_samples, **kwargs)
        self.splits  # noqa: B018 - drawn now, so bad settings fail at construction

    def generate(self, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
        return data.make_sequences(self.task, n_samples, self.seq_len, self.vocab_size, seed, self.target_token)

    @property
    def num_classes(self) -> int:
        return 2  # every sequence task is a yes/no question


class LinearDataModule(ToyDataModule):
    """Regression on a line with a known answer: y = x @ weights + bias + noise (for
    :class:`~toyloops.core.regressor.Regressor`). Inputs are left unscaled, so the learned weights
    compare with the true ones. See :func:`toyloops.core.data.make_linear`; weights default to
    (2.0, -3.0); ``kwargs`` are :class:`ToyDataModule`'s."""

    def __init__(self, n_samples: int = 1000, weights: list[float] | None = None, bias: float = 0.5,
                 noise: float = 0.1, batch_size: int = 32, **kwargs: Any) -> None:
        weights = [2.0, -3.0] if weights is None else weights
        super().__init__(n_samples, batch_size, **kwargs)
        self.splits  # noqa: B018 - drawn now, so bad settings fail at construction

    def generate(self, n_samples: int, seed: int) -> tuple[Tensor, Tensor]:
        return data.make_linear(n_samples, self.weights, self.bias, self.noise, seed)

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
