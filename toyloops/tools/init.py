"""toyloops init DIR: start a new project that owns its code and uses toyloops as its engine.

It writes ``DIR/`` with a net, a LightningModule and a data module of its own (``<package>/models.py``,
``<package>/data.py``: Lightning and torch only, no toyloops import), ``<package>.yaml`` naming them by
``class_path``, a search space, ``train.py``, a README with its commands, and a passing pytest file.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shlex
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from toyloops import __version__
from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.rules.errors import ConfigError

TEMPLATE = Path(__file__).parent / "template"
FILES = {  # template file -> where it goes in the new project ({package}: the project's package)
    "README.md": "README.md", "pyproject.toml": "pyproject.toml", "train.py.txt": "train.py",
    "config.yaml": "{package}.yaml", "gitignore.txt": ".gitignore", "models.py.txt": "{package}/models.py",
    "data.py.txt": "{package}/data.py", "space.yaml": "space.yaml", "test_project.py.txt": "tests/test_project.py",
}

# PEP 508's distribution name (packaging's rule): ASCII letters and digits, with . _ - inside.
DISTRIBUTION_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", re.IGNORECASE)


def package_name(root: Path) -> str:
    """The new project's Python package: its folder's name as an identifier (``my-project`` -> ``my_project``)."""
    return re.sub(r"[.-]", "_", root.resolve().name).lower()


def check_name(root: Path) -> None:
    """The folder's name must make a distribution name, an importable package and files the filesystem takes."""
    name, package = root.resolve().name, package_name(root)
    if not DISTRIBUTION_NAME.fullmatch(name):
        raise ConfigError(f"project name {name!r} is not a valid distribution name (PEP 508): use ASCII letters "
                          "and digits, with . _ - between them (no spaces, accents or quotes)")
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ConfigError(f"project name {name!r} makes the package {package!r}, which Python cannot import: "
                          + ("it is a keyword" if package.isidentifier() else "it starts with a digit")
                          + "; choose another name")
    runs.check_name_length("project name", name, root.resolve().parent, suffix=".yaml")  # its config: <package>.yaml


def init(directory: str) -> Path:
    """Write the new project into ``directory``, which must not exist yet or be empty."""
    root = Path(directory)
    check_name(root)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty: toyloops init writes only into a new or empty folder")
    name, package = root.resolve().name, package_name(root)
    if importlib.util.find_spec(package) is not None:  # its own package would hide that one, or be hidden
        raise ConfigError(f"project name {name!r} makes the package {package!r}, which would clash with the "
                          f"installed module of that name: choose another name")
    runs.check_writable(root, "project folder")
    version = __version__ if __version__[0].isdigit() and "+" not in __version__ else "0.1"
    for source, target in FILES.items():
        text = (TEMPLATE / source).read_text().replace("{name}", name).replace("{package}", package) \
            .replace("{toyloops_version}", version)
        write_atomic(root / target.format(package=package), text.encode())
    write_atomic(root / package / "__init__.py", f'"""{name}: a toyloops project."""\n'.encode())
    return root


def run(args: list[str] | None = None) -> Path:
    parser = ArgumentParser(prog="toyloops init", exit_on_error=False, description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the new project's folder (new, or empty)")
    root = init(parser.parse_args(list(sys.argv[1:] if args is None else args)).directory)
    print(f"created {root}: cd {shlex.quote(str(root))} && pip install -e . && "
          f"python train.py fit --config {package_name(root)}.yaml")
    return root


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)


if __name__ == "__main__":
    main()
