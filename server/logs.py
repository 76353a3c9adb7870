"""Structured logs: one record per session event, with its fields as `key=value` or as JSON.

Every record carries its fields in `record.fields`; `JsonFormatter` writes them as one JSON object
per line (for log collectors), the default format appends them as `key=value` pairs."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger("streamst.server.session")


def _format_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c.isspace() for c in text)) else text


class SessionLog:
    """Logs the events of one session, each record tagged with the session id and endpoint."""

    def __init__(self, session_id: str, endpoint: str, peer: str) -> None:
        self.session_id = session_id
        self._base = {"session": session_id, "endpoint": endpoint, "peer": peer}
        self._started_s = time.monotonic()

    @property
    def age_s(self) -> float:
        return time.monotonic() - self._started_s

    def event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        if not log.isEnabledFor(level):
            return
        record_fields = {**self._base, "event": name, **fields}
        pairs = " ".join(f"{key}={_format_value(value)}" for key, value in record_fields.items())
        log.log(level, "%s", pairs, extra={"fields": record_fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)
