"""The README tells the truth: its hand-loop line references and its quick-start commands."""

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_hand_loop_line_references_point_at_the_named_code():
    rows = re.findall(r"\(toyloops/loop\.py#L(\d+)-L(\d+)\) \| `(.+?)` \|", README)
    assert len(rows) >= 15
    lines = (ROOT / "toyloops/loop.py").read_text().splitlines()
    for start, end, snippet in rows:
        text = "\n".join(lines[int(start) - 1 : int(end)])
        assert snippet in text, f"README says L{start}-L{end} holds `{snippet}`, it holds:\n{text}"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2 and "train.py fit" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci/run").read_text()
