"""`app/` is what runs in production: it never imports the development stand-ins of `devtools/`,
except where the `portal` command registers the development commands."""

from __future__ import annotations

import ast
from pathlib import Path

import app

APP = Path(app.__file__).parent
# `register_development_commands()`: `portal up`, `dev-token`, `seed`, `mail-sink`.
REGISTRATION_POINT = APP / "cli" / "__init__.py"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _devtools_imports(path: Path) -> list[str]:
    return [
        f"{path.relative_to(APP.parent)}:{line} imports {module}"
        for line, module in _imported_modules(path)
        if module == "devtools" or module.startswith("devtools.")
    ]


def test_nothing_in_app_imports_devtools_but_the_cli_registration_point() -> None:
    offenders = [
        offence
        for path in sorted(APP.rglob("*.py"))
        if path != REGISTRATION_POINT
        for offence in _devtools_imports(path)
    ]
    assert offenders == []


def test_the_registration_point_imports_only_the_devtools_commands() -> None:
    assert [i.split(" imports ")[1] for i in _devtools_imports(REGISTRATION_POINT)] == [
        "devtools.cli"
    ]


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    source = "def f() -> None:\n    from devtools.seeds import seed_demo\n    import devtools\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert [m for _, m in _imported_modules(probe)] == ["devtools.seeds", "devtools"]
