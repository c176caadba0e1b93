"""The README tells the truth: its hand-loop table names real functions holding the quoted code,
and its quick-start commands are the ones CI runs."""

import inspect
import re
import shlex
import sys

import pytest
import torch
from conftest import CIRCLES_STOPS, ROOT

from toyloops.engine import loop

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


def test_the_library_snippet_runs_on_a_fresh_run(trained, monkeypatch):
    monkeypatch.chdir(trained("lightning", "circles_mlp", *CIRCLES_STOPS).folder)  # the snippet only reads the run
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


DDP_LINE = next(line for line in _bash_blocks() if "presets/ddp_cpu" in line)  # tests/test_reliability.py runs it


def _as_toyloops_command(part: str) -> list[str]:
    """``python train.py A``, ``python -m toyloops.X A``, ``toyloops X A`` as the toyloops command's
    arguments: the same entry points, run in this process (a process each would pay the seconds of
    importing torch and Lightning again for every line)."""
    words = shlex.split(part)
    if words[:2] == ["python", "train.py"]:
        return words[2:]  # train.py runs the LightningCLI, as `toyloops fit|validate|test|predict`
    if words[:2] == ["python", "-m"] and words[2].startswith("toyloops."):
        return [words[2].removeprefix("toyloops."), *words[3:]]
    assert words[0] == "toyloops", f"the README runs something new: {part!r}; teach this test to run it"
    return words[1:]


@pytest.mark.parametrize("command", [line for line in _bash_blocks() if line != DDP_LINE])
def test_each_readme_command_runs_as_written(command, tmp_path, monkeypatch, capsys):
    """Each line runs in a fresh folder laid out as a clone (configs/, train.py), so logs/ lands
    there. A GPU line on a machine without one must end in one line that says so. (Lines with
    placeholders to fill in, such as multi-node commands, sit in ```text blocks; the DDP line, which
    starts processes of its own, runs in tests/test_reliability.py.)"""
    from toyloops.__main__ import main

    for name in ("configs", "train.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["toyloops"])
    for part in command.split("&&"):
        try:
            main(_as_toyloops_command(part))
            code = 0
        except SystemExit as stop:
            code = stop.code
        said = capsys.readouterr()
        if "gpu" in command and not torch.cuda.is_available():
            assert isinstance(code, str) and code.startswith("error:") and "GPU" in code, (code, said.err[-2000:])
            return
        assert code in (0, None), f"{part} ended with {code!r}:\n{said.out[-2000:]}{said.err[-2000:]}"
