"""Every config key that toyloops' own text names (docstrings, error messages, any string in the
package) exists: a stale name (``model.task`` for a key that was renamed) fails here."""

import ast
import contextlib
import inspect
import io
import re

import lightning as L
import pytest
import yaml
from conftest import ROOT
from torch import nn

from toyloops import Classifier, ToyDataModule
from toyloops.engine.cli import ToyCLI

SECTIONS = ("trainer", "model", "data", "checkpoint", "last_checkpoint", "dashboard", "lr_monitor")
NAMED = re.compile(rf"(?<![\w./-])((?:{'|'.join(SECTIONS)})(?:\.[a-z_][a-z0-9_]*)+)(?![\w(])")
CONFIGS = sorted((ROOT / "toyloops" / "configs").rglob("*.yaml"))
FILES = ("yaml", "py", "txt", "json", "csv", "ckpt")  # data.yaml names a file, not a key
OBJECTS = {"model": Classifier, "model.net": nn.Module, "data": ToyDataModule,
           "trainer": L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)}
# Link targets, which a printed config leaves out: the seed and the facts the data gives the net.
LINKED = {"data.seed", *(f"model.net.{name}" for name in ("in_features", "num_classes", "vocab_size", "seq_len"))}


def flat(tree: object, prefix: str = "") -> set[str]:
    """Every dotted key of a printed config, with and without its ``init_args`` levels."""
    keys = {prefix} if prefix else set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            keys |= flat(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list):
        for item in tree:
            keys |= flat(item, prefix)
    return keys | {key.replace(".init_args", "") for key in keys}


@pytest.fixture(scope="module")
def known_keys() -> set[str]:
    keys = set(LINKED) | {f"data.{name}" for name in inspect.signature(ToyDataModule).parameters}
    base = ROOT / "toyloops" / "configs" / "blobs_mlp.yaml"
    for config in CONFIGS:  # a preset is printed stacked on a base config, as it is used
        printed = io.StringIO()
        stack = [base, config] if {"presets", "zoo"} & set(config.parts) else [config]  # a zoo preset: on blobs_mlp
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
            ToyCLI(args=["fit", *(arg for path in stack for arg in ("--config", str(path))), "--print_config"])
        keys |= flat(yaml.safe_load(printed.getvalue()))
    return keys


def exists(key: str, known_keys: set[str]) -> bool:
    """A config key, a file name, or an attribute of the object the section builds (``model.model_step``)."""
    owner, _, attribute = key.rpartition(".")
    return key in known_keys or attribute in FILES or hasattr(OBJECTS.get(owner), attribute)


def named_keys() -> dict[str, set[str]]:
    """The config keys each module's strings name: every string constant, f-strings' text included."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "toyloops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for key in NAMED.findall(node.value):
                    found.setdefault(key.replace(".init_args", ""), set()).add(path.name)
    return found


def test_every_key_the_package_names_exists(known_keys):
    assert len(known_keys) > 200  # every shipped config was printed
    stale = {key: sorted(files) for key, files in named_keys().items() if not exists(key, known_keys)}
    assert not stale, f"keys named in toyloops/ that no config has: {stale}"


def test_the_check_catches_a_renamed_key(known_keys):
    assert "model.label_smoothing" in known_keys and "data.val_draw" in known_keys
    assert NAMED.findall("set model.task: regression, or data.init_args.n_samples") == ["model.task",
                                                                                          "data.init_args.n_samples"]
    assert "model.task" not in known_keys
