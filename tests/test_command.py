"""The `toyloops` command's own surface: configs by name, one-line mistakes, modules that run,
stops while starting, and files it never overwrites."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS

from toyloops.engine.checkpoints import write_new
from toyloops.engine.entry import shipped_configs, with_shipped_configs
from toyloops.rules.errors import ConfigError

BLOBS = str(CONFIGS / "blobs_mlp.yaml")


@pytest.mark.parametrize("given", [
    ["--config", "blobs_mlp"], ["-c", "blobs_mlp"], ["--config=blobs_mlp"], ["--config", "blobs_mlp.yaml"],
    ["--config", "configs/blobs_mlp.yaml"],  # the README's repository form, typed where there is no configs/
])
def test_a_shipped_config_is_found_by_name_in_every_form(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = with_shipped_configs(["fit", *given])
    assert str(shipped_configs()["blobs_mlp"]) in resolved[-1]


def test_a_file_here_wins_over_a_shipped_name_and_a_folder_does_not(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("blobs_mlp.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert with_shipped_configs(["--config", "blobs_mlp.yaml"]) == ["--config", "blobs_mlp.yaml"]
    assert with_shipped_configs(["--config", "blobs_mlp"]) == ["--config", str(shipped_configs()["blobs_mlp"])]
    assert "give blobs_mlp.yaml for the file here" in capsys.readouterr().err  # said, not silently passed over
    Path("circles_mlp").mkdir()
    assert with_shipped_configs(["--config", "circles_mlp"]) == ["--config", str(shipped_configs()["circles_mlp"])]


def test_an_unknown_config_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="'blobs_mpl' is neither a file nor a shipped config; shipped: .*blobs_mlp"):
        with_shipped_configs(["--config", "blobs_mpl"])
    assert with_shipped_configs(["--config", "trainer: {max_epochs: 1}"])[-1] == "trainer: {max_epochs: 1}"  # YAML


def _toyloops(*args: str, cwd: Path, module: str = "toyloops") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["compare", "--config", "blobs_mpl"], "neither a file nor a shipped config"),
    (["compare", "--config", BLOBS, "--bogus", "1"], "--bogus"),
    (["configs", "extra"], "takes no arguments"),
    (["nope"], "must be one of fit, validate"),
    (["fit", "--config", "presets/debug"], "a preset stacks on a run config"),
    (["loop", "fit", "--config", "presets/debug"], "a preset stacks on a run config"),
])
def test_a_mistake_on_the_command_is_one_line(args, message, tmp_path, monkeypatch, capsys):
    from toyloops.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("error:") and "\n" not in stop.value.code
    assert message in stop.value.code and "Traceback" not in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_every_module_with_a_main_runs_it(tmp_path):
    """`python -m toyloops.engine.cli` and `python -m toyloops.tools.init` do what the command does (neither
    may exit 0 having done nothing)."""
    made = _toyloops("demo", cwd=tmp_path, module="toyloops.tools.init")
    assert made.returncode == 0 and (tmp_path / "demo/demo.yaml").is_file(), made.stderr
    fit = _toyloops("fit", "--config", BLOBS, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
                    cwd=tmp_path, module="toyloops.engine.cli")
    assert fit.returncode == 0 and (tmp_path / "logs/blobs_mlp/version_0/checkpoints/last.ckpt").is_file()
    version = _toyloops("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("toyloops ")


def test_a_stop_while_the_command_starts_is_one_line(tmp_path):
    """SIGINT placed by the import system itself (a module found on PYTHONPATH that signals as it is
    imported): the command ends in one line with 130, before anything is written."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class Hook:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lightning':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Hook())\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "toyloops", "fit", "--config", "blobs_mlp"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == ["stopped by SIGINT while starting: nothing was written"]
    assert not (tmp_path / "logs").exists()


def test_write_new_never_replaces_a_file_that_appeared_first(tmp_path):
    target = tmp_path / "model.onnx"
    write_new(target, b"first")
    with pytest.raises(FileExistsError):
        write_new(target, b"second")
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
