"""The dbt manifest the assets are built from, produced offline by `dbt parse` when it is
missing or older than the project's files (at load time of the code location; `make install`
and `portal up` never need the internet for it)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from app.config import get_settings
from pipelines.dbt_project import DBT_PROJECT_DIR, run_dbt

MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
# `dbt parse` reads no data; the profile only needs a well-formed URL when none is configured.
_PARSE_URL = "postgresql://portal@127.0.0.1:5432/portal"
_SOURCES = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests")


def _newest_source() -> float:
    newest = 0.0
    for name in _SOURCES:
        path = DBT_PROJECT_DIR / name
        files = [path] if path.is_file() else list(path.rglob("*")) if path.exists() else []
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest


def is_stale(manifest: Path = MANIFEST) -> bool:
    return not manifest.exists() or manifest.stat().st_mtime < _newest_source()


def ensure_manifest() -> Path:
    """The manifest, parsed first when stale. The webserver and the daemon load the code
    location at the same time: a lock keeps them from writing it together."""
    if not is_stale():
        return MANIFEST
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    with (MANIFEST.parent / ".parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_stale():
            settings = get_settings()
            url = settings.database_migration_url or settings.database_url or _PARSE_URL
            result = run_dbt(["parse", "--quiet"], url)
            if result.returncode != 0:
                raise RuntimeError("dbt parse failed:\n" + (result.stdout + result.stderr)[-2000:])
    return MANIFEST
