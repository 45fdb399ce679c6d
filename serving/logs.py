"""Structured logs: one JSON object per line, quiet by default about third-party chatter."""

import json
import logging
import sys

# Given per call through `extra=`; empty ones are left out. The access log (one line per
# request, logger "logitrec.access") uses all of them.
CONTEXT_FIELDS = (
    "method",
    "request_id",
    "user_id",
    "model",
    "version",
    "status",
    "reason",
    "seconds",
    "stages",
    "requests",
    "error",
    "peer",
    "caller",
)
FIELD_CHARS = 64  # a caller's string in a log field: enough to trace, never unbounded


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # UTF-8 as it is: an escaped character takes up to 12 bytes, a written one at most 4.
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("faiss").setLevel(logging.WARNING)  # "Loading faiss" on every start


def cut(value: str, limit: int = FIELD_CHARS) -> str:
    """A caller's string for a log field: its first `limit` characters, "..." when longer."""
    return value if len(value) <= limit else value[:limit] + "..."
