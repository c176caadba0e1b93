"""The batches both engines see: seeded train/val/test (and k-fold) splits, and a one-index batch
iterator whose epoch order any engine can replay and whose position a checkpoint can hold."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from toyloops.rules.errors import ConfigError, check_positive, checked

__all__ = ["BatchIterator", "split_indices"]


def split_indices(n: int, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                  fold: int | None = None, num_folds: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Disjoint train/val/test index tensors drawn from one seeded permutation of range(n);
    ``test_fraction=0`` leaves the test split empty (the seeds' 80/20 train/val).

    With ``num_folds`` K (k-fold cross-validation): the test split is the same as without; the rest
    (train + val) is cut into K disjoint folds of near-equal size that cover it, fold ``fold`` is
    the validation split and the other K - 1 train (``val_fraction`` is not used).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1) (0: no test split), got {test_fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    if (fold is None) != (num_folds is None):
        raise ConfigError(f"data.fold={fold} and data.num_folds={num_folds}: give both (k-fold) or neither")
    if num_folds is not None and not (num_folds >= 2 and 0 <= fold < num_folds):
        raise ConfigError(f"data.fold={fold}, data.num_folds={num_folds}: expected num_folds >= 2 and "
                          f"0 <= fold < num_folds")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if min(n_train, n_val) < 1 or (test_fraction > 0 and n_test < 1):
        raise ConfigError(f"{n} samples are too few for fractions {val_fraction}/{test_fraction}")
    if num_folds is not None:
        if n_train + n_val < num_folds:
            raise ConfigError(f"data.num_folds={num_folds} is more than the {n_train + n_val} train + val samples")
        folds = perm[: n_train + n_val].tensor_split(num_folds)
        return torch.cat([f for k, f in enumerate(folds) if k != fold]), folds[fold], perm[n_train + n_val :]
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


class BatchIterator:
    """Batches of ``(x[idx], y[idx])`` gathered with one tensor index per batch.

    The order of epoch ``e`` is a permutation drawn from ``seed + e``, so any engine can replay
    it; call ``set_epoch(e)`` before each epoch (Lightning does, through ``.sampler``).
    ``rank``/``world_size`` give each process a disjoint, equally long shard of every epoch.
    ``state_dict`` records the epoch and how many batches were handed out, so a run resumed
    mid-epoch gets exactly the remaining batches.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        checked(BatchIterator, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                world_size=world_size)
        check_positive("batch_size", batch_size)
        if len(x) != len(y):
            raise ConfigError(f"x and y differ in length: {len(x)} != {len(y)}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if len(x) < world_size:
            raise ConfigError(f"{len(x)} samples cannot be shared by {world_size} processes")
        if drop_last and batch_size * world_size > len(x):  # would serve no batch at all
            raise ConfigError(f"batch_size={batch_size} with drop_last is larger than the {len(x)} samples of the "
                              "split" + (f" shared by {world_size} processes" if world_size > 1 else ""))
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # the epoch the next (or current) pass yields
        self.batches_done = 0  # batches already yielded in that epoch
        self._resume_at = 0  # where the next pass starts: 0, or a loaded mid-epoch position

    def indices(self, epoch: int) -> Tensor:
        """This rank's sample indices for ``epoch``, in the order they are served."""
        n = len(self.x)
        shuffled = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=shuffled) if self.shuffle else torch.arange(n)
        per_rank = n // self.world_size  # equal shards: DDP ranks must take the same number of steps
        return order[: per_rank * self.world_size][self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = len(self.x) // self.world_size
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch`` next (called before each epoch, as on a DistributedSampler)."""
        if epoch != self.epoch:
            self.epoch, self._resume_at = epoch, 0

    @property
    def sampler(self) -> BatchIterator:
        """Lightning calls ``loader.sampler.set_epoch(epoch)`` each epoch: that is this object."""
        return self

    batch_sampler = None  # with ``sampler``, the two attributes Lightning reads off a loader

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self._serve()

    def _serve(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: nothing below runs until the first batch is asked for, so an iter() that
        # only probes the object (as Lightning's checks do) changes no state.
        start, self._resume_at = self._resume_at, 0  # a pass starts at 0 unless a state was loaded
        batches = self.indices(self.epoch).split(self.batch_size)[: len(self)]
        self.batches_done = start
        for idx in batches[start:]:
            self.batches_done += 1
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)  # x[idx], without indexing's parsing

    def state_dict(self) -> dict[str, int]:
        """Where the iterator stands: the epoch and the batches already served in it."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``: the next pass yields the rest of that epoch."""
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
        self._resume_at = self.batches_done if self.batches_done < len(self) else 0
