"""Export one mart (or one month of it) from PostgreSQL to Parquet in the lake.

Rows stream out of PostgreSQL with `COPY (SELECT ...) TO STDOUT (FORMAT csv)` straight into
pyarrow's streaming CSV reader, typed from PostgreSQL's column types (never the whole mart in
memory, no value converted in Python), and are written with pyarrow. A month is written
to a hidden work folder first and then swapped in, so a re-export replaces the month whole and
readers (who skip hidden names) never see half of it. On object stores (S3), which have no
rename, the new files get names of their own and the old ones are deleted after the new ones
are complete: a reader in that moment may see both.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from psycopg import sql

from app.analytics.lake import CURRENT, Lake, month_folder

SCHEMA = "analytics"

# PostgreSQL type name -> Arrow type (numeric with a declared scale keeps it as a decimal).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "uuid": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "interval": pa.duration("us"),
}


@dataclass(frozen=True)
class Export:
    mart: str
    folder: str  # path in the lake
    rows: int
    files: int


def _arrow_type(column: psycopg.Column, type_name: str) -> pa.DataType:
    if type_name == "numeric":
        if column.precision is not None and column.scale is not None:
            return pa.decimal128(column.precision, column.scale)
        return pa.float64()
    return _ARROW_TYPES.get(type_name, pa.string())


class _CopyStream(io.RawIOBase):
    """The bytes of a running `COPY ... TO STDOUT` as a readable file, for pyarrow."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._chunks = iter(copy)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def exhausted(self) -> bool:
        """True when COPY sent nothing (more): pyarrow refuses an empty CSV."""
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return True
            self._pending = memoryview(bytes(chunk))
        return False

    def readinto(self, buffer: Any) -> int:
        """As many bytes as fit: COPY hands over one row at a time, pyarrow wants blocks."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and not self.exhausted():
            size = min(len(view) - filled, len(self._pending))
            view[filled : filled + size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled += size
        return filled


def _csv_options(schema: pa.Schema) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """PostgreSQL's CSV: NULL is an unquoted empty field, an empty string a quoted one;
    booleans are t/f. Durations travel as whole microseconds (see `_select_list`)."""
    read = pacsv.ReadOptions(column_names=schema.names, block_size=8 << 20)
    convert = pacsv.ConvertOptions(
        column_types={
            field.name: pa.int64() if pa.types.is_duration(field.type) else field.type
            for field in schema
        },
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    return read, convert


def _batches(copy: psycopg.Copy, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    read, convert = _csv_options(schema)
    source = _CopyStream(copy)
    if source.exhausted():
        return
    stream = pa.PythonFile(io.BufferedReader(source, 1 << 20), mode="r")
    reader = pacsv.open_csv(
        stream,
        read_options=read,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=convert,
    )
    for batch in reader:
        if batch.num_rows:
            yield pa.RecordBatch.from_arrays(
                [
                    column.cast(field.type) if pa.types.is_duration(field.type) else column
                    for column, field in zip(batch.columns, schema, strict=True)
                ],
                schema=schema,
            )


def _schema(connection: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> pa.Schema:
    description = cursor.description or []
    oids = [column.type_code for column in description]
    names = dict(
        connection.execute(
            "SELECT oid::int, typname FROM pg_type WHERE oid = ANY(%s)", (oids,)
        ).fetchall()
    )
    return pa.schema(
        [
            pa.field(column.name, _arrow_type(column, names.get(column.type_code, "text")))
            for column in description
        ]
    )


def _where(date_column: str | None) -> sql.Composable:
    if date_column is None:
        return sql.SQL("")
    return sql.SQL(" WHERE {col} >= %(start)s AND {col} < %(end)s").format(
        col=sql.Identifier(date_column)
    )


def _query(mart: str) -> sql.Composed:
    """The mart's columns, no row: to read their names and types."""
    return sql.SQL("SELECT * FROM {}.{} LIMIT 0").format(
        sql.Identifier(SCHEMA), sql.Identifier(mart)
    )


def _select_list(schema: pa.Schema) -> sql.Composable:
    """Every column as COPY should print it: durations as whole microseconds, since their text
    form is not one pyarrow reads."""
    columns: list[sql.Composable] = []
    for field in schema:
        column = sql.Identifier(field.name)
        if pa.types.is_duration(field.type):
            columns.append(
                sql.SQL("(extract(epoch FROM {c}) * 1000000)::bigint AS {c}").format(c=column)
            )
        else:
            columns.append(column)
    return sql.SQL(", ").join(columns)


def _copy(mart: str, schema: pa.Schema, date_column: str | None) -> sql.Composed:
    select = sql.SQL("SELECT {columns} FROM {schema}.{mart}").format(
        columns=_select_list(schema), schema=sql.Identifier(SCHEMA), mart=sql.Identifier(mart)
    )
    return sql.SQL("COPY ({select}{where} ORDER BY 1) TO STDOUT (FORMAT csv)").format(
        select=select, where=_where(date_column)
    )


def month_bounds(month: str) -> tuple[date, date]:
    month_folder(month)  # validates
    year, number = (int(part) for part in month.split("-"))
    start = date(year, number, 1)
    end = date(year + (number == 12), number % 12 + 1, 1)
    return start, end


def export_mart(
    database_url: str,
    lake: Lake,
    mart: str,
    *,
    date_column: str | None = None,
    month: str | None = None,
) -> Export:
    """Write `mart` (one `month` of it by `date_column`, else all of it into `current/`) to
    the lake, replacing what was there."""
    if (date_column is None) != (month is None):
        raise ValueError("a month needs the mart's date column, and only then")
    folder = month_folder(month) if month is not None else CURRENT
    final = lake.path(mart, folder)
    run = uuid.uuid4().hex[:12]
    work = lake.path(mart, f".{folder}.{run}") if lake.is_local else final
    lake.filesystem.create_dir(work, recursive=True)
    params = {}
    if month is not None:
        params["start"], params["end"] = month_bounds(month)
    rows = files = 0
    try:
        with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
            # months of timestamps are UTC months, and COPY prints timestamps in UTC
            connection.execute("SET TIME ZONE 'UTC'")
            cursor.execute(_query(mart))
            schema = _schema(connection, cursor)
            path = f"{work}/part-{run}-0.parquet"
            with (
                pq.ParquetWriter(path, schema, filesystem=lake.filesystem) as writer,
                cursor.copy(_copy(mart, schema, date_column), params or None) as copy,
            ):
                files = 1
                for batch in _batches(copy, schema):
                    writer.write_batch(batch)
                    rows += batch.num_rows
    except BaseException:
        if work != final:
            lake.filesystem.delete_dir(work)
        raise
    if lake.is_local:
        _swap_in(lake.filesystem, work, final)
    else:
        _delete_others(lake.filesystem, final, keep=f"part-{run}-")
    return Export(mart=mart, folder=final, rows=rows, files=files)


def _swap_in(filesystem: pafs.FileSystem, work: str, final: str) -> None:
    """Put the finished `work` folder in place of `final` (two renames; the old one is
    deleted after)."""
    old = f"{work}.old"
    exists = filesystem.get_file_info(final).type != pafs.FileType.NotFound
    if exists:
        filesystem.move(final, old)
    filesystem.move(work, final)
    if exists:
        filesystem.delete_dir(old)


def _delete_others(filesystem: pafs.FileSystem, folder: str, *, keep: str) -> None:
    infos: Sequence[pafs.FileInfo] = filesystem.get_file_info(pafs.FileSelector(folder))
    for info in infos:
        if info.type == pafs.FileType.File and not info.base_name.startswith(keep):
            filesystem.delete_file(info.path)
