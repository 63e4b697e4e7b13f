"""Socket.IO with auth on: connections need a token (auth payload, bearer header or cookie); queue events reach
only their item's owner and admins; broadcasts reach every connection.

A real app served by uvicorn, real python-socketio clients, events from Postgres (PgEventBus, PgChangeFeed), and
queue items enqueued and canceled over HTTP by their owners (no dispatcher: nothing runs).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
import socketio
import uvicorn

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.ports import BusMessage
from serve_app.services.accounts import AccountService
from serve_app.services.session_queue import SessionQueueService, StatusEvents
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.event_bus import PgEventBus
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.session_queue_repository import PgSessionQueue
from tests.api.invokeai.test_ownership import FAST, Q, batch
from tests.api.invokeai.test_socket import SENTINEL_MESSAGE, WAIT_S, Listener

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@dataclass
class Server:
    url: str
    accounts: AccountService
    bus: PgEventBus

    async def token(self, name: str) -> str:
        return (await self.accounts.login(name, f"{name}-pw")).token

    def http(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=WAIT_S)


@pytest_asyncio.fixture(loop_scope="session")
async def server(pool: Any, database_url: str) -> AsyncIterator[Server]:
    accounts = AccountService(PgAccountStore(pool), FAST)
    for name, admin in (("root", True), ("alice", False), ("bob", False)):
        await accounts.create_user(name, f"{name}-pw", f"{name}-pw", admin=admin)
    feed = PgChangeFeed(database_url)
    await feed.start()
    queue = PgSessionQueue(pool)
    context = ApiContext(
        jobs=cast(Any, None),
        store=cast(Any, None),
        version="test",
        events=feed,
        status_events=StatusEvents(queue),
        session_queue=SessionQueueService(jobs=PgJobRepository(pool), queue=queue, events=PgEventBus(pool)),
        accounts=accounts,
        auth_enabled=True,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        create_app(context), lifespan="on", log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Server(url=f"http://127.0.0.1:{sock.getsockname()[1]}", accounts=accounts, bus=PgEventBus(pool))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)
        await feed.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def listeners() -> AsyncIterator[list[Listener]]:
    made: list[Listener] = []
    try:
        yield made
    finally:
        for listener in made:
            await listener.close()


async def connect(
    listeners: list[Listener], server: Server, *, auth: Any = None, headers: dict[str, str] | None = None
) -> Listener:
    listener = Listener()
    listeners.append(listener)
    await listener.client.connect(
        server.url,
        socketio_path="/ws/socket.io",
        transports=["websocket"],
        auth=auth,
        headers=headers or {},
        wait_timeout=WAIT_S,
    )
    await listener.call("subscribe_queue", {"queue_id": "default"})
    return listener


async def test_a_connection_without_a_valid_token_is_refused(server: Server) -> None:
    for auth, headers in ((None, {}), ({"token": "not-a-token"}, {}), (None, {"Authorization": "Bearer nope"})):
        client = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                server.url,
                socketio_path="/ws/socket.io",
                transports=["websocket"],
                auth=auth,
                headers=headers,
                wait_timeout=WAIT_S,
            )
        assert not client.connected


async def test_queue_events_reach_their_owner_and_admins_only(server: Server, listeners: list[Listener]) -> None:
    alice_token, bob_token = await server.token("alice"), await server.token("bob")
    alice = await connect(listeners, server, auth={"token": alice_token})
    bob = await connect(listeners, server, headers={"Authorization": f"Bearer {bob_token}"})
    root = await connect(listeners, server, headers={"Cookie": f"enfugue_token={await server.token('root')}"})

    async with server.http(alice_token) as http:
        enqueued = (await http.post(f"{Q}/enqueue_batch", json=batch())).json()
        item_id = enqueued["item_ids"][0]
        assert (await http.put(f"{Q}/i/{item_id}/cancel")).json()["status"] == "canceled"
    broadcast = BusMessage(event="model_load_started", room=None, data={"index": 1})
    await server.bus.publish(broadcast)
    await server.bus.publish(SENTINEL_MESSAGE)

    def summary(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return [(event, data.get("item_id") or data.get("batch_id") or data.get("index")) for event, data in events]

    expected = [
        ("batch_enqueued", enqueued["batch"]["batch_id"]),
        ("queue_item_status_changed", item_id),
        ("model_load_started", 1),
    ]
    assert summary(await alice.until_sentinel()) == expected
    assert summary(await root.until_sentinel()) == expected
    assert summary(await bob.until_sentinel()) == [("model_load_started", 1)]


async def test_revoking_sessions_drops_every_connection(server: Server, listeners: list[Listener], pool: Any) -> None:
    token = await server.token("alice")
    alice = await connect(listeners, server, auth={"token": token})
    dropped = asyncio.Event()
    alice.client.on("disconnect", lambda *_: dropped.set())
    # What `POST /api/settings {"auth": ...}` does on any replica: the hub hears it through Postgres.
    revoking = AccountService(PgAccountStore(pool), FAST, bus=server.bus)
    assert await revoking.revoke_sessions() >= 1
    await asyncio.wait_for(dropped.wait(), WAIT_S)
    assert not alice.client.connected
    # Its token is gone, so it cannot come back with it.
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, socketio_path="/ws/socket.io", transports=["websocket"],
                             auth={"token": token}, wait_timeout=WAIT_S)  # fmt: skip


async def test_a_users_changed_role_drops_only_that_users_connections(
    server: Server, listeners: list[Listener], pool: Any
) -> None:
    alice = await connect(listeners, server, auth={"token": await server.token("alice")})
    bob = await connect(listeners, server, auth={"token": await server.token("bob")})
    dropped = asyncio.Event()
    alice.client.on("disconnect", lambda *_: dropped.set())
    changing = AccountService(PgAccountStore(pool), FAST, bus=server.bus)
    await changing.update_user("alice", admin=True)  # her connection was accepted as a plain user
    await asyncio.wait_for(dropped.wait(), WAIT_S)
    # Bob's connection stays: the hub handles bus messages in order, so the sentinel after the change reaches him.
    await server.bus.publish(SENTINEL_MESSAGE)
    await bob.until_sentinel()
    assert bob.client.connected and not alice.client.connected
