"""Socket.IO at /ws/socket.io: real python-socketio clients against the app served by uvicorn, events from Postgres.

Each "replica" is a full app (create_app) with its own PgChangeFeed, served by an in-process uvicorn server on a
free port; messages are published once through PgEventBus on the test's database.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
import pytest_asyncio
import socketio
import uvicorn

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.api.invokeai.socket import SocketHub
from serve_app.domain.jobs import NewJob
from serve_app.domain.ports import BusMessage, JobChange
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.event_bus import INLINE_LIMIT_BYTES, PgEventBus

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0
SENTINEL = "test_sentinel"
TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling"], "default": None}

StatusEvents = Callable[[JobChange], Awaitable[list[BusMessage]]]


@dataclass
class Replica:
    """One Ingress replica: its feed, app, hub and uvicorn server."""

    feed: PgChangeFeed
    hub: SocketHub
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, WAIT_S)
        await self.feed.stop()


async def start_replica(database_url: str, status_events: StatusEvents | None = None) -> Replica:
    feed = PgChangeFeed(database_url)
    await feed.start()
    context = ApiContext(
        jobs=cast(Any, None), store=cast(Any, None), version="test", events=feed, status_events=status_events
    )
    app = create_app(context)
    # Bound and listening before uvicorn starts, so clients may connect at once (the kernel queues them).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    # A long-poll a polling client abandoned stays open on the server (up to Engine.IO's 45 s ping window):
    # cut it short on shutdown.
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return Replica(feed=feed, hub=app.state.socket_hub, server=server, task=task, url=f"http://127.0.0.1:{port}")


class Listener:
    """A python-socketio client that queues every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.client.on("*", self._on_any)

    async def _on_any(self, event: str, data: Any = None) -> None:
        self.events.put_nowait((event, data))

    async def connect(self, replica: Replica, transports: list[str] | None = None) -> Listener:
        await self.client.connect(
            replica.url, socketio_path="/ws/socket.io", transports=transports, wait_timeout=WAIT_S
        )
        return self

    async def call(self, event: str, data: dict[str, Any]) -> None:
        """Emit and wait for the server's acknowledgement, so the handler has run (e.g. the room is joined)."""
        await self.client.call(event, data, timeout=WAIT_S)

    async def until_sentinel(self) -> list[tuple[str, Any]]:
        """Every event up to (not including) the next sentinel broadcast."""
        received = []
        async with asyncio.timeout(WAIT_S):
            while (item := await self.events.get())[0] != SENTINEL:
                received.append(item)
        return received

    async def close(self) -> None:
        if self.client.connected and self.client.transport() == "polling":
            # python-engineio's client would wait for its pending long-poll, which the server holds until
            # Engine.IO's ping window (45 s) ends: send CLOSE and drop the connection without waiting.
            await self.client.eio.disconnect(abort=True)
        else:
            await self.client.disconnect()


def msg(event: str, room: str | None, index: int = 0, *, size: int = 0) -> BusMessage:
    return BusMessage(event=event, room=room, data={"index": index, "queue_id": room, "padding": "x" * size})


def wire(message: BusMessage) -> tuple[str, Any]:
    return (message.event, message.data)


SENTINEL_MESSAGE = BusMessage(event=SENTINEL, room=None, data={})


@pytest.fixture
def bus(pool) -> PgEventBus:
    return PgEventBus(pool)


@pytest_asyncio.fixture(loop_scope="session")
async def replica(database_url: str) -> AsyncIterator[Replica]:
    started = await start_replica(database_url)
    try:
        yield started
    finally:
        await started.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def listeners() -> AsyncIterator[list[Listener]]:
    made: list[Listener] = []
    try:
        yield made
    finally:
        for listener in made:
            await listener.close()


async def connect(listeners: list[Listener], replica: Replica, transports: list[str] | None = None) -> Listener:
    listener = Listener()
    listeners.append(listener)
    return await listener.connect(replica, transports)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_room_events_reach_their_room_and_broadcasts_reach_everyone(replica, bus, listeners, transport):
    in_default = await connect(listeners, replica, TRANSPORTS[transport])
    in_other = await connect(listeners, replica, TRANSPORTS[transport])
    in_none = await connect(listeners, replica, TRANSPORTS[transport])
    await in_default.call("subscribe_queue", {"queue_id": "default"})
    await in_other.call("subscribe_queue", {"queue_id": "other"})

    sent = [
        msg("invocation_started", "default", 1),
        msg("invocation_started", "other", 2),
        msg("model_load_started", None, 3),
        msg("invocation_complete", "default", 4, size=INLINE_LIMIT_BYTES),  # parked in event_overflow
        msg("queue_item_status_changed", "default", 5),
        SENTINEL_MESSAGE,
    ]
    for message in sent:
        await bus.publish(message)

    assert await in_default.until_sentinel() == [wire(sent[i]) for i in (0, 2, 3, 4)]
    assert await in_other.until_sentinel() == [wire(sent[i]) for i in (1, 2)]
    assert await in_none.until_sentinel() == [wire(sent[2])]


async def test_many_events_keep_their_order(replica, bus, listeners):
    client = await connect(listeners, replica, ["websocket"])
    await client.call("subscribe_queue", {"queue_id": "default"})
    sent = [msg("invocation_progress", "default", i, size=INLINE_LIMIT_BYTES if i % 3 == 0 else 10) for i in range(30)]
    for message in [*sent, SENTINEL_MESSAGE]:
        await bus.publish(message)
    assert await client.until_sentinel() == [wire(message) for message in sent]


async def test_unsubscribe_stops_delivery(replica, bus, listeners):
    client = await connect(listeners, replica, ["websocket"])
    await client.call("subscribe_queue", {"queue_id": "default"})
    await bus.publish(msg("batch_enqueued", "default", 1))
    await bus.publish(SENTINEL_MESSAGE)
    assert await client.until_sentinel() == [wire(msg("batch_enqueued", "default", 1))]

    await client.call("unsubscribe_queue", {"queue_id": "default"})
    await bus.publish(msg("batch_enqueued", "default", 2))
    await bus.publish(SENTINEL_MESSAGE)
    assert await client.until_sentinel() == []


async def test_bulk_download_rooms_and_bad_subscriptions(replica, bus, listeners):
    client = await connect(listeners, replica, ["websocket"])
    await client.call("subscribe_bulk_download", {"bulk_download_id": "default"})
    # Malformed subscriptions are ignored, not fatal.
    await client.call("subscribe_queue", {"queue": "default"})
    await client.call("subscribe_queue", {"queue_id": 5})
    started = BusMessage(event="bulk_download_started", room="default", data={"bulk_download_id": "default"})
    await bus.publish(started)
    await bus.publish(SENTINEL_MESSAGE)
    assert await client.until_sentinel() == [wire(started)]

    await client.call("unsubscribe_bulk_download", {"bulk_download_id": "default"})
    await bus.publish(started)
    await bus.publish(SENTINEL_MESSAGE)
    assert await client.until_sentinel() == []


async def test_two_replicas_both_deliver_an_event_published_once(database_url, bus, listeners):
    replicas = [await start_replica(database_url) for _ in range(2)]
    try:
        clients = [await connect(listeners, replica, ["websocket"]) for replica in replicas]
        for client in clients:
            await client.call("subscribe_queue", {"queue_id": "default"})
        event = msg("invocation_complete", "default", 9)
        await bus.publish(event)
        await bus.publish(SENTINEL_MESSAGE)
        for client in clients:
            assert await client.until_sentinel() == [wire(event)]
    finally:
        for client in listeners:
            await client.close()
        listeners.clear()
        for replica in replicas:
            await replica.stop()


async def test_job_changes_become_the_events_the_hook_builds(database_url, bus, repo, listeners):
    async def status_events(change: JobChange) -> list[BusMessage]:
        data = {"queue_id": change.queue_id, "item_id": change.item_id, "status": change.status.value}
        return [BusMessage(event="queue_item_status_changed", room=change.queue_id, data=data)]

    replica = await start_replica(database_url, status_events)
    try:
        client = await connect(listeners, replica, ["websocket"])
        await client.call("subscribe_queue", {"queue_id": "default"})
        await bus.publish(msg("batch_enqueued", "default", 1))
        (job,) = await repo.enqueue([NewJob(request={}, queue_id="default")])
        await bus.publish(SENTINEL_MESSAGE)
        assert await client.until_sentinel() == [
            wire(msg("batch_enqueued", "default", 1)),
            ("queue_item_status_changed", {"queue_id": "default", "item_id": job.item_id, "status": "pending"}),
        ]
    finally:
        await client.close()
        listeners.clear()
        await replica.stop()


async def test_a_failing_hook_does_not_stop_the_hub(database_url, bus, repo, listeners):
    async def broken(_change: JobChange) -> list[BusMessage]:
        raise RuntimeError("hook bug")

    replica = await start_replica(database_url, broken)
    try:
        client = await connect(listeners, replica, ["websocket"])
        await client.call("subscribe_queue", {"queue_id": "default"})
        await repo.enqueue([NewJob(request={}, queue_id="default")])
        await bus.publish(msg("batch_enqueued", "default", 1))
        await bus.publish(SENTINEL_MESSAGE)
        assert await client.until_sentinel() == [wire(msg("batch_enqueued", "default", 1))]
    finally:
        await client.close()
        listeners.clear()
        await replica.stop()


async def test_hub_starts_and_stops_with_the_lifespan(database_url):
    replica = await start_replica(database_url)
    client = Listener()
    await client.connect(replica, ["websocket"])  # served means the lifespan startup has completed
    assert replica.hub.running
    await client.close()
    await replica.stop()
    assert not replica.hub.running
