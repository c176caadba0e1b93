"""The template's TensorBoard logger (``trainer.logger`` in every run config, see ``toyloops/engine/cli.py``)."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from toyloops.engine.dashboard import FLUSH_SECS


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` without its flush after every log (``save`` writes ``hparams.yaml``
    once); its SummaryWriter writes out every ``flush_secs``, and the callbacks flush at epoch ends and before
    every checkpoint (docs/outputs.md; the cost of that flush: docs/performance.md)."""

    _hparams_saved = False

    def __init__(self, *args: Any, flush_secs: int = FLUSH_SECS, **kwargs: Any) -> None:
        """Lightning's arguments; ``flush_secs`` (and any other SummaryWriter argument) goes to its SummaryWriter."""
        super().__init__(*args, flush_secs=flush_secs, **kwargs)

    @rank_zero_only
    def save(self) -> None:
        if not self._hparams_saved:
            super().save()
            self._hparams_saved = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))
