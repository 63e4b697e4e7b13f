"""InvokeAI's Socket.IO server at `/ws/socket.io`: clients join rooms, bus events are fanned out to them.

Every Ingress replica runs one `SocketHub`. It reads the replica's `EventSource` (one ordered stream of job
changes and bus messages from Postgres) and emits each `BusMessage` to its room (everyone when `room` is
None); a job change becomes whatever events the injected `status_events` hook builds for it. One task emits
everything in arrival order, so clients see events in the order the database committed them.

Lifecycle: `install_socket(app, context)` (called by `create_app`) mounts the server and wraps the app's
lifespan so the hub starts after the app's own startup and stops before its shutdown. Servers that do not
run ASGI lifespan events (e.g. `httpx.ASGITransport`) never start it; `SocketHub.start`/`stop` can then be
called directly.

Accounts (InvokeAI 6.12's multi-user mode): every connection has an identity. With auth on, the connect handler
takes a token from `auth={"token": ...}`, an `Authorization: Bearer` (or `X-API-Key`) header or the
`enfugue_token` cookie and refuses the connection without a valid one; with auth off everyone is the built-in
admin. A message with an `owner` (queue item and bulk download events) reaches only that user and admins: each
subscription also joins a per-user (or the admins') twin of the room, and owned messages go to those twins. Model
and download events stay broadcasts to every (authenticated) client: they describe the shared model registry,
which every user may list anyway.

Mind the transports behind several replicas: a WebSocket stays on the replica it reached, but Engine.IO
long-polling (the default first transport of socket.io clients) sends each poll as a new HTTP request, which
must reach the same replica (sticky routing), or the client gets "Invalid session" and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

import socketio
from fastapi import FastAPI

from serve_app.api.auth import TOKEN_COOKIE
from serve_app.domain.accounts import Identity
from serve_app.domain.ports import BusMessage, EventSource, JobChange
from serve_app.services.accounts import SESSIONS_REVOKED_EVENT, USER_CHANGED_EVENT

if TYPE_CHECKING:
    from serve_app.api.deps import ApiContext, StatusEvents

logger = logging.getLogger(__name__)

MOUNT_PATH = "/ws"
# Engine.IO compares it with the full request path (Starlette keeps `scope["path"]` whole under a Mount).
SOCKETIO_PATH = "/ws/socket.io"
# Events waiting to be emitted; beyond this the hub is hopelessly behind and drops new ones (and says so).
MAX_PENDING = 10_000
# Rooms no client names itself: `…#admins` and `…#user:<name>` twins of a room (and of everything, for owned
# messages without a room).
ADMINS = "#admins"
USER = "#user:"

# Who a connection is, from the WSGI-style environ and the `auth` payload of its connect; None refuses it.
Authenticate = Callable[[Mapping[str, Any], Any], Awaitable[Identity | None]]


def _twin(room: str | None, identity: Identity) -> str:
    """The room a connection joins beside `room` so that messages owned by someone reach it only if it may see them."""
    return f"{room or ''}{ADMINS if identity.admin else USER + identity.username}"


def recipients(message: BusMessage) -> str | list[str] | None:
    """The `to` of `sio.emit` for a message: its room (None: everyone), or for an owned one the room's twins of
    the owner and the admins."""
    if message.owner is None:
        return message.room
    room = message.room or ""
    return [f"{room}{ADMINS}", f"{room}{USER}{message.owner}"]


def deliveries(message: BusMessage) -> list[tuple[str | list[str] | None, dict[str, Any]]]:
    """The `(to, data)` of each `sio.emit` for a message: one, unless it is owned and has `owner_data`, which then
    goes to the owner's twin while the admins' twin gets `data` (an admin owner's connection is in the admins'
    twin only, so it gets `data`, once)."""
    if message.owner is None or message.owner_data is None:
        return [(recipients(message), message.data)]
    room = message.room or ""
    return [(f"{room}{ADMINS}", message.data), (f"{room}{USER}{message.owner}", message.owner_data)]


def socket_token(environ: Mapping[str, Any], auth: Any) -> str | None:
    """The credential of a connect: `auth={"token": ...}`, then the bearer and API key headers, then the cookie."""
    if isinstance(auth, dict):
        token = auth.get("token")
        if isinstance(token, str) and token.strip():
            return token.strip()
    scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = str(environ.get("HTTP_X_API_KEY", "")).strip()
    if key:
        return key
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return None
    morsel = cookies.get(TOKEN_COOKIE)
    return morsel.value or None if morsel is not None else None


class SocketHub:
    """The python-socketio server plus the one task that emits bus events to it."""

    def __init__(
        self,
        *,
        status_events: StatusEvents | None = None,
        authenticate: Authenticate | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
        self._status_events = status_events
        # Without an authenticator every connection is an admin (auth off).
        self._authenticate = authenticate
        self._identities: dict[str, Identity] = {}
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
                    for to, data in deliveries(message):
                        await self.sio.emit(message.event, data, to=to)
                    self.emitted += 1
            except Exception:
                # One bad event (or a failing hook) must not silence the socket for everyone.
                logger.exception("socket hub: emitting %r failed", item)

    async def _messages_for(self, item: JobChange | BusMessage) -> list[BusMessage]:
        if isinstance(item, BusMessage) and item.event == SESSIONS_REVOKED_EVENT:
            await self._disconnect_all()
            return []
        if isinstance(item, BusMessage) and item.event == USER_CHANGED_EVENT:
            await self._disconnect_all(username=str(item.data.get("username", "")))
            return []
        if isinstance(item, BusMessage):
            return [item]
        if self._status_events is None:
            return []
        return await self._status_events(item)

    def _register_handlers(self) -> None:
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("subscribe_queue", self._room_handler("queue_id", join=True))
        self.sio.on("unsubscribe_queue", self._room_handler("queue_id", join=False))
        self.sio.on("subscribe_bulk_download", self._room_handler("bulk_download_id", join=True))
        self.sio.on("unsubscribe_bulk_download", self._room_handler("bulk_download_id", join=False))

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        if self._authenticate is None:
            identity = Identity(username="admin", admin=True)
        else:
            found = await self._authenticate(environ, auth)
            if found is None:
                # The client's connect_error handler receives this message.
                raise socketio.exceptions.ConnectionRefusedError("Invalid or no credentials supplied.")
            identity = found
        self._identities[sid] = identity
        await self.sio.enter_room(sid, _twin(None, identity))

    async def _disconnect(self, sid: str, *_: Any) -> None:
        self._identities.pop(sid, None)

    async def _disconnect_all(self, *, username: str | None = None) -> None:
        """Drop every connection (of `username` only, when given): their identities were checked under rules, with
        tokens or for a role that no longer hold. Clients reconnect and authenticate again."""
        sids = [sid for sid, who in self._identities.items()
                if username is None or who.username.lower() == username.lower()]  # fmt: skip
        for sid in sids:
            await self.sio.disconnect(sid)
        if sids:
            logger.info("socket hub: credentials changed; dropped %d connections", len(sids))

    def _room_handler(self, field: str, *, join: bool) -> Callable[[str, Any], Any]:
        async def handle(sid: str, data: Any = None) -> None:
            room = data.get(field) if isinstance(data, dict) else None
            if not isinstance(room, str):
                logger.debug("socket %s: ignoring a subscription without a string %r: %r", sid, field, data)
                return
            identity = self._identities.get(sid)
            rooms = [room] if identity is None else [room, _twin(room, identity)]
            for name in rooms:
                if join:
                    await self.sio.enter_room(sid, name)
                else:
                    await self.sio.leave_room(sid, name)

        return handle


def install_socket(app: FastAPI, context: ApiContext) -> SocketHub:
    """Mount a hub at `/ws/socket.io` and run it for the app's lifespan (when `context.events` is set)."""
    hub = SocketHub(status_events=context.status_events, authenticate=_authenticator(context))
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


def _authenticator(context: ApiContext) -> Authenticate:
    """Who a Socket.IO connection is, by the same rules as an HTTP request (api/auth.py)."""

    async def authenticate(environ: Mapping[str, Any], auth: Any) -> Identity | None:
        if not await context.auth_active():
            return Identity(username=context.default_owner, admin=True)
        token = socket_token(environ, auth)
        if context.accounts is None or token is None:
            return None
        return await context.accounts.authenticate(token)

    return authenticate
