"""`connectors/` is given plain data and a recorder: it never imports the portal (`app`), the
development stand-ins (`devtools`) or the pipelines."""

from __future__ import annotations

import ast
from pathlib import Path

import connectors

FORBIDDEN = ("app", "devtools", "pipelines", "tests")


def test_connectors_import_nothing_of_the_portal() -> None:
    offending = []
    for path in sorted(Path(connectors.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offending += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in FORBIDDEN
            ]
    assert offending == []
