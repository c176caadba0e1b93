"""toyloops reaches its dependencies through their public APIs and extension points only.

Every module under ``toyloops/`` is read as a syntax tree and refused when it:

- imports ``unittest.mock`` or ``mock``;
- imports a private name or module (``from lightning.pytorch.trainer.call import _call_callback_hooks``,
  ``import torch._dynamo``) from outside toyloops;
- reads or writes a private attribute, ``<expr>._name``, of anything but ``self``/``cls``
  (``trainer._x``, ``writer._x``, ``super()._x``), or the same through ``getattr``/``setattr``/
  ``hasattr``/``delattr`` with a literal name;
- uses ``self._name`` or ``cls._name`` that no toyloops class defines (a private a Lightning base
  class set: ``self._last_global_step_saved`` in a ModelCheckpoint subclass);
- touches SummaryWriter's undocumented insides (``.file_writer``, ``.event_writer``);
- replaces a module's attribute (``setattr(module, ...)``, ``module.name = ...``, ``del
  module.name``, ``sys.argv[1:] = ...``), an object's class (``obj.__class__ = ...``), or an
  attribute of an object that is not ``self`` with a function: a lambda, a function defined in
  the enclosing one, a wrapper of that same attribute (``opt.zero_grad = wrap(opt.zero_grad)``),
  or through ``setattr`` with a computed name;
- defines ``__getattr__`` in a class (a wrapper that passes a library object's attributes on).
  A module-level ``__getattr__`` (PEP 562, ``toyloops/__init__.py``'s lazy names) is fine.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toyloops"
INTERNALS = {"file_writer", "event_writer"}  # torch.utils.tensorboard's SummaryWriter/FileWriter, undocumented
MOCKS = {"mock", "unittest.mock"}
OWNERS = {"self", "cls"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def own_privates(trees: list[ast.Module]) -> set[str]:
    """The private names toyloops' own classes define: ``self._x = ...``, ``_x = ...`` in a class
    body, ``def _x``."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    targets = item.targets if isinstance(item, ast.Assign) else \
                        [item.target] if isinstance(item, ast.AnnAssign) else []
                    names |= {t.id for t in targets if isinstance(t, ast.Name) and _private(t.id)}
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                        names.add(item.name)
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) \
                            and sub.value.id in OWNERS and _private(sub.attr):
                        names.add(sub.attr)
    return names


def _module_names(tree: ast.Module) -> set[str]:
    """Names bound to modules: ``import a.b`` binds ``a``, ``from pkg import mod`` binds ``mod``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {alias.asname or alias.name for alias in node.names
                      if _is_module(f"{node.module}.{alias.name}")}
    return names


def _pairs(node: ast.Assign) -> list[tuple[ast.expr, ast.expr]]:
    """(target, value) pairs of an assignment, ``a.x, b.y = f, g`` unpacked."""
    pairs = []
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                and len(target.elts) == len(node.value.elts):
            pairs += zip(target.elts, node.value.elts, strict=True)
        else:
            pairs.append((target, node.value))
    return pairs


def violations(source: str, where: str = "<snippet>", own: set[str] | None = None) -> list[str]:
    """What in ``source`` breaks the rules above, one line each (``where:line: what``)."""
    tree = ast.parse(source)
    own = own_privates([tree]) if own is None else own
    modules = _module_names(tree)
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{node.lineno}: {what}")

    local_functions = {inner.name for outer in ast.walk(tree) if isinstance(outer, ast.FunctionDef)
                       for inner in ast.walk(outer) if inner is not outer and isinstance(inner, ast.FunctionDef)}
    class_scopes = {id(item) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for item in node.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MOCKS:
                    flag(node, f"imports {alias.name}")
                elif not alias.name.startswith("toyloops") and any(map(_private, alias.name.split("."))):
                    flag(node, f"imports the private module {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in MOCKS or (node.module == "unittest" and any(a.name == "mock" for a in node.names)):
                flag(node, f"imports mock from {node.module}")
            elif not node.module.startswith("toyloops"):
                for name in [*node.module.split("."), *(a.name for a in node.names)]:
                    if _private(name):
                        flag(node, f"imports the private {name} from {node.module}")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in INTERNALS:
                flag(node, f"SummaryWriter internals: .{node.attr}")
            elif _private(node.attr) and owner not in OWNERS:
                flag(node, f"private attribute {ast.unparse(node)}")
            elif _private(node.attr) and node.attr not in own:
                flag(node, f"{ast.unparse(node)}: a private name no toyloops class defines (a base class's?)")
            if owner in modules and isinstance(node.ctx, ast.Store | ast.Del):
                flag(node, f"replaces the module attribute {ast.unparse(node)}")
            if node.attr == "__class__" and isinstance(node.ctx, ast.Store):
                flag(node, f"replaces the class of {ast.unparse(node.value)}")
        elif isinstance(node, ast.Assign):
            for target, value in _pairs(node):
                if isinstance(target, ast.Attribute) and not (isinstance(target.value, ast.Name)
                                                              and target.value.id in OWNERS):
                    replaced = ast.unparse(target)
                    wraps_itself = isinstance(value, ast.Call) and any(ast.unparse(a) == replaced for a in value.args)
                    local = isinstance(value, ast.Name) and value.id in local_functions
                    if isinstance(value, ast.Lambda) or local or wraps_itself:
                        flag(node, f"replaces {replaced} on an object it does not own (monkeypatching)")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del) \
                and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                and node.value.value.id in modules:
            flag(node, f"changes the module attribute {ast.unparse(node.value)} in place")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            first = node.args[0]
            first_owner = first.id if isinstance(first, ast.Name) else None
            if node.func.id == "setattr" and first_owner in modules:
                flag(node, f"setattr on the module {first_owner}")
            elif node.func.id == "setattr" and first_owner not in OWNERS and len(node.args) > 1 \
                    and not isinstance(node.args[1], ast.Constant):
                flag(node, f"setattr({ast.unparse(first)}, <a computed name>): replaces what another object defines")
            if node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                name = node.args[1].value
                if (_private(name) and first_owner not in OWNERS) or name in INTERNALS:
                    flag(node, f"{node.func.id}({ast.unparse(first)}, {name!r})")
        elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and id(node) in class_scopes:
            flag(node, "a class's __getattr__ (a wrapper passing on a wrapped object's attributes)")
    return found


def _package_sources() -> dict[str, str]:
    return {str(path.relative_to(PACKAGE.parent)): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_under_toyloops_uses_a_private_api_mocks_or_monkeypatching():
    sources = _package_sources()
    assert len(sources) > 20  # the walk found the package
    own = own_privates([ast.parse(text) for text in sources.values()])
    found = [line for where, text in sources.items() for line in violations(text, where, own)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(("snippet", "what"), [
    ("from unittest import mock", "imports mock"),
    ("import unittest.mock", "imports unittest.mock"),
    ("from unittest.mock import patch", "imports mock"),
    ("from lightning.pytorch.trainer.call import _call_callback_hooks", "private _call_callback_hooks"),
    ("import torch._dynamo", "private module torch._dynamo"),
    ("def f(trainer):\n    return trainer._logger_connector", "private attribute trainer._logger_connector"),
    ("class A:\n    def f(self):\n        return super()._serve()", "private attribute super()._serve"),
    ("def f(writer):\n    writer.file_writer.flush()", "internals: .file_writer"),
    ("def f(w):\n    return w.event_writer", "internals: .event_writer"),
    ("from toyloops.engine import loop\n\ndef f(g):\n    setattr(loop, 'optimizer_step', g)", "setattr on the module"),
    ("import sys\nsys.argv = ['train.py']", "module attribute sys.argv"),
    ("import torch\ntorch.save = print", "module attribute torch.save"),
    ("import sys\nsys.argv[1:] = ['fit']", "module attribute sys.argv in place"),
    ("def f(batches, T):\n    batches.__class__ = T", "replaces the class of batches"),
    ("def f(cb):\n    setattr(cb, '_hidden', None)", "setattr(cb, '_hidden')"),
    ("def f(cb, name):\n    setattr(cb, name, None)", "setattr(cb, <a computed name>)"),
    ("def f(optimizer, wrap):\n    optimizer.zero_grad = wrap(optimizer.zero_grad)", "replaces optimizer.zero_grad"),
    ("def f(model):\n    model.log = lambda *a: None", "replaces model.log"),
    ("def f(model, dm):\n    def step(batch):\n        return batch\n\n    model.model_step, dm.size = step, 3",
     "replaces model.model_step"),
    ("def f(t):\n    return getattr(t, '_accelerator_connector')", "getattr(t, '_accelerator_connector')"),
    ("class Held:\n    def __getattr__(self, name):\n        return getattr(self.events, name)", "__getattr__"),
    ("from lightning.pytorch.callbacks import ModelCheckpoint\n\nclass Last(ModelCheckpoint):\n"
     "    def f(self):\n        return self._last_global_step_saved", "no toyloops class defines"),
])
def test_the_rule_catches_each_kind_of_violation(snippet, what):
    found = violations(snippet)
    assert len(found) == 1 and what in found[0], found


def test_the_rule_lets_public_code_and_our_own_privates_through():
    clean = '''
import sys
import warnings
from toyloops.engine import loop


def __getattr__(name):  # a module's lazy names (PEP 562)
    return name


class Mine:
    _cache = None

    def __init__(self):
        self._seen = 0

    def f(self, trainer, writer):
        self._seen += 1
        writer.flush()
        loop.train_epoch(trainer)
        args = list(sys.argv[1:])
        return self._cache, type(trainer).__name__, getattr(trainer, "logger", None), args
'''
    assert violations(clean) == []
