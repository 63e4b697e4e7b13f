"""The recent log records of this process, for Enfugue's `GET /api/logs`.

Enfugue reads its engine's log file; serve-app has no single file (replicas log to Ray's per-process files),
so each Ingress replica keeps the last records of the `serve_app` loggers in memory. A request therefore shows
the recent logs of the replica that answered it, not of the whole cluster, and nothing survives a restart.
Records below the `serve_app` logger's level never reach the handler; it does not change any level.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOGGER = "serve_app"
CAPACITY = 2000


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record as Enfugue returns it."""

    timestamp: datetime
    logger: str
    level: str
    file: str
    line: int
    content: str

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp.isoformat(),
            "logger": self.logger,
            "level": self.level,
            "file": self.file,
            "line": self.line,
            "content": self.content,
        }


class LogBuffer(logging.Handler):
    """Keeps the last `capacity` records (formatted once, when logged) in a ring."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__(level=logging.NOTSET)
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        # Records arrive from any thread (worker threads log too); reads copy under the same lock.
        self._entries_lock = threading.Lock()
        self._text = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            content = record.getMessage()
            if record.exc_info:
                # As Enfugue's reader appends the traceback lines to the entry they follow.
                content = f"{content}\n{self._text.formatException(record.exc_info)}"
            entry = LogEntry(
                timestamp=datetime.fromtimestamp(record.created, UTC),
                logger=record.name,
                level=record.levelname,
                file=record.filename,
                line=record.lineno,
                content=content,
            )
        except Exception:
            self.handleError(record)
            return
        with self._entries_lock:
            self._entries.append(entry)

    def entries(
        self,
        *,
        since: datetime | None = None,
        levels: Collection[str] = (),
        loggers: Collection[str] = (),
        search: str | None = None,
    ) -> list[LogEntry]:
        """Matching entries, newest first. `levels` match ignoring case; a logger matches itself and its
        children; `search` is a case-insensitive substring of the content."""
        with self._entries_lock:
            entries = list(self._entries)
        wanted_levels = {level.upper() for level in levels}
        needle = search.casefold() if search else None
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # a naive time is taken as UTC, the zone of the timestamps
        return [
            entry
            for entry in reversed(entries)
            if (since is None or entry.timestamp >= since)
            and (not wanted_levels or entry.level in wanted_levels)
            and (not loggers or any(entry.logger == name or entry.logger.startswith(f"{name}.") for name in loggers))
            and (needle is None or needle in entry.content.casefold())
        ]


_installed: LogBuffer | None = None
_install_lock = threading.Lock()


def install_log_buffer() -> LogBuffer:
    """The process's buffer, attached to the `serve_app` logger on the first call (every app built in this
    process shares it)."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = LogBuffer()
            logging.getLogger(LOGGER).addHandler(_installed)
        return _installed
