"""The docs tell the truth: the site builds with ``mkdocs build --strict``, every command line of the
README's and the pages' ```bash blocks runs as written, the hand-loop table names real functions
holding the quoted code, and the README stays two screens long."""

import inspect
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from toyloops.engine import loop_cli
from toyloops.engine.loop import HandTrainer

README = (ROOT / "README.md").read_text()
PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_the_site_builds_strict(tmp_path):
    """Strict: a broken link or anchor, a page left out of the nav, or a README section a page
    includes that is gone fails the build. Built from another folder, as the snippet paths are the
    config's own."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").exists()


def test_the_readme_is_two_screens():
    assert len(README.splitlines()) <= 200, "the README is the first two screens; the rest goes in docs/"


def test_each_hand_loop_row_names_the_function_that_holds_its_code():
    page = (ROOT / "docs/engines.md").read_text()
    rows = re.findall(r"^\|[^|\n]+\|[^|\n]+\| `(\w+)` \| `(.+?)` \|$", page, flags=re.MULTILINE)
    assert rows, "the hand-loop table is missing from docs/engines.md"
    for function, snippet in rows:
        holder = loop_cli if function in ("run", "build", "instantiate") else HandTrainer
        source = inspect.getsource(getattr(holder, function))  # AttributeError: the table names a missing method
        assert snippet in source, f"docs/engines.md says {function}() holds `{snippet}`; it does not"


def command_lines(text: str) -> list[str]:
    """Every command line of a Markdown text's ```bash blocks: continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()
                  and not line.lstrip().startswith("#")]
    return lines


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for the README after its quick start (which CI runs) and every docs page."""
    after_quick_start = README.split("## Quick start", 1)[1].split("```", 2)[2]
    texts = {"README.md": after_quick_start, **{f"docs/{page.name}": page.read_text() for page in PAGES}}
    return [(where, line) for where, text in texts.items() for line in command_lines(text)]


COMMANDS = documented_commands()
DDP_LINE = next(line for _, line in COMMANDS if "presets/ddp_cpu" in line)  # tests/test_reliability.py runs it


def _as_toyloops_command(part: str) -> list[str]:
    """``python train.py A`` and ``toyloops X A`` as the toyloops command's arguments: the same entry
    points, run in this process (a process each would pay the seconds of importing torch and
    Lightning again for every line)."""
    words = shlex.split(part)
    if words[:2] == ["python", "train.py"]:
        return words[2:]  # train.py runs the LightningCLI, as `toyloops fit|validate|test|predict`
    assert words[:2] != ["python", "-m"], f"write `toyloops ...`, not a module path that moves: {part!r}"
    assert words[0] == "toyloops", f"the docs run something new: {part!r}; teach this test to run it"
    return words[1:]


@pytest.mark.parametrize("command", [line for _, line in COMMANDS if line != DDP_LINE],
                         ids=[f"{where}: {line}" for where, line in COMMANDS if line != DDP_LINE])
def test_each_documented_command_runs_as_written(command, tmp_path, monkeypatch, capsys):
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
