"""The template's TensorBoard logger (``trainer.logger`` in every run config, see ``toyloops/cli.py``)."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from toyloops.engine.dashboard import FLUSH_SECS


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``, writing its events as the hand loop writes its own.

    - No flush after every log. Lightning calls ``save()`` after each ``log_metrics``; its ``save``
      waits for the event writer's thread to write out its queue, flushes the file and looks for
      ``hparams.yaml`` on disk. Here ``save`` writes ``hparams.yaml`` once, as Lightning's does.
      That flush was the largest part of what the template's defaults cost over a barebones
      Trainer (``benchmarks/RESULTS.md``).
    - Its SummaryWriter gets ``flush_secs`` (a documented SummaryWriter argument, which Lightning
      passes on): the writer's thread writes out what it holds at least every
      :data:`~toyloops.engine.dashboard.FLUSH_SECS` seconds, so a live TensorBoard is that far
      behind at most. The events are also flushed at each epoch boundary
      (:class:`toyloops.engine.callbacks.DashboardCallback`), before every checkpoint is written
      (:class:`toyloops.engine.callbacks.ResumeState`: a resume point never lacks the events logged
      before it, even after a SIGKILL), and at the end of the run, stopped or not (``finalize``
      flushes and closes).
    """

    _hparams_saved = False

    def __init__(self, *args: Any, flush_secs: int = FLUSH_SECS, **kwargs: Any) -> None:
        """Lightning's arguments; ``flush_secs`` (and any other SummaryWriter argument) goes to its SummaryWriter."""
        super().__init__(*args, flush_secs=flush_secs, **kwargs)

    @rank_zero_only
    def save(self) -> None:
        if not self._hparams_saved:
            super().save()
            self._hparams_saved = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))
