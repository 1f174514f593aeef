"""The product never imports the sandbox: the sandbox is one more cloud behind the same adapter."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "relaunch"


def sandbox_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [f"{path.relative_to(SRC)}:{node.lineno}: {n}" for n in names
                  if n == "relaunch.sandbox" or n.startswith("relaunch.sandbox.")]
    return found


def test_no_product_module_imports_relaunch_sandbox() -> None:
    product = [p for p in SRC.rglob("*.py") if "sandbox" not in p.relative_to(SRC).parts]
    assert len(product) > 40
    assert [hit for p in product for hit in sandbox_imports(p)] == []
