"""PgChangeFeed: job changes and bus messages from Postgres LISTEN/NOTIFY, fanned out to in-process subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from pydantic import ValidationError

from serve_app.domain.ports import BusMessage, JobChange
from serve_app.storage.db import asyncpg_url
from serve_app.storage.event_bus import EVENT_QUERIES, EVENTS_CHANNEL, overflow_ref
from serve_app.storage.queries import QUERIES

logger = logging.getLogger(__name__)

CHANNEL = "serve_app_jobs_v1"
APPLICATION_NAME = "serve_app_change_feed"

# Errors that mean "the connection is gone or unusable": reconnect rather than crash.
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PgChangeFeed:
    """The ChangeFeed and EventSource ports: one dedicated LISTEN connection (job changes and, unless
    `events=False`, bus messages), reconnected with backoff when it drops.

    `subscribe` callbacks get JobChanges synchronously as they arrive. `subscribe_events` callbacks get
    JobChanges and BusMessages in the order Postgres delivered them, from one task that resolves
    overflow references (large bus messages) one at a time, so a large message never falls behind a later one.

    Notifications sent while the connection is down are lost; subscribers poll as a fallback.
    """

    def __init__(
        self,
        database_url: str,
        *,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        probe_interval_s: float = 30.0,
        events: bool = True,
    ) -> None:
        self._url = asyncpg_url(database_url)
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._probe_interval_s = probe_interval_s
        self._subscribers: dict[object, Callable[[JobChange], None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._events = events
        self._event_subscribers: dict[object, Callable[[JobChange | BusMessage], None]] = {}
        # Arrivals for event subscribers, in delivery order: JobChanges, and bus payloads still to decode.
        self._inbox: asyncio.Queue[JobChange | str] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        # The LISTEN connection also reads overflow rows; the lock keeps that apart from the liveness probe.
        self._connection: Any = None
        self._io_lock = asyncio.Lock()
        self.connections = 0  # successful (re)connections so far, for metrics and tests

    def subscribe(self, callback: Callable[[JobChange], None]) -> Callable[[], None]:
        """Call `callback` for every change; return a function that unsubscribes."""
        token = object()
        self._subscribers[token] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(token, None)

        return unsubscribe

    def subscribe_events(self, callback: Callable[[JobChange | BusMessage], None]) -> Callable[[], None]:
        """Call `callback` for every job change and bus message in delivery order; return an unsubscribe function."""
        token = object()
        self._event_subscribers[token] = callback

        def unsubscribe() -> None:
            self._event_subscribers.pop(token, None)

        return unsubscribe

    async def start(self) -> None:
        """Connect and LISTEN (connection errors propagate, so startup fails loudly), then keep it alive."""
        if self._supervisor is not None:
            return
        connection = await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(connection), name="pg-change-feed")
        self._dispatcher = asyncio.create_task(self._dispatch_events(), name="pg-change-feed-events")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        supervisor, self._supervisor = self._supervisor, None
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        if supervisor is None:
            return
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor

    async def _connect(self) -> Any:
        connection = await asyncpg.connect(self._url, server_settings={"application_name": APPLICATION_NAME})
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            if self._events:
                await connection.add_listener(EVENTS_CHANNEL, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
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
                    async with self._io_lock:
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

    def _on_notification(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            if self._event_subscribers:
                self._inbox.put_nowait(payload)
            return
        try:
            change = JobChange.model_validate_json(payload)
        except ValidationError:
            logger.warning("change feed: ignoring malformed payload %r", payload)
            return
        if self._event_subscribers:
            self._inbox.put_nowait(change)
        for callback in list(self._subscribers.values()):
            try:
                callback(change)
            except Exception:
                # One broken subscriber must not starve the others.
                logger.exception("change feed: subscriber %r failed", callback)

    async def _dispatch_events(self) -> None:
        """The one consumer of the inbox: decode (reading overflow rows) and deliver, strictly in order."""
        while True:
            item = await self._inbox.get()
            message = item if isinstance(item, JobChange) else await self._decode(item)
            if message is None:
                continue
            for callback in list(self._event_subscribers.values()):
                try:
                    callback(message)
                except Exception:
                    logger.exception("change feed: event subscriber %r failed", callback)

    async def _decode(self, payload: str) -> BusMessage | None:
        ref = overflow_ref(payload)
        text = payload if ref is None else await self._load_overflow(ref)
        if text is None:
            return None
        try:
            return BusMessage.model_validate_json(text)
        except ValidationError:
            logger.warning("change feed: ignoring malformed bus message %.200r", text)
            return None

    async def _load_overflow(self, ref: int, attempts: int = 4) -> str | None:
        """The parked text of a large bus message; retried across a reconnect, None when it cannot be had."""
        delay = self._min_backoff_s
        for _attempt in range(attempts):
            try:
                async with self._io_lock:
                    text: str | None = await self._connection.fetchval(
                        EVENT_QUERIES.load_overflow, ref, timeout=self._probe_interval_s
                    )
                if text is None:
                    logger.warning("change feed: overflow event %s is gone (pruned?); skipping it", ref)
                return text
            except _CONNECTION_ERRORS as error:
                logger.warning("change feed: reading overflow event %s failed (%s); retrying", ref, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)
        logger.error("change feed: giving up on overflow event %s", ref)
        return None
