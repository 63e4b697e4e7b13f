"""InvokeAI's Socket.IO server at `/ws/socket.io`: clients join rooms, bus events are fanned out to them.

Every Ingress replica runs one `SocketHub`. It reads the replica's `EventSource` (one ordered stream of job
changes and bus messages from Postgres) and emits each `BusMessage` to its room (everyone when `room` is
None); a job change becomes whatever events the injected `status_events` hook builds for it. One task emits
everything in arrival order, so clients see events in the order the database committed them.

Lifecycle: `install_socket(app, context)` (called by `create_app`) mounts the server and wraps the app's
lifespan so the hub starts after the app's own startup and stops before its shutdown. Servers that do not
run ASGI lifespan events (e.g. `httpx.ASGITransport`) never start it; `SocketHub.start`/`stop` can then be
called directly.

Mind the transports behind several replicas: a WebSocket stays on the replica it reached, but Engine.IO
long-polling (the default first transport of socket.io clients) sends each poll as a new HTTP request, which
must reach the same replica (sticky routing), or the client gets "Invalid session" and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import socketio
from fastapi import FastAPI

from serve_app.domain.ports import BusMessage, EventSource, JobChange

if TYPE_CHECKING:
    from serve_app.api.deps import ApiContext, StatusEvents

logger = logging.getLogger(__name__)

MOUNT_PATH = "/ws"
# Engine.IO compares it with the full request path (Starlette keeps `scope["path"]` whole under a Mount).
SOCKETIO_PATH = "/ws/socket.io"
# Events waiting to be emitted; beyond this the hub is hopelessly behind and drops new ones (and says so).
MAX_PENDING = 10_000


class SocketHub:
    """The python-socketio server plus the one task that emits bus events to it."""

    def __init__(self, *, status_events: StatusEvents | None = None, max_pending: int = MAX_PENDING) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
        self._status_events = status_events
        self._pending: asyncio.Queue[JobChange | BusMessage] = asyncio.Queue(maxsize=max_pending)
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.emitted = 0  # events emitted so far (each once, whatever the number of recipients)
        self.dropped = 0  # events dropped because the hub fell MAX_PENDING behind
        self._register_handlers()

    def asgi_app(self) -> socketio.ASGIApp:
        """The ASGI app to mount at `MOUNT_PATH`."""
        return socketio.ASGIApp(self.sio, socketio_path=SOCKETIO_PATH)

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self, source: EventSource) -> None:
        """Subscribe to `source` and start emitting. Idempotent."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._emit_forever(), name="socket-hub")
        self._unsubscribe = source.subscribe_events(self._on_event)

    async def stop(self) -> None:
        """Unsubscribe and stop emitting; events not yet emitted are dropped. Clients stay connected."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, item: JobChange | BusMessage) -> None:
        try:
            self._pending.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("socket hub: %d events dropped so far (emitting too slowly)", self.dropped)

    async def _emit_forever(self) -> None:
        while True:
            item = await self._pending.get()
            try:
                for message in await self._messages_for(item):
                    await self.sio.emit(message.event, message.data, to=message.room)
                    self.emitted += 1
            except Exception:
                # One bad event (or a failing hook) must not silence the socket for everyone.
                logger.exception("socket hub: emitting %r failed", item)

    async def _messages_for(self, item: JobChange | BusMessage) -> list[BusMessage]:
        if isinstance(item, BusMessage):
            return [item]
        if self._status_events is None:
            return []
        return await self._status_events(item)

    def _register_handlers(self) -> None:
        self.sio.on("subscribe_queue", self._room_handler("queue_id", join=True))
        self.sio.on("unsubscribe_queue", self._room_handler("queue_id", join=False))
        self.sio.on("subscribe_bulk_download", self._room_handler("bulk_download_id", join=True))
        self.sio.on("unsubscribe_bulk_download", self._room_handler("bulk_download_id", join=False))

    def _room_handler(self, field: str, *, join: bool) -> Callable[[str, Any], Any]:
        async def handle(sid: str, data: Any = None) -> None:
            room = data.get(field) if isinstance(data, dict) else None
            if not isinstance(room, str):
                logger.debug("socket %s: ignoring a subscription without a string %r: %r", sid, field, data)
                return
            if join:
                await self.sio.enter_room(sid, room)
            else:
                await self.sio.leave_room(sid, room)

        return handle


def install_socket(app: FastAPI, context: ApiContext) -> SocketHub:
    """Mount a hub at `/ws/socket.io` and run it for the app's lifespan (when `context.events` is set)."""
    hub = SocketHub(status_events=context.status_events)
    app.mount(MOUNT_PATH, hub.asgi_app())
    app.state.socket_hub = hub
    source = context.events
    if source is None:
        return hub  # clients can connect and subscribe; nothing is ever emitted
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        async with inner(asgi_app) as state:
            await hub.start(source)
            try:
                yield state
            finally:
                await hub.stop()

    app.router.lifespan_context = lifespan
    return hub
