"""The site's tour page (an MkDocs hook, named in mkdocs.yml): ``docs/tour.py`` executed in a Jupyter
kernel (``toyloops tour``'s :func:`~toyloops.tools.tour.execute`), then converted by nbconvert to Markdown
and PNG files, added to the build as ``tour.md`` and ``tour_files/*.png``. So the page goes through
MkDocs like any other (``--strict`` checks its links), and a tour that no longer runs fails the build.

``TOYLOOPS_TOUR_NOTEBOOK=path.ipynb`` renders that notebook instead of executing the tour again: the
suite builds the site from the one notebook it executed (``tests/test_docs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from mkdocs.structure.files import File, Files
from nbconvert import MarkdownExporter

_executed: dict[tuple[str, int], Any] = {}  # (path, mtime) -> notebook: `mkdocs serve` rebuilds on every edit


def tour_notebook(source: Path) -> Any:
    given = os.environ.get("TOYLOOPS_TOUR_NOTEBOOK")
    if given:
        return nbformat.read(given, as_version=4)
    from toyloops.tools.tour import execute

    key = (str(source), source.stat().st_mtime_ns)
    if key not in _executed:
        _executed.clear()
        _executed[key] = execute(source)
    return _executed[key]


def on_files(files: Files, config: Any) -> Files:
    notebook = tour_notebook(Path(config.docs_dir) / "tour.py")
    markdown, resources = MarkdownExporter().from_notebook_node(notebook, resources={"output_files_dir": "tour_files"})
    files.append(File.generated(config, "tour.md", content=markdown))
    for name, data in resources.get("outputs", {}).items():
        files.append(File.generated(config, name, content=data))
    return files
