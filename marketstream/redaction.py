"""Keeping credentials out of logs: a logging filter that blanks `token=` values.

uvicorn logs each WebSocket handshake with its path and query string
(`"WebSocket /ws/v1/stream?token=..." [accepted]`); browsers send their key or token
there. The filter is put on uvicorn's loggers by `marketstream.asgi`. The hub's own
log lines never carry a key or token: they name a grant by its id and name.
"""

from __future__ import annotations

import logging
import re

# token=VALUE in a query string, and a bearer credential in case a header is ever logged
SECRET = re.compile(r"(?i)(token=|bearer\s+)[^&\s\"']+")
REDACTED = r"\1[redacted]"
LOGGERS = ("uvicorn.error", "uvicorn.access", "uvicorn", "django.request", "django.server")


def redact(text: str) -> str:
    return SECRET.sub(REDACTED, text)


class RedactCredentials(logging.Filter):
    """Rewrites a record's message with credentials blanked (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to the handler's own error report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Put the filter on the loggers that may see request paths (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
