"""The layers import downwards only: rules <- core <- engine <- tools (DESIGN.md; rules: what every
layer follows, the core included: errors, checkpoint safety, the batches both engines see). Walks every import
statement of every module, those inside functions too."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "toyloops"
BELOW = {"rules": (), "core": ("rules",), "engine": ("rules", "core"), "tools": ("rules", "core", "engine")}


def imported_layers(path: Path) -> set[str]:
    """The layers (rules, core, engine, tools) a module imports from, anywhere in its code; the top level
    ``toyloops`` re-exports the core."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "toyloops":
                found.add(parts[1] if len(parts) > 1 and parts[1] in BELOW else "core")
    return found


@pytest.mark.parametrize("layer", sorted(BELOW))
def test_a_layer_imports_only_the_layers_below_it(layer):
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules
    for module in modules:
        above = imported_layers(module) - {layer, *BELOW[layer]}
        assert not above, f"{module.relative_to(ROOT)} imports {sorted(above)}, above the {layer} layer"


def test_the_walk_sees_imports_inside_functions(tmp_path):
    snippet = tmp_path / "m.py"
    snippet.write_text("def f():\n    from toyloops.engine import runs\n    import toyloops.tools.sweep\n")
    assert imported_layers(snippet) == {"engine", "tools"}

