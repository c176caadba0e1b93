"""The README tells the truth: its hand-loop table names real functions holding the quoted code,
and its quick-start commands are the ones CI runs."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli

from toyloops import loop

README = (ROOT / "README.md").read_text()


def test_each_hand_loop_row_names_the_function_that_holds_its_code():
    rows = re.findall(r"^\|[^|\n]+\|[^|\n]+\| `(\w+)` \| `(.+?)` \|$", README, flags=re.MULTILINE)
    assert rows, "the README's hand-loop table is missing"
    for function, snippet in rows:
        source = inspect.getsource(getattr(loop, function))  # AttributeError: the README names a missing function
        assert snippet in source, f"README says {function}() holds `{snippet}`; it does not"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2 and "train.py fit" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci/run").read_text()


def test_the_library_snippet_runs_on_a_fresh_run(in_tmp):
    run_cli("fit", "--config", str(ROOT / "configs/circles_mlp.yaml"), "--trainer.max_epochs=2")
    snippet = README.split("## Using toyloops from another project", 1)[1].split("```python", 1)[1].split("```")[0]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the README's own code, as a reader would paste it
    probs, y = scope["probs"], scope["y"]
    assert probs.shape == (len(y), 2) and (probs.argmax(1) == y).float().mean() > 0.9


def _bash_blocks() -> list[str]:
    """Every command line of the README's ```bash blocks, after the quick start (which CI runs)."""
    body = README.split("## Quick start", 1)[1].split("```", 2)[2]
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()
                  and not line.lstrip().startswith("#")]
    return lines


@pytest.mark.integration
@pytest.mark.parametrize("command", _bash_blocks())
def test_each_readme_command_runs_as_written(command, tmp_path):
    """Run in a fresh folder laid out as a clone (configs/, train.py), so logs/ lands there. A GPU line
    on a machine without one must end in one line that says so. (Lines with placeholders to fill in,
    such as multi-node commands, sit in ```text blocks.)"""
    for name in ("configs", "train.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # this venv's
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if "gpu" in command and not torch.cuda.is_available():
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "GPU" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "Traceback" not in done.stderr
