"""The docs tell the truth: the site builds with ``mkdocs build --strict`` and renders in a real browser
(headless Chromium: the tour's plots load, no internal link is broken), every command line of the
README's and the pages' ```bash blocks runs as written, the hand-loop table names real functions
holding the quoted code, and the README stays two screens long."""

import functools
import inspect
import os
import re
import shlex
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import jupytext
import nbformat
import pytest
import torch
from conftest import ROOT

from toyloops.engine import loop_cli
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.loop import HandTrainer
from toyloops.tools.tour import SOURCE as TOUR

README = (ROOT / "README.md").read_text()
PAGES = sorted((ROOT / "docs").glob("*.md"))


def build_site(site: Path, tour: Path) -> None:
    """``mkdocs build --strict`` into ``site``, its tour page rendered from the notebook ``tour``
    (docs/hooks.py; without one it would execute docs/tour.py itself). Built from another folder, as
    the snippet paths are the config's own."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=site.parent, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "TOYLOOPS_TOUR_NOTEBOOK": str(tour)},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_site_builds_strict(tmp_path):
    """Strict: a broken link or anchor, a page left out of the nav, a README section a page includes
    that is gone, or a docstring the API pages cannot read fails the build. The tour page here comes
    from the tour's cells unexecuted (its links are checked all the same); the browser test below
    renders the executed tour."""
    site = tmp_path / "site"
    nbformat.write(jupytext.read(TOUR), tmp_path / "tour.ipynb")
    build_site(site, tmp_path / "tour.ipynb")
    assert (site / "index.html").exists() and (site / "tour/index.html").exists()
    api = (site / "api/trainer/index.html").read_text()  # mkdocstrings read the code: L.Trainer's methods
    for name in ("fit", "validate", "test", "predict"):
        assert f'id="toyloops.engine.loop.HandTrainer.{name}"' in api


class Links(HTMLParser):
    """Every ``href`` and ``src`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.targets += [value for name, value in attrs if name in ("href", "src") and value]


def broken_links(site: Path) -> list[str]:
    """``page -> target`` for each link of a built page into the site that names no file in it."""
    broken = []
    for page in sorted(site.rglob("*.html")):
        url = "/" + page.relative_to(site).as_posix()
        links = Links()
        links.feed(page.read_text())
        for target in links.targets:
            parts = urlsplit(urljoin(url, target))
            if parts.scheme or parts.netloc:  # http(s), mailto, data: not this site's
                continue
            path = site / parts.path.lstrip("/")
            if not (path / "index.html" if path.is_dir() else path).is_file():
                broken.append(f"{url} -> {target}")
    return broken


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/index.html").write_text('<a href="../b/">b</a> <img src="x.png"> <a href="#top">top</a>'
                                           '<a href="https://example.org/">away</a>')
    (tmp_path / "a/x.png").write_bytes(b"")
    assert broken_links(tmp_path) == ["/a/index.html -> ../b/"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b/index.html").write_text("")
    assert broken_links(tmp_path) == []


CHROMIUM = "/usr/bin/chromium"  # Debian's (apt-get install chromium; .ci/run installs it), driven by Playwright
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",  # headless=True: --headless
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = {"site_front.png": ("", None), "site_tour.png": ("tour/", 0), "site_tour_boundary.png": ("tour/", 4)}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.mark.integration
def test_the_site_renders_in_a_browser(executed_tour, tmp_path):
    """The site built with the executed tour, served on loopback, opened in headless Chromium: every page
    and file the browser asks for is there, every image of the front page and the tour has loaded
    (naturalWidth > 0), and no link of any built page is broken. Screenshots of the front page and of
    the tour's plots go to the test's folder; ``TOYLOOPS_UPDATE_SCREENSHOTS=1`` also writes them to
    docs/ (committed: what the site looks like)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM}: missing; apt-get install chromium (as .ci/run does)"
    site = tmp_path / "site"
    build_site(site, executed_tour)
    assert broken_links(site) == []
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    failed, images = [], {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
            page = browser.new_page()
            page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
            for name, (path, image) in SCREENSHOTS.items():
                if page.url != url + path:
                    page.goto(url + path, wait_until="load")
                    images[path] = page.evaluate("Array.from(document.images, i => [i.src, i.naturalWidth])")
                if image is not None:
                    page.locator("article img").nth(image).scroll_into_view_if_needed()
                page.screenshot(path=tmp_path / name)
            title = page.title()  # the tour's, the last page opened
            browser.close()
    finally:
        server.shutdown()
    assert failed == []
    assert title == "A tour (notebook) - toyloops"
    tour = [src for src, _ in images["tour/"] if "/tour_files/" in src]
    assert len(tour) == 10 and [src for path in images for src, width in images[path] if width == 0] == []
    for name in SCREENSHOTS:
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a page drawn, not a blank one
        if os.environ.get("TOYLOOPS_UPDATE_SCREENSHOTS") == "1":
            write_atomic(ROOT / "docs" / name, png)


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
TOUR_LINE = "toyloops tour"  # conftest.py's executed_tour runs it, once for the session's tour tests
# Lines another test runs: the DDP line, the tour line, and docs/diff.md's (tests/test_diff.py holds their output to
# the page's).
ELSEWHERE = {DDP_LINE, TOUR_LINE, *(line for where, line in COMMANDS if where == "docs/diff.md")}


def test_the_tour_command_is_documented_as_the_suite_runs_it():
    assert {line for _, line in COMMANDS if "toyloops tour" in line} == {TOUR_LINE}


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


@pytest.mark.parametrize("command", [line for _, line in COMMANDS if line not in ELSEWHERE],
                         ids=[f"{where}: {line}" for where, line in COMMANDS if line not in ELSEWHERE])
def test_each_documented_command_runs_as_written(command, tmp_path, monkeypatch, capsys):
    """Each line runs in a fresh folder laid out as a clone (configs/, train.py), so logs/ lands
    there. A GPU line on a machine without one must end in one line that says so. (Lines with
    placeholders to fill in, such as multi-node commands, sit in ```text blocks; the DDP line, which
    starts processes of its own, runs in tests/test_reliability.py, and the tour's, which starts a
    Jupyter kernel, in conftest.py's executed_tour.)"""
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
