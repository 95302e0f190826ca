"""Warnings and errors of each process into the `system_log` table, for admins to read.

`install(source)` puts one `SystemLogHandler` on the root logger (and on uvicorn's and Dagster's
loggers, which do not propagate to it). The handler redacts each record with `app.logs`'s
`RedactingFilter` before it keeps anything, so the table holds exactly what the log files may
hold: no PHI, no traceback locals. Records are queued and written by a thread of the handler's
own on a connection of its own (never the request's transaction: a failed request's error
must stay), in batches; when the database cannot take them they are dropped and counted,
never retried into a loop, and the process is never slowed or stopped by its log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg

from app.config import get_settings
from app.logs import RedactingFilter
from app.models.status import LogLevel, LogSource

MAX_MESSAGE = 4000
MAX_EXCEPTION = 20_000
BATCH = 200
# Loggers whose records never go to the table: the database driver (a failing write would log
# about itself) and this module.
IGNORED_LOGGERS = ("psycopg", "app.system_logs")
# Loggers that do not propagate to the root but carry errors worth keeping.
NON_PROPAGATING = ("uvicorn", "dagster")
INSERT = (
    "INSERT INTO system_log (created_at, level, source, logger, message, exception, process_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_STOP = object()


def _level_name(record: logging.LogRecord) -> str:
    if record.levelno >= logging.CRITICAL:
        return LogLevel.CRITICAL
    if record.levelno >= logging.ERROR:
        return LogLevel.ERROR
    return LogLevel.WARNING


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://`) as libpq takes it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}://{rest}"


class SystemLogHandler(logging.Handler):
    def __init__(
        self,
        database_url: str,
        source: LogSource,
        level: int = logging.WARNING,
        *,
        queue_size: int = 10_000,
    ) -> None:
        super().__init__(level)
        self.addFilter(RedactingFilter())
        self.database_url = libpq_url(database_url)
        self.source = source
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._connection: psycopg.Connection[Any] | None = None
        self._writer = threading.Thread(
            target=self._write_forever, daemon=True, name="system-log-writer"
        )
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(IGNORED_LOGGERS) or threading.current_thread() is self._writer:
            return
        try:
            message = record.getMessage()  # redacted by the filter already
        except Exception:
            message = f"unformattable log message from {record.pathname}:{record.lineno}"
        row = (
            datetime.fromtimestamp(record.created, UTC),
            _level_name(record),
            self.source.value,
            record.name[:200],
            message[:MAX_MESSAGE],
            record.exc_text[:MAX_EXCEPTION] if record.exc_text else None,
            record.process,
        )
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def flush(self) -> None:
        """Wait until every queued record is written (or dropped)."""
        self._queue.join()

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join(timeout=5)
        super().close()

    def _write_forever(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for row in batch if row is not _STOP]
            try:
                if rows:
                    self._write(rows)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(rows) != len(batch):
                self._disconnect()
                return

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(
                    self.database_url, autocommit=True, connect_timeout=5
                )
            with self._connection.cursor() as cursor:
                cursor.executemany(INSERT, rows)
        except psycopg.Error as exc:
            self.dropped += len(rows)
            self._disconnect()
            # Say so once per failure where the process's own log goes (not into this handler).
            print(
                f"system log: {len(rows)} records not kept ({type(exc).__name__})", file=sys.stderr
            )

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None


def install(source: LogSource) -> SystemLogHandler | None:
    """Keep this process's warnings and errors in the system log (once per process); None
    when SYSTEM_LOG_LEVEL=off or no DATABASE_URL is configured."""
    settings = get_settings()
    if settings.system_log_level == "off" or not settings.database_url:
        return None
    root = logging.getLogger()
    for existing in root.handlers:
        if isinstance(existing, SystemLogHandler) and existing.source == source:
            return existing
    handler = SystemLogHandler(
        settings.database_url, source, logging.getLevelName(settings.system_log_level)
    )
    root.addHandler(handler)
    for name in NON_PROPAGATING:
        logging.getLogger(name).addHandler(handler)
    atexit.register(handler.close)
    return handler


def uninstall(handler: SystemLogHandler) -> None:
    for logger in (logging.getLogger(), *map(logging.getLogger, NON_PROPAGATING)):
        logger.removeHandler(handler)
    handler.close()


__all__ = ["SystemLogHandler", "install", "libpq_url", "uninstall"]
