"""Values past what the machine takes: names and paths too long for the filesystem, environment values out of
range. Each is one line naming the key or variable, the value (or its length) and the limit, before anything
is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import BLOBS_SHORT

from toyloops.engine import loop_cli
from toyloops.tools import init, seeds, sweep


def _one_line(main, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    message = str(exit_.value.code)  # what the process prints to stderr; a string exits with status 1
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("main", [seeds.main, sweep.main], ids=["seeds", "sweep"])
def test_a_name_too_long_for_the_filesystem_is_one_line_and_writes_nothing(main, in_tmp):
    limit = os.pathconf(in_tmp, "PC_NAME_MAX")
    args = ["--config", "blobs_mlp", "--space", "mlp"] if main is sweep.main else ["--config", "blobs_mlp"]
    message = _one_line(main, [*args, "--name", "n" * (limit + 1)])
    assert message == f"error: --name: a name of {limit + 1} bytes is too long: at most {limit} bytes on this " \
                      "filesystem"
    assert list(in_tmp.iterdir()) == []


def _folder_of_length(parent: Path, length: int) -> Path:
    """A folder whose absolute path is ``length`` bytes (its names of at most 200)."""
    folder = parent
    while len(bytes(folder)) < length - 201:
        folder /= "d" * 200
    folder /= "d" * (length - len(bytes(folder)) - 1)
    folder.mkdir(parents=True)
    return folder


def test_init_in_a_folder_whose_files_would_pass_path_max_is_one_line_and_writes_nothing(tmp_path):
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    deep = _folder_of_length(tmp_path, path_max - 21)  # the project folder fits; its tests/test_project.py would not
    message = _one_line(init.main, [str(deep / "proj")])
    assert "too long" in message and f"{len(bytes(deep / 'proj'))} bytes" in message
    assert list(deep.iterdir()) == []


def test_a_project_name_is_held_to_name_max_with_its_config_file(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") - len(".yaml")
    message = _one_line(init.main, [str(tmp_path / ("p" * (limit + 1)))])
    assert message == (f"error: project name: a name of {limit + 1} bytes is too long: at most {limit} bytes on this "
                       "filesystem, so that <name>.yaml fits")
    assert init.init(str(tmp_path / ("p" * limit))).is_dir()


CORES = os.cpu_count() or 1


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("TOYLOOPS_THREADS", "abc", f"expected a whole number of threads from 1 to {CORES}"),
    ("TOYLOOPS_THREADS", "0", "from 1 to"),
    ("TOYLOOPS_THREADS", "²", "from 1 to"),  # a digit to str.isdigit, not to int()
    ("TOYLOOPS_THREADS", str(CORES + 1), "(this machine's CPUs)"),
    ("TOYLOOPS_THREADS", "99999999999", "from 1 to"),
    ("OMP_NUM_THREADS", "abc", "expected a whole number of threads >= 1"),
    ("OMP_NUM_THREADS", "0", "expected a whole number of threads >= 1"),
    ("TOYLOOPS_DEBUG", "yes", "expected 1 (errors with their traceback) or 0"),
])
def test_an_environment_value_out_of_range_is_one_line_naming_it(variable, value, allowed, in_tmp, monkeypatch):
    monkeypatch.delenv("TOYLOOPS_THREADS")  # conftest sets it; each case sets its own variable
    monkeypatch.setenv(variable, value)
    message = _one_line(loop_cli.main, ["fit", "--config", "blobs_mlp", *BLOBS_SHORT])
    assert message.startswith(f"error: {variable}={value!r}: ") and allowed in message, message
    assert not (in_tmp / "logs").exists()


@pytest.mark.parametrize(("variable", "value"), [("TOYLOOPS_THREADS", "1"), ("OMP_NUM_THREADS", "1,1"),
                                                  ("TOYLOOPS_DEBUG", "0"), ("TOYLOOPS_DEBUG", "")])
def test_the_values_allowed_run(variable, value, in_tmp, monkeypatch):
    monkeypatch.setenv(variable, value)
    assert loop_cli.run(["fit", "--config", "blobs_mlp", *BLOBS_SHORT, "--trainer.max_epochs=1"])


@pytest.mark.parametrize("command", [["validate", "--config", "blobs_mlp"], ["export"]], ids=["validate", "export"])
def test_a_checkpoint_path_that_is_a_pipe_is_one_line_not_a_hang(command, tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the path's kind is checked first, in the
    one loader every command uses (rules.specs.load_checkpoint; the hand loop's validate goes through it too)."""
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe.ckpt")
    done = subprocess.run([sys.executable, "-m", "toyloops", *command, "--ckpt_path", "pipe.ckpt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # a hang fails here instead of blocking CI
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("error: ckpt_path='pipe.ckpt' is not a regular file (a pipe, "
                                                    "socket or device): expected a checkpoint file")
