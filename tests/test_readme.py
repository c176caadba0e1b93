"""The README tells the truth: its hand-loop table names real functions holding the quoted code,
and its quick-start commands are the ones CI runs."""

import inspect
import re

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
