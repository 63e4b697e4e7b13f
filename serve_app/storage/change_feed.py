"""PgChangeFeed: job changes from Postgres LISTEN/NOTIFY, fanned out to in-process subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from pydantic import ValidationError

from serve_app.domain.ports import JobChange
from serve_app.storage.db import asyncpg_url
from serve_app.storage.queries import QUERIES

logger = logging.getLogger(__name__)

CHANNEL = "serve_app_jobs_v1"
APPLICATION_NAME = "serve_app_change_feed"

# Errors that mean "the connection is gone or unusable": reconnect rather than crash.
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PgChangeFeed:
    """The ChangeFeed port: one dedicated LISTEN connection, reconnected with backoff when it drops.

    Notifications sent while the connection is down are lost; subscribers poll as a fallback.
    """

    def __init__(
        self,
        database_url: str,
        *,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        probe_interval_s: float = 30.0,
    ) -> None:
        self._url = asyncpg_url(database_url)
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._probe_interval_s = probe_interval_s
        self._subscribers: dict[object, Callable[[JobChange], None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self.connections = 0  # successful (re)connections so far, for metrics and tests

    def subscribe(self, callback: Callable[[JobChange], None]) -> Callable[[], None]:
        """Call `callback` for every change; return a function that unsubscribes."""
        token = object()
        self._subscribers[token] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(token, None)

        return unsubscribe

    async def start(self) -> None:
        """Connect and LISTEN (connection errors propagate, so startup fails loudly), then keep it alive."""
        if self._supervisor is not None:
            return
        connection = await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(connection), name="pg-change-feed")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor

    async def _connect(self) -> Any:
        connection = await asyncpg.connect(self._url, server_settings={"application_name": APPLICATION_NAME})
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        self.connections += 1
        return connection

    async def _supervise(self, connection: Any) -> None:
        try:
            while True:
                await self._watch(connection)
                # Terminating never blocks, also when the server has already gone away.
                connection.terminate()
                logger.warning("change feed: lost the LISTEN connection; reconnecting")
                connection = await self._reconnect()
        finally:
            # stop() cancels us: say goodbye properly (a no-op on a terminated connection).
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await connection.close(timeout=2.0)

    async def _watch(self, connection: Any) -> None:
        """Return once the connection is gone: closed by the server, or silent to a probe."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), timeout=self._probe_interval_s)
            except TimeoutError:
                # A half-open TCP connection never reports termination; a query finds out.
                try:
                    await connection.fetchval(QUERIES.ping, timeout=self._probe_interval_s)
                except _CONNECTION_ERRORS:
                    return

    async def _reconnect(self) -> Any:
        delay = self._min_backoff_s
        while True:
            try:
                return await self._connect()
            except _CONNECTION_ERRORS as error:
                logger.warning("change feed: reconnect failed (%s); retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            change = JobChange.model_validate_json(payload)
        except ValidationError:
            logger.warning("change feed: ignoring malformed payload %r", payload)
            return
        for callback in list(self._subscribers.values()):
            try:
                callback(change)
            except Exception:
                # One broken subscriber must not starve the others.
                logger.exception("change feed: subscriber %r failed", callback)
