"""The catalog reads stock from inventory; inventory never reads the catalog (no import loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import app

APP = Path(app.__file__).parent


def imported_modules(package: str) -> set[str]:
    modules: set[str] = set()
    for path in (APP / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_inventory_does_not_import_the_catalog() -> None:
    assert not {m for m in imported_modules("inventory") if m.startswith("app.catalog")}


def test_the_catalog_reads_inventory_only_through_its_repository() -> None:
    from_inventory = {m for m in imported_modules("catalog") if m.startswith("app.inventory")}

    assert from_inventory <= {"app.inventory", "app.inventory.repository"}
