"""The package layout's rules that import-linter does not check: vaebias modules are
imported at module level (so that the layers contract sees every import), and no module
uses another module's private names."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vaebias"


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vaebias"):
            yield node, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vaebias"):
                    yield node, a.name, []
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            yield node, "." * node.level + (node.module or ""), [a.name for a in node.names]


def test_no_function_local_or_relative_vaebias_imports():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node, module, _ in _imports(tree):
            if id(node) not in top or module.startswith("."):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno} {module}")
    assert not bad, "imports of vaebias modules must be absolute and at module level:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for node, module, names in _imports(ast.parse(path.read_text())):
            bad += [f"{path.relative_to(SRC)}:{node.lineno} {module}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_layout_test_detects_a_local_import(tmp_path):
    tree = ast.parse("import os\n\ndef f():\n    from vaebias.data import load_dataset\n")
    top = set(map(id, tree.body))
    assert [m for n, m, _ in _imports(tree) if id(n) not in top] == ["vaebias.data"]
