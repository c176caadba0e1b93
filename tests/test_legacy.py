"""Old checkpoints and old import paths keep working (issue 20, item 9).

``tests/legacy/`` holds checkpoints written by the released 0.1 (commit ad96440, both engines, every
shipped net, one- and two-logit heads; tests/legacy/README.md). Each one loads with
``load_from_checkpoint``, evaluates to the metrics 0.1 reported for it (``legacy.json``) in both
engines, and resumes in the engine that wrote it. The flat layout's module paths (``toyloops.loop``,
``toyloops.config``, ...) import the same objects as the new ones, with one DeprecationWarning.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import toyloops
from tests.conftest import QUIET, fit_in, run_cli
from toyloops import Classifier, Regressor
from toyloops.engine.loop_cli import run as run_loop
from toyloops.rules.errors import ConfigError

LEGACY = Path(__file__).parent / "legacy"
MANIFEST = json.loads((LEGACY / "legacy.json").read_text())
CHECKPOINTS = MANIFEST["checkpoints"]
TYPICAL = ["lightning_mlp_2logits", "loop_linear_regression"]  # the fast suite's pair; the rest: integration


def legacy(name: str, folder: Path) -> Path:
    """A copy of the checkpoint ``name`` in ``folder`` (the committed file is never written beside)."""
    return Path(shutil.copy(LEGACY / f"{name}.ckpt", folder / f"{name}.ckpt"))


def module_class(name: str) -> type:
    return Regressor if CHECKPOINTS[name]["config"] == "linear_regression" else Classifier


def cases(*engines: str) -> list:
    """Each checkpoint, run by each of ``engines`` (none given: by the engine that wrote it, a
    parameter less); those not in TYPICAL marked integration."""
    params = []
    for name, case in CHECKPOINTS.items():
        for engine in engines or [case["engine"]]:
            marks = [] if name in TYPICAL else [pytest.mark.integration]
            params.append(pytest.param(name, *([engine] if engines else []), marks=marks, id=f"{name}-{engine}"))
    return params


def test_the_files_are_small_and_named():
    assert sum(p.stat().st_size for p in LEGACY.iterdir()) < 500_000
    assert {p.stem for p in LEGACY.glob("*.ckpt")} == set(CHECKPOINTS)
    assert MANIFEST["commit"].startswith("ad96440")


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_loads_with_its_weights(name):
    path = LEGACY / f"{name}.ckpt"
    model = module_class(name).load_from_checkpoint(path)
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert model.state_dict().keys() == stored.keys()
    assert all(torch.equal(model.state_dict()[key], tensor) for key, tensor in stored.items())
    if module_class(name) is Regressor:  # 0.1's Classifier(objective="regression") is a Regressor now
        with pytest.raises(ConfigError):
            Classifier.load_from_checkpoint(path)


def evaluate(engine: str, name: str, folder: Path) -> dict[str, float]:
    """``validate`` in one engine, in ``folder``; the metrics it wrote to its eval folder."""
    case = CHECKPOINTS[name]
    args = ["validate", "--config", case["config"], *case["overrides"], "--ckpt_path", str(legacy(name, folder))]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        run_cli(*args) if engine == "lightning" else run_loop([*args, *QUIET])
    (metrics,) = folder.glob("logs/*/eval/validate_*/metrics.yaml")
    return yaml.safe_load(metrics.read_text())["metrics"]


@pytest.mark.parametrize(("name", "engine"), cases("lightning", "loop"))
def test_evaluates_as_0_1_did(name, engine, tmp_path):
    assert evaluate(engine, name, tmp_path) == CHECKPOINTS[name]["validate"][engine]


@pytest.mark.parametrize("name", cases())
def test_resumes_for_one_more_epoch(name, tmp_path):
    case = CHECKPOINTS[name]
    before = torch.load(LEGACY / f"{name}.ckpt", weights_only=True)
    fit_in(tmp_path, case["engine"], "--config", case["config"], *case["overrides"], *case["fit_only"],
           "--trainer.max_epochs", "2", "--ckpt_path", str(legacy(name, tmp_path)))
    (last,) = tmp_path.glob("logs/*/*version_*/checkpoints/last.ckpt")
    after = torch.load(last, weights_only=True)
    assert (after["epoch"], after["global_step"]) == (before["epoch"] + 1, before["global_step"] + 2)
    assert any(not torch.equal(after["state_dict"][key], value) for key, value in before["state_dict"].items())


# Old path -> the new one of the same object, as a script written against 0.1 imports it.
SHIMS = {
    "from toyloops.loop import run": "toyloops.engine.loop_cli.run",
    "from toyloops.config import default_optimizer": "torch.optim.AdamW",
    "from toyloops.config import describe": "toyloops.rules.specs.describe",
    "from toyloops.config import check_values": "toyloops.engine.validation.check_values",
    "from toyloops.config import LOG_DIR": "toyloops.engine.defaults.LOG_DIR",
    "from toyloops.data import make_blobs": "toyloops.core.data.make_blobs",
    "from toyloops.data import BatchIterator": "toyloops.rules.batches.BatchIterator",
    "from toyloops.models import MLP": "toyloops.core.nets.MLP",
    "from toyloops.models import METRICS": "toyloops.core.classifier.METRICS",
    "from toyloops.module import Classifier": "toyloops.core.classifier.Classifier",
    "from toyloops.datamodules import PointsDataModule": "toyloops.core.datamodules.PointsDataModule",
    "from toyloops.checkpoints import save_checkpoint": "toyloops.engine.checkpoints.save_checkpoint",
    "from toyloops.checkpoints import load_checkpoint": "toyloops.rules.specs.load_checkpoint",
    "from toyloops.errors import ConfigError": "toyloops.rules.errors.ConfigError",
    "from toyloops.callbacks import ProgressBar": "toyloops.engine.callbacks.ProgressBar",
    "from toyloops.cli import ToyCLI": "toyloops.engine.cli.ToyCLI",
    "from toyloops.runs import RunFolder": "toyloops.engine.runs.RunFolder",
    "from toyloops.seeding import seed_everything": "toyloops.engine.seeding.seed_everything",
    "from toyloops.entry import shipped_configs": "toyloops.engine.entry.shipped_configs",
    "from toyloops.loggers import TensorBoardLogger": "toyloops.engine.loggers.TensorBoardLogger",
    "from toyloops.dashboard import Dashboard": "toyloops.engine.dashboard.Dashboard",
    "from toyloops.stats import paired_t_test": "toyloops.tools.stats.paired_t_test",
    "from toyloops.scratch import least_squares": "toyloops.tools.scratch.least_squares",
    "from toyloops.compare import compare": "toyloops.tools.compare.compare",
    "from toyloops.export import export": "toyloops.tools.export.export",
    "from toyloops.init import init": "toyloops.tools.init.init",
    "from toyloops.profile import run_loop": "toyloops.tools.profile.run_loop",
    "from toyloops.seeds import report": "toyloops.tools.seeds.report",
    "from toyloops.sweep import read_space": "toyloops.tools.sweep.read_space",
}


def forget_old_modules() -> None:
    """As in a new process: no old module imported yet (each import warns once a process)."""
    for old in toyloops.MOVED:
        sys.modules.pop(f"toyloops.{old}", None)
        toyloops.__dict__.pop(old, None)


@pytest.mark.parametrize("statement", SHIMS)
def test_old_import_path_warns_once_and_gives_the_same_object(statement):
    forget_old_modules()
    name, new = statement.split()[-1], SHIMS[statement]
    scope: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(f"{statement}\n{statement}\nimport {statement.split()[1]}", "old_script.py", "exec"), scope)
    ours = [w for w in caught if str(w.message).startswith("toyloops.")]
    assert len(ours) == 1 and ours[0].category is DeprecationWarning, [str(w.message) for w in ours]
    assert new.rpartition(".")[0] in str(ours[0].message) and ours[0].filename == "old_script.py"
    owner, _, attr = new.rpartition(".")
    assert scope[name] is getattr(importlib.import_module(owner), attr)


def test_every_moved_module_is_tested_and_a_removed_name_stays_an_import_error():
    assert {statement.split()[1].split(".")[1] for statement in SHIMS} == set(toyloops.MOVED)
    forget_old_modules()
    with warnings.catch_warnings(), pytest.raises(ImportError, match="skip_empty_batch_hooks"):
        warnings.simplefilter("ignore")
        from toyloops.callbacks import skip_empty_batch_hooks  # noqa: F401 - removed in 0.2, no behaviour left
    assert importlib.util.find_spec("toyloops.no_such_module") is None
