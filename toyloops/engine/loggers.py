"""The template's TensorBoard logger (``trainer.logger`` in every run config, see ``toyloops/cli.py``)."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard import SummaryWriter

from toyloops.engine.dashboard import hold_events


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``, writing its events as the hand loop writes its own.

    - No flush after every log. Lightning calls ``save()`` after each ``log_metrics``; its ``save``
      waits for the event writer's thread to write out its queue, flushes the file and looks for
      ``hparams.yaml`` on disk. Here ``save`` writes ``hparams.yaml`` once, as Lightning's does.
    - Events go to the writer's thread in bursts (:func:`toyloops.engine.dashboard.hold_events`).

    Together these were the largest part of what the template's defaults cost over a barebones
    Trainer (``benchmarks/RESULTS.md``). The events reach the file at each epoch boundary
    (:class:`toyloops.engine.callbacks.DashboardCallback` flushes), mid-epoch with the first event logged
    5 s or more after the oldest held one (:class:`toyloops.engine.dashboard.HeldEvents`), and
    at the end of the run, stopped or not (``finalize`` flushes and closes).
    """

    _hparams_saved = False

    @property
    def experiment(self) -> SummaryWriter:
        writer = super().experiment
        return hold_events(writer) if isinstance(writer, SummaryWriter) else writer  # a DummyExperiment off rank 0

    @rank_zero_only
    def save(self) -> None:
        if not self._hparams_saved:
            super().save()
            self._hparams_saved = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))
