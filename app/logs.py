"""Logs never carry a patient's details.

Every handler of the API and worker processes gets `RedactingFilter`, which rewrites each record
before any formatter sees it: the message and the formatted traceback (without local variables)
are passed through `redact`, and access-log lines lose their query string. `redact` removes
pydantic's `input_value=...` (a validation error repeats the input it refused), the values of
known PHI field names in `key=value`, `'key': value` and JSON forms, and e-mail addresses.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

REDACTED = "[redacted]"

# Field names whose values are PHI (patients' details, Stripe's billing details), also with a
# prefix such as `patient_name` or `recipient_email`.
PHI_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "date_of_birth",
    "birth_date",
    "dob",
    "note",
    "notes",
    "reason",
    "billing_details",
    "address",
    "line1",
    "line2",
    "postal_code",
    "city",
    "recipient",
)

_FIELD = r"(?:\w+_)?(?:" + "|".join(PHI_FIELDS) + r")"
_VALUE = (
    r"'(?:[^'\\\n]|\\.)*'"  # 'quoted'
    r'|"(?:[^"\\\n]|\\.)*"'  # "quoted"
    r"|(?:datetime\.)?(?:date|datetime)\([^)\n]*\)"  # datetime.date(1961, 2, 3)
    # bare, up to a separator or the next `key=` (so `name=Zebulon Quixote email=...` splits)
    r"|[^\s,;&)}\]'\"]+(?:[ \t]+(?![\w.-]+\s*[=:])[^\s,;&)}\]'\"]+)*"
)
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![\w.])['\"]?" + _FIELD + r"['\"]?\s*(?::|=)\s*)(?P<value>" + _VALUE + r")",
    re.IGNORECASE,
)
# Code in a traceback's source lines (`name=data.name`, `email=normalise(email)`) is not data.
_CODE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Za-z_]\w*\(.*")
_DATE = re.compile(r"(?:datetime\.)?(?:date|datetime)\(\d")
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=)")
_EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+")
_CHECKOUT_TOKEN = re.compile(r"/pay/(?!verify\b)[^/?\s]+")
# A "my orders" link's token (app/shop); `/my-orders/list` is the page, not a token.
_ORDERS_TOKEN = re.compile(r"/my-orders/(?!list\b)[^/?\s]+")


def _redact_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.startswith("{") or (_CODE.fullmatch(value) and not _DATE.match(value)):
        return match.group(0)
    return match.group("key") + REDACTED


def redact(text: str) -> str:
    """`text` without the values of PHI fields, validation inputs or e-mail addresses."""
    text = _INPUT_VALUE.sub("input_value=" + REDACTED, text)
    text = _KEY_VALUE.sub(_redact_value, text)
    return _EMAIL.sub(REDACTED, text)


def redact_path(path: str) -> str:
    """A request target as logged: no query string (it may hold e-mail addresses or tokens)
    and no checkout or "my orders" link token."""
    path = _CHECKOUT_TOKEN.sub("/pay/" + REDACTED, path.split("?", 1)[0])
    return _ORDERS_TOKEN.sub("/my-orders/" + REDACTED, path)


def format_exception(exc_info: Any) -> str:
    """A traceback as text: frames and messages only, never local variables."""
    exc_type, exc, tb = exc_info
    frames = traceback.TracebackException(exc_type, exc, tb, capture_locals=False)
    return "".join(frames.format()).rstrip("\n")


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no handler can write PHI (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's access formatter unpacks (client, method, target, version, status).
            client, method, target, version, status = args
            record.args = (client, method, redact_path(str(target)), version, status)
        else:
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit the format: keep neither
                message = f"unformattable log message from {record.pathname}:{record.lineno}"
            record.msg = redact(message)
            record.args = None
        if record.exc_info:
            if record.exc_info[0] is not None:
                record.exc_text = redact(format_exception(record.exc_info))
            record.exc_info = None  # formatters use the redacted text above
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_on_every_handler() -> None:
    """Put the filter on every handler configured in this process (the root's, uvicorn's and
    any library's), and on the last-resort handler used when none is configured."""
    handlers: list[logging.Handler] = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging set-up with the filter on each handler, and the application's own
    loggers (propagating to the root) written like uvicorn's."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "filters": {"redact_phi": {"()": RedactingFilter}},
        "handlers": {
            name: {**handler, "filters": ["redact_phi"]}
            for name, handler in LOGGING_CONFIG["handlers"].items()
        },
        "loggers": {**LOGGING_CONFIG["loggers"], "app": {"level": "INFO"}},
        # Libraries (httpx logs every request at INFO) only from warnings up.
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
    return config


def configure_command_logging() -> None:
    """For `portal` commands (the worker among them): the root logger writes to stderr through
    the filter, and an exception that ends the command is logged the same way."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)  # libraries: warnings and errors only (default)
    logging.getLogger("app").setLevel(logging.INFO)
    install_on_every_handler()
