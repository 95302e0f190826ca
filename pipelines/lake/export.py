"""Export one mart (or one month of it) from PostgreSQL to Parquet in the lake.

Rows stream from a server-side cursor (never the whole mart in memory) into Arrow record
batches typed from PostgreSQL's column types, and are written with pyarrow. A month is written
to a hidden work folder first and then swapped in, so a re-export replaces the month whole and
readers (who skip hidden names) never see half of it. On object stores (S3), which have no
rename, the new files get names of their own and the old ones are deleted after the new ones
are complete: a reader in that moment may see both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from psycopg import sql

from app.analytics.lake import CURRENT, Lake, month_folder

BATCH_ROWS = 50_000
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


def _convert(value: Any, arrow_type: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(arrow_type) and not isinstance(value, str):
        return str(value)
    if pa.types.is_floating(arrow_type) and isinstance(value, Decimal):
        return float(value)
    return value


def _batches(
    cursor: psycopg.Cursor[tuple[Any, ...]], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    while rows := cursor.fetchmany(BATCH_ROWS):
        columns = [
            pa.array([_convert(row[i], field.type) for row in rows], type=field.type)
            for i, field in enumerate(schema)
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


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


def _query(mart: str, date_column: str | None, month: str | None) -> sql.Composed:
    query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(mart))
    if date_column is not None:
        query = query + sql.SQL(" WHERE {col} >= %(start)s AND {col} < %(end)s").format(
            col=sql.Identifier(date_column)
        )
    return query + sql.SQL(" ORDER BY 1")


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
        with (
            psycopg.connect(database_url) as connection,
            connection.cursor(name=f"lake_{run}") as cursor,  # server-side: streams
        ):
            connection.execute("SET TIME ZONE 'UTC'")  # months of timestamps are UTC months
            cursor.execute(_query(mart, date_column, month), params)
            schema = _schema(connection, cursor)
            path = f"{work}/part-{run}-0.parquet"
            with pq.ParquetWriter(path, schema, filesystem=lake.filesystem) as writer:
                files = 1
                for batch in _batches(cursor, schema):
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
