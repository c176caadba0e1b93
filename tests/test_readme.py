"""The README tells the truth: its quick-start commands are the ones CI runs, its Python snippet runs
on a fresh run, and its links into docs/ lead to pages. (Its other commands, its length and the
docs pages are checked in tests/test_docs.py.)"""

import re

from conftest import CIRCLES_STOPS, ROOT

README = (ROOT / "README.md").read_text()


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2 and "train.py fit" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci/run").read_text()


def test_the_library_snippet_runs_on_a_fresh_run(trained, monkeypatch):
    """The snippet lives in the README (docs/library.md includes it from there)."""
    monkeypatch.chdir(trained("lightning", "circles_mlp", *CIRCLES_STOPS).folder)  # the snippet only reads the run
    snippet = README.split("<!-- --8<-- [start:library] -->", 1)[1].split("```python", 1)[1].split("```")[0]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the README's own code, as a reader would paste it
    probs, y = scope["probs"], scope["y"]
    assert probs.shape == (len(y), 2) and (probs.argmax(1) == y).float().mean() > 0.9


def test_each_link_into_docs_leads_to_a_page():
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links, "the README links into docs/"
    assert [link for link in links if not (ROOT / link).is_file()] == []
