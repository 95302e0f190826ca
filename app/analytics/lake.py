"""Where the lake keeps each mart, and a DuckDB session over it.

Layout (LAKE_URL, default DATA_DIR/lake; a folder or `s3://bucket/prefix`):

    <lake>/<mart>/month=YYYY-MM/part-*.parquet   marts with a date: one folder per month
    <lake>/<mart>/current/part-*.parquet         marts without one (dimensions, snapshots)

The export (pipelines/lake) writes it; readers see it through pyarrow datasets, so the same code
reads a local folder and S3 without DuckDB extensions (they would be downloaded at run time).
Names starting with `.` or `_` are the export's work in progress and are never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs

CURRENT = "current"
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def month_folder(month: str) -> str:
    """`month=YYYY-MM`, the Hive-style folder of one month (DuckDB and pyarrow read `month`
    back as a column)."""
    if not _MONTH.fullmatch(month):
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    return f"month={month}"


@dataclass(frozen=True)
class Lake:
    """The lake's filesystem and its root path on it."""

    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def at(cls, url: str) -> Lake:
        """A local folder (created when missing) or a URI pyarrow knows (`s3://...`)."""
        if "://" not in url:
            local = pafs.LocalFileSystem()
            local.create_dir(url, recursive=True)
            return cls(local, url.rstrip("/") or "/")
        filesystem, root = pafs.FileSystem.from_uri(url)
        return cls(filesystem, root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def marts(self) -> list[str]:
        """The marts the lake holds (folders with a valid name), sorted."""
        try:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.root))
        except FileNotFoundError:
            return []
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.Directory and _NAME.fullmatch(info.base_name)
        )

    def dataset(self, mart: str) -> ds.Dataset:
        """Every Parquet file of the mart; `month` is a column for the monthly ones (unless
        the mart has a `month` column of its own, which then stays as it is)."""
        files = ds.dataset(self.path(mart), filesystem=self.filesystem, format="parquet")
        if "month" in files.schema.names or not files.files:
            return files
        return ds.dataset(
            self.path(mart), filesystem=self.filesystem, format="parquet", partitioning="hive"
        )


def connect(lake: Lake) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with one view per mart of the lake, and the marts' names; it can
    read nothing but those views."""
    connection = duckdb.connect(":memory:")
    marts = []
    for mart in lake.marts():
        dataset = lake.dataset(mart)
        if not dataset.files:
            continue
        connection.register(mart, dataset)
        marts.append(mart)
    # The session sees the lake and nothing else: no other file, no extension download, no
    # attached database, and the settings cannot be turned back (results leave by stdout).
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection, marts
