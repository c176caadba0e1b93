"""The template's defaults that differ from Lightning's, each with its reason, and the rules
both engines read the same way from a run config (links, threads, logging steps, resume).

The reasons are measured in ``benchmarks/RESULTS.md`` ("Defaults").
"""

from __future__ import annotations

import os
import re

import torch

from toyloops.rules.errors import ConfigError

LOG_DIR = "logs"
# A config's model: section without a class_path is a Classifier (toyloops.Regressor must be named).
DEFAULT_MODEL = {"class_path": "toyloops.Classifier"}
NET_KEY = "model.init_args.net.init_args"  # where the data's facts are linked into the net
MONITOR, MONITOR_MODE = "val/acc", "max"
# Template defaults for Lightning's own keys, set on both engines' parsers.
TRAINER_DEFAULTS = {"seed_everything": 0, "trainer.log_every_n_steps": 10,
                    # TensorBoard into the run folder (toyloops.engine.loggers: where any logger writes)
                    "trainer.logger": {"class_path": "toyloops.engine.loggers.TensorBoardLogger",
                                       "init_args": {"save_dir": LOG_DIR, "name": "", "default_hp_metric": False}}}
# train.py's best checkpoint (the hand loop's is best.ckpt, the one key it does not follow: its files keep their name)
CHECKPOINT_DEFAULTS = {"checkpoint.monitor": MONITOR, "checkpoint.mode": MONITOR_MODE,
                       "checkpoint.filename": "best-{epoch:03d}"}
# Defaults chosen by measurement (benchmarks/RESULTS.md, "Defaults"): the training progress bar
# redraws at most twice a second and at each epoch's last batch (toyloops.engine.callbacks.ProgressBar);
PROGRESS_BAR_MIN_INTERVAL_S = 0.5
PROGRESS_BAR_REFRESH_RATE = TRAINER_DEFAULTS["trainer.log_every_n_steps"]  # the other bars (validation ...)
# and one torch thread unless TOYLOOPS_THREADS (or OMP_NUM_THREADS) says otherwise: OpenMP threads
# on a shared machine wait on each other.
THREADS_ENV = "TOYLOOPS_THREADS"

# Facts the data module owns -> where the net takes them. A data module that lacks a fact
# (sequences have no num_features) leaves that link out, so one list serves every net.
DATA_TO_NET = (
    ("num_classes", "num_classes"),
    ("num_features", "in_features"),
    ("vocab_size", "vocab_size"),
    ("seq_len", "seq_len"),
)


PARSE_LINKS = (("seed_everything", "data.init_args.seed"),)  # one seed drives everything (set when parsed)


def add_links(parser, net_key: str = NET_KEY) -> None:  # noqa: ANN001 - a jsonargparse parser
    """Link the seed and the data's facts into the net, as both engines do."""
    for source, target in PARSE_LINKS:
        parser.link_arguments(source, target)
    for source, target in DATA_TO_NET:
        parser.link_arguments(f"data.{source}", f"{net_key}.{target}", apply_on="instantiate")


def apply_thread_policy() -> int:
    """Set torch's intra-op threads from ``TOYLOOPS_THREADS``; 1 when neither it nor
    ``OMP_NUM_THREADS`` is set (torch reads the latter itself). Returns the number in use."""
    omp, cores = os.environ.get("OMP_NUM_THREADS") or None, os.cpu_count() or 1
    if omp is not None and not re.fullmatch(r"[1-9][0-9]*(,[1-9][0-9]*)*", omp.strip()):
        raise ConfigError(f"OMP_NUM_THREADS={omp!r}: expected a whole number of threads >= 1 (or OpenMP's N,M,...)")
    value = os.environ.get(THREADS_ENV, None if omp else "1")
    if value is None:
        return torch.get_num_threads()
    if not re.fullmatch(r"[0-9]+", value.strip()) or not 1 <= int(value) <= cores:
        raise ConfigError(f"{THREADS_ENV}={value!r}: expected a whole number of threads from 1 to {cores} "
                          "(this machine's CPUs)")
    torch.set_num_threads(int(value))
    return int(value)


def keep_built_implementation(optimizer: torch.optim.Optimizer) -> None:
    """After ``optimizer.load_state_dict``: each group's ``fused`` and ``foreach`` as this run built them
    (:func:`~toyloops.rules.specs.build_optimizer`), not as the checkpoint's run did (docs/decisions.md)."""
    for group in optimizer.param_groups:
        for key in ("fused", "foreach"):
            if key in optimizer.defaults and key in group:
                group[key] = optimizer.defaults[key]
