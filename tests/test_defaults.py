"""The defaults chosen by measurement: threads, fused AdamW, the progress bar, skipped empty hooks."""

import functools
import sys
from unittest import mock

import lightning as L
import pytest
import torch
from conftest import CONFIGS

from toyloops.callbacks import StopOnNonFiniteLoss, skip_empty_batch_hooks
from toyloops.cli import ToyCLI
from toyloops.config import PROGRESS_BAR_REFRESH_RATE, THREADS_ENV, apply_thread_policy, build_optimizer
from toyloops.errors import ConfigError


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_thread_unless_configured(monkeypatch, threads_restored):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(2)
    assert apply_thread_policy() == 1 == torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "2")
    assert apply_thread_policy() == 2 == torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # configured the usual way: left as torch read it
    assert apply_thread_policy() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{THREADS_ENV}='{bad}'.*whole number"):
            apply_thread_policy()


def test_adam_and_adamw_are_fused_unless_the_config_says_otherwise():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert build_optimizer(torch.optim.AdamW, params).defaults["fused"] is True
    assert build_optimizer(functools.partial(torch.optim.Adam, lr=0.1), params).defaults["fused"] is True
    chosen = build_optimizer(functools.partial(torch.optim.AdamW, foreach=True), params).defaults
    assert chosen["foreach"] is True and not chosen["fused"]
    assert not build_optimizer(functools.partial(torch.optim.SGD, lr=0.1), params).defaults.get("fused")


def test_empty_per_batch_hooks_are_skipped_and_real_ones_kept():
    callback = StopOnNonFiniteLoss()
    skip_empty_batch_hooks([callback])
    assert callback.on_before_backward is not None  # its one per-batch hook
    assert callback.on_train_batch_start is None and callback.on_after_backward is None
    assert callback.on_fit_start is not None  # not a per-batch hook: left alone
    assert L.Callback.on_train_batch_start is not None  # the class is untouched


@pytest.mark.parametrize("enabled", [True, False])
def test_the_progress_bar_redraws_every_10_steps_and_stays_off_when_switched_off(enabled, in_tmp):
    with mock.patch.object(sys, "argv", ["train.py"]):
        cli = ToyCLI(args=["--config", str(CONFIGS / "blobs_logistic.yaml"),
                           f"--trainer.enable_progress_bar={str(enabled).lower()}"], run=False)
    bar = cli.trainer.progress_bar_callback
    assert (bar.refresh_rate if bar else None) == (PROGRESS_BAR_REFRESH_RATE if enabled else None)
    assert PROGRESS_BAR_REFRESH_RATE == 10
