"""Where test helpers live: a helper more than one module needs is in `tests/fixtures/`, so no
module imports a conftest (pytest loads those itself) or another test module (importing one
collects its tests twice and ties unrelated tests together), and the fixtures depend on nothing
else under `tests/`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tests", "benchmarks")


def modules() -> Iterator[tuple[str, Path]]:
    for folder in SCANNED:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            yield path.relative_to(PROJECT_ROOT).as_posix(), path


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module an import statement of `path` names, at any depth (function bodies too);
    `from package import name` yields `package.name` as well, since `name` may be a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def is_test_module_or_conftest(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and (parts[-1] == "conftest" or parts[-1].startswith("test_"))


def test_no_module_imports_a_conftest_or_a_test_module() -> None:
    offending = [
        f"{name}:{line} imports {module}"
        for name, path in modules()
        for line, module in imported_modules(path)
        if is_test_module_or_conftest(module)
    ]
    assert offending == [], "move the shared helper to tests/fixtures/:\n" + "\n".join(offending)


def test_the_fixtures_import_nothing_from_the_test_packages() -> None:
    fixtures = PROJECT_ROOT / "tests" / "fixtures"
    offending = [
        f"{path.relative_to(PROJECT_ROOT).as_posix()}:{line} imports {module}"
        for path in sorted(fixtures.rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "tests" and not module.startswith("tests.fixtures")
    ]
    assert offending == [], "\n".join(offending)


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The checks above pass because nothing offends, not because they look in the wrong place."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import tests.conftest\n"
        "from tests.payments.test_intents import create_intent\n"
        "from tests.notifications import conftest\n"
        "def later():\n"
        "    from tests.payments import test_webhook\n"
        "from tests.fixtures.stripe import signed\n"
        "from tests.fixtures import testing_helpers\n",
        encoding="utf-8",
    )
    found = sorted(
        {(line, m) for line, m in imported_modules(sample) if is_test_module_or_conftest(m)}
    )
    assert found == [
        (1, "tests.conftest"),
        (2, "tests.payments.test_intents"),
        (3, "tests.notifications.conftest"),
        (5, "tests.payments.test_webhook"),
    ]
    scanned = {name for name, _ in modules()}
    assert {"tests/conftest.py", "tests/payments/conftest.py", "benchmarks/orders.py"} <= scanned
