"""Adding a net, a point set and a data module from outside the package: the Python files and YAML
configs exactly as docs/extending.md shows them, run from a folder of their own."""

import re
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from toyloops import Classifier
from toyloops.engine import loop_cli

DOC = (Path(__file__).parents[1] / "docs" / "extending.md").read_text()


def block(name: str) -> str:
    """The fenced code block that follows the line naming ``name`` in docs/extending.md."""
    return re.search(rf"^`{re.escape(name)}`[^\n]*\n(?:[^\n]+\n)*\n```\w+\n(.*?)```", DOC, re.M | re.S).group(1)


@pytest.fixture
def project(in_tmp, monkeypatch):
    for name in ("ring_project.py", "rings.yaml", "wave_project.py", "waves.yaml"):
        (in_tmp / name).write_text(block(name))
    monkeypatch.syspath_prepend(str(in_tmp))
    yield in_tmp
    for module in ("ring_project", "wave_project"):
        sys.modules.pop(module, None)


def test_a_net_and_a_point_set_of_ones_own_train_and_reload(project):
    cli = run_cli("fit", "--config", "rings.yaml")
    assert type(cli.model.net).__name__ == "RingNet"
    assert cli.datamodule.baselines["bayes"] == 1.0  # as registered
    assert cli.trainer.callback_metrics["val/acc"] > 0.95
    reloaded = Classifier.load_from_checkpoint(project / "logs/rings/version_0/checkpoints/last.ckpt")
    assert type(reloaded.net).__name__ == "RingNet"  # rebuilt from its spec: allow_net let it


@pytest.mark.parametrize("options", [["--data.init_args.fold", "0", "--data.init_args.num_folds", "4"],
                                     ["--data.init_args.val_draw", "independent"]])
def test_a_data_module_of_ones_own_trains_with_folds_or_an_independent_val_draw(project, options):
    cli = run_cli("fit", "--config", "waves.yaml", *options)
    data = cli.datamodule
    assert data.hparams["amplitude"] == 1.5 and "bayes" not in data.baselines  # its own setting; no claim made
    folds = "--data.init_args.fold" in options
    assert (data.num_folds, data.val_draw) == ((4, "split") if folds else (None, "independent"))
    assert len(data.splits["val"][0]) == 240  # a fourth of train + val (960), or a fifth of the draw
    assert cli.trainer.callback_metrics["val/acc"] > 0.9
    ckpt = project / "logs/waves/version_0/checkpoints/last.ckpt"
    assert type(data).load_from_checkpoint(ckpt).hparams == data.hparams
    hand = loop_cli.run(["fit", "--config", "waves.yaml", *options])  # the hand loop takes it as it is
    assert hand["val/acc"] == pytest.approx(cli.trainer.callback_metrics["val/acc"].item(), abs=0)
