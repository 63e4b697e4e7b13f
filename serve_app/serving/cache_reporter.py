"""A Diffusion replica's model cache, seen from the rest of the cluster.

InvokeAI answers `GET /api/v2/models/stats` and `POST /empty_model_cache` from its one process; here the caches
live in however many Diffusion replicas Serve runs, and a Serve handle reaches one replica, not all. So each
replica writes its cache stats to its own row of `model_cache_stats` (after every change, and as a heartbeat so
the Ingress can tell live rows from those of replicas that died), and listens on the event bus for the clear
request an Ingress publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from serve_app.domain.ports import BusMessage, JobChange
from serve_app.services.models import CACHE_CLEAR_EVENT
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.db import create_pool
from serve_app.storage.model_registry import PgCacheStats

log = logging.getLogger(__name__)

# Rows older than the Ingress's 60 s window count as dead replicas; a heartbeat well inside it.
HEARTBEAT_S = 20.0


class ReportedCache(Protocol):
    """What the reporter needs of a model cache (inference.model_cache.ModelCache has it)."""

    # Called with the new stats after loads, evictions and clears.
    on_change: Callable[[dict[str, Any]], None] | None

    def stats(self) -> Mapping[str, object]: ...

    def clear(self) -> int: ...


class CacheReporter:
    def __init__(self, cache: ReportedCache, *, database_url: str, replica_id: str) -> None:
        self._cache = cache
        self._database_url = database_url
        self._replica_id = replica_id
        self._changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        pool = await create_pool(self._database_url, min_size=1, max_size=2)
        self._stack.push_async_callback(pool.close)
        stats = PgCacheStats(pool)
        self._stack.push_async_callback(stats.remove, self._replica_id)
        feed = PgChangeFeed(self._database_url)
        await feed.start()
        self._stack.push_async_callback(feed.stop)
        self._stack.callback(feed.subscribe_events(self._on_message))

        def changed(_: dict[str, Any]) -> None:
            # Called on the diffusion thread after loads and evictions: hand over to the loop.
            loop.call_soon_threadsafe(self._changed.set)

        self._cache.on_change = changed
        self._task = asyncio.create_task(self._report(stats), name="cache-reporter")

    async def stop(self) -> None:
        self._cache.on_change = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    def _on_message(self, message: JobChange | BusMessage) -> None:
        if isinstance(message, BusMessage) and message.event == CACHE_CLEAR_EVENT:
            asyncio.get_running_loop().create_task(self._clear(), name="cache-clear")

    async def _clear(self) -> None:
        # clear() waits for the cache lock, which a load on the diffusion thread may hold for seconds.
        dropped = await asyncio.to_thread(self._cache.clear)
        log.info("Emptied the model cache on request: %d entries dropped", dropped)
        self._changed.set()

    async def _report(self, stats: PgCacheStats) -> None:
        while True:
            try:
                await stats.report(self._replica_id, self._cache.stats())
            except Exception:  # the database may be restarting; the next change or heartbeat retries
                log.exception("could not report cache stats")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=HEARTBEAT_S)
            self._changed.clear()
