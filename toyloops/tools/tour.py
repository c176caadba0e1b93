"""toyloops tour [--output tour.ipynb]   (the notebook tour, executed, from a clone of toyloops)

``docs/tour.py`` is the tour: a jupytext notebook in percent format, the one copy in git. This command
runs it top to bottom in a fresh Jupyter kernel (jupytext reads it, nbclient executes it) and writes the
executed notebook, outputs and plots included, to ``--output``, to open in any notebook viewer
(``jupyter lab tour.ipynb``). The docs site renders the same executed notebook (``docs/hooks.py``), and
``tests/test_tour.py`` runs this command and checks what the notebook shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ipykernel  # noqa: F401 - the kernel nbclient starts ("python3") is ipykernel's: missing, say so now
import jupytext
import nbformat
import zmq
from nbclient import NotebookClient
from traitlets.config import Config

from toyloops.engine import runs
from toyloops.engine.checkpoints import write_new
from toyloops.rules.errors import ConfigError
from toyloops.tools.export import EXISTS

SOURCE = Path(__file__).resolve().parents[2] / "docs" / "tour.py"  # in a clone; a wheel ships no docs/
CELL_TIMEOUT = 600  # seconds a cell may run before nbclient stops the tour (the whole tour takes ~20 s)


def execute(source: Path = SOURCE) -> nbformat.NotebookNode:
    """``source`` as a notebook, run top to bottom in a fresh kernel started
    in its folder. A cell that fails raises nbclient's ``CellExecutionError``: an assertion of the tour
    that no longer holds is a bug, with the cell's traceback."""
    if not source.is_file():
        raise ConfigError(f"{source}: no such file; the tour is docs/tour.py of a clone of toyloops "
                          "(git clone the repository, then run toyloops tour there)")
    notebook = jupytext.read(source)
    # CurveZMQ keys for the kernel's loopback sockets where pyzmq has them (ipykernel declares support and
    # otherwise warns, on every run, that the TCP traffic is unencrypted)
    encryption = Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})
    NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", config=encryption,
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    return notebook


def run(args: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="toyloops tour", description=__doc__.splitlines()[0],
                                     allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--output", default="tour.ipynb", help="where the executed notebook goes (a new file)")
    try:
        opts, unknown = parser.parse_known_args(list(sys.argv[1:] if args is None else args))
    except argparse.ArgumentError as err:
        raise ConfigError(str(err)) from None
    if unknown:
        raise ConfigError(f"toyloops tour takes --output PATH only, got {' '.join(unknown)!r}")
    output = Path(opts.output)
    if output.suffix != ".ipynb":
        raise ConfigError(f"--output {str(output)!r}: expected a path ending in .ipynb")
    if output.exists():  # checked before the tour runs, and again as it is written (write_new)
        raise ConfigError(EXISTS.format(output))
    notebook = execute()
    try:
        write_new(output, nbformat.writes(notebook).encode())
    except FileExistsError:
        raise ConfigError(EXISTS.format(output)) from None
    print(f"wrote {output}: the tour, executed; open it in Jupyter (jupyter lab {output}) or any notebook viewer")
    return output


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)


if __name__ == "__main__":
    main()
