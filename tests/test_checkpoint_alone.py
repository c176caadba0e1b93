"""A checkpoint is all ``validate``, ``test`` and ``predict`` need (issue 20 item 1): without
``--config`` the checkpoint's own run's ``config.yaml`` rebuilds the model and the data, and
``last`` is the newest run's last checkpoint. Checked on either engine's checkpoint, by comparing
with the same command given the config."""

import re

import pytest
import torch
import yaml
from conftest import BLOBS_SHORT, CONFIGS

from toyloops import Classifier, LinearRegression, Regressor
from toyloops.engine import cli, loop_cli
from toyloops.engine.runs import with_run_config
from toyloops.rules.errors import ConfigError
from toyloops.tools import export


def scores(run_dir, stage: str) -> list[dict]:
    found = sorted((run_dir / "eval").glob(f"{stage}_*/metrics.yaml"))
    return [yaml.safe_load(path.read_text())["metrics"] for path in found]


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_validate_and_test_with_the_checkpoint_alone_equal_the_config_given(trained, in_tmp, engine):
    run = trained(engine, "blobs_mlp", *BLOBS_SHORT).copy_to(in_tmp)
    for stage in ("validate", "test"):
        cli.main([stage, "--config", str(CONFIGS / "blobs_mlp.yaml"), *BLOBS_SHORT, "--ckpt_path", str(run.last)])
        cli.main([stage, "--ckpt_path", "last"])  # no config: the run's own
        if engine == "loop":  # the hand trainer likewise, from its own run's config
            loop_cli.run([stage, "--ckpt_path", "last"])
        given, alone, *hand = scores(run.run_dir, stage)
        assert alone == given and hand in ([], [given]) and given  # the same numbers: same model and data


def test_predict_writes_the_same_predictions_from_the_checkpoint_alone(trained, in_tmp):
    run = trained("lightning", "blobs_mlp", *BLOBS_SHORT).copy_to(in_tmp)
    cli.main(["predict", "--config", str(CONFIGS / "blobs_mlp.yaml"), *BLOBS_SHORT, "--ckpt_path", str(run.last)])
    cli.main(["predict", "--ckpt_path", str(run.last)])
    given, alone = sorted((run.run_dir / "eval").glob("predict_*/predictions.csv"))
    assert alone.read_text() == given.read_text() and len(given.read_text().splitlines()) > 100


def test_a_checkpoint_without_its_run_folder_says_what_to_pass(trained, in_tmp):
    lone = in_tmp / "lone.ckpt"
    lone.write_bytes(trained("lightning", "blobs_mlp", *BLOBS_SHORT).last.read_bytes())
    with pytest.raises(ConfigError, match="its run folder holds no config.yaml .* give the run's config with --config"):
        with_run_config(["validate", "--ckpt_path", str(lone)])
    with pytest.raises(ConfigError, match="no run under logs/ has a last.ckpt"):
        with_run_config(["test", "--ckpt_path=last"])
    assert with_run_config(["fit", "--ckpt_path", "last"]) == ["fit", "--ckpt_path", "last"]  # fit: a config's run


def test_export_takes_last_and_a_regressions_checkpoint_and_refuses_a_misshaped_weight(trained, in_tmp):
    run = trained("lightning", "blobs_mlp", *BLOBS_SHORT).copy_to(in_tmp)
    path = export.run(["--ckpt_path", "last", "--format", "torchscript"])
    assert path == run.last.with_suffix(".pt").relative_to(in_tmp) and path.stat().st_size > 0
    regression = Regressor(LinearRegression(2))
    checkpoint = torch.load(run.last, weights_only=True)
    checkpoint["hyper_parameters"] = dict(regression.hparams)
    checkpoint["state_dict"] = regression.state_dict()
    torch.save(checkpoint, in_tmp / "line.ckpt")
    line = torch.jit.load(export.run(["--ckpt_path", str(in_tmp / "line.ckpt"), "--format", "torchscript"]))
    x = torch.randn(5, 2)
    assert torch.equal(line(x), regression.net(x))  # the net alone, whichever module trained it
    checkpoint["state_dict"]["net.linear.weight"] = torch.zeros(3, 2)
    torch.save(checkpoint, in_tmp / "bent.ckpt")
    with pytest.raises(ConfigError, match=r"net.linear.weight|linear.weight is \(3, 2\) in the checkpoint"):
        export.run(["--ckpt_path", str(in_tmp / "bent.ckpt"), "--format", "torchscript"])


@pytest.mark.parametrize("hidden", [[20000, 20000], [200000, 200000]])
def test_stored_sizes_are_checked_against_the_weights_before_any_net_is_built(trained, in_tmp, hidden):
    """A 40 KB checkpoint whose hyperparameters claim a huge net: one line, before an allocation (issue 21.4)."""
    checkpoint = torch.load(trained("lightning", "blobs_mlp", *BLOBS_SHORT).last, weights_only=True)
    checkpoint["hyper_parameters"]["net"]["init_args"]["hidden_sizes"] = hidden
    torch.save(checkpoint, in_tmp / "huge.ckpt")
    message = f"hyper_parameters.net says net.layers.0.weight is ({hidden[0]}, 2), its weights hold"
    for command in (["validate", "--ckpt_path", "huge.ckpt", "--config", str(CONFIGS / "blobs_mlp.yaml")],
                    ["export", "--ckpt_path", "huge.ckpt"]):
        with pytest.raises(ConfigError, match=re.escape(message)):
            (export.run(command[1:]) if command[0] == "export" else loop_cli.run(command))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Classifier.load_from_checkpoint(in_tmp / "huge.ckpt")


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_compare_with_the_checkpoint_alone_trains_its_runs_config_in_both_engines(trained, tmp_path, engine,
                                                                                   monkeypatch, capsys):
    from toyloops.tools import compare

    run = trained(engine, "blobs_mlp", *BLOBS_SHORT).copy_to(tmp_path / "runs")
    (empty := tmp_path / "empty").mkdir()
    monkeypatch.chdir(empty)  # from an empty folder: the checkpoint's run folder holds the config
    compare.main(["--ckpt_path", str(run.last)])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    steps = torch.load(run.last, weights_only=True)["global_step"]
    assert int(rows["lightning"][-1]) == int(rows["loop"][-1]) == steps  # the run's config: its epochs and samples
    assert "(bit-identical)" in rows["max"] and list(empty.iterdir()) == []  # nothing left here
