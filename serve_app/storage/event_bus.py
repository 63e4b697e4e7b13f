"""PgEventBus: BusMessages to every Ingress replica over Postgres NOTIFY.

Wire format on channel `serve_app_events_v1`: the message's JSON (`BusMessage.model_dump_json()`), or, for a
message over `INLINE_LIMIT_BYTES` (NOTIFY caps payloads at 8000 bytes), `{"ref": <event_overflow.id>}` with the
text parked in `event_overflow` by the same transaction. `PgChangeFeed` receives both kinds on its one LISTEN
connection and resolves references in arrival order (`PgChangeFeed.subscribe_events`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, LiteralString

import asyncpg

from serve_app.domain.ports import BusMessage
from serve_app.storage.queries import load

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "serve_app_events_v1"
# NOTIFY's limit is 8000 bytes; stay well below it.
INLINE_LIMIT_BYTES = 7000
# Parked messages older than this are deleted; listeners resolve them within milliseconds.
OVERFLOW_RETENTION_S = 600.0
# Prune at most this often per bus instance (pruning rides on a large publish, no timer needed).
PRUNE_INTERVAL_S = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class EventQueries:
    """The statements of sql/events.sql."""

    notify: LiteralString
    insert_overflow: LiteralString
    load_overflow: LiteralString
    prune_overflow: LiteralString


EVENT_QUERIES = load(EventQueries, "sql/events.sql")


class PgEventBus:
    """The EventBus port on an asyncpg pool. Each publish is one statement (or one short transaction for a
    parked message), so messages one coroutine publishes one after another arrive in that order (NOTIFY
    delivers in commit order)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        channel: str = EVENTS_CHANNEL,
        inline_limit_bytes: int = INLINE_LIMIT_BYTES,
        retention_s: float = OVERFLOW_RETENTION_S,
    ) -> None:
        self._pool = pool
        self._channel = channel
        self._inline_limit_bytes = inline_limit_bytes
        self._retention_s = retention_s
        self._last_prune = float("-inf")
        self.overflowed = 0  # messages sent by reference so far, for metrics and tests

    async def publish(self, message: BusMessage) -> None:
        text = message.model_dump_json()
        if _fits(text, self._inline_limit_bytes):
            # One statement, one round trip (no BEGIN/COMMIT): the common case, dozens of times per job.
            await self._pool.execute(EVENT_QUERIES.notify, self._channel, text)
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await _park(connection, text, self._channel)
        self.overflowed += 1
        await self._maybe_prune()

    async def prune(self) -> None:
        """Delete parked messages older than the retention period."""
        self._last_prune = time.monotonic()
        await self._pool.execute(EVENT_QUERIES.prune_overflow, self._retention_s)

    async def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_INTERVAL_S:
            return
        try:
            await self.prune()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # Housekeeping only: the message itself is already on its way.
            logger.warning("event bus: pruning event_overflow failed: %s", error)


async def publish_on(
    connection: Any,
    message: BusMessage,
    *,
    channel: str = EVENTS_CHANNEL,
    inline_limit_bytes: int = INLINE_LIMIT_BYTES,
) -> bool:
    """Publish inside the caller's transaction, so the message goes out exactly when (and if) the caller's
    writes commit, in commit order with them. True when the message was parked in event_overflow."""
    text = message.model_dump_json()
    if _fits(text, inline_limit_bytes):
        await connection.execute(EVENT_QUERIES.notify, channel, text)
        return False
    await _park(connection, text, channel)
    return True


def _fits(text: str, inline_limit_bytes: int) -> bool:
    return len(text.encode("utf-8")) <= inline_limit_bytes


async def _park(connection: Any, text: str, channel: str) -> None:
    """Park a message in event_overflow and NOTIFY its reference (inside the caller's transaction)."""
    ref = await connection.fetchval(EVENT_QUERIES.insert_overflow, text)
    await connection.execute(EVENT_QUERIES.notify, channel, json.dumps({"ref": ref}))


def overflow_ref(payload: str) -> int | None:
    """The `event_overflow` id when `payload` is a reference, else None (the payload is the message)."""
    if not payload.startswith('{"ref"'):
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    ref = data.get("ref") if isinstance(data, dict) and len(data) == 1 else None
    return ref if isinstance(ref, int) else None
