"""With auth on, the `queue_status` counts inside `queue_item_status_changed` are the whole queue's for admins and
the owner's own items' for a non-admin owner, as `GET /queue/{id}/status` shows them. A real uvicorn server, real
Socket.IO clients, events from Postgres; nothing runs the items (the fixtures of test_socket_auth)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.invokeai.test_ownership import Q, batch
from tests.api.invokeai.test_socket import SENTINEL_MESSAGE, Listener
from tests.api.invokeai.test_socket_auth import Server, connect, listeners, server

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

__all__ = ["listeners", "server"]  # the fixtures, shared with test_socket_auth

COUNTS = ("pending", "in_progress", "completed", "failed", "canceled", "total")


def counts(status: dict[str, Any]) -> dict[str, int]:
    return {key: status[key] for key in COUNTS}


async def test_status_counts_are_the_owners_for_users_and_global_for_admins(
    server: Server, listeners: list[Listener]
) -> None:
    alice_token, bob_token, root_token = [await server.token(name) for name in ("alice", "bob", "root")]
    alice = await connect(listeners, server, auth={"token": alice_token})
    root = await connect(listeners, server, auth={"token": root_token})

    async with server.http(bob_token) as bob_http:
        assert (await bob_http.post(f"{Q}/enqueue_batch", json=batch(seeds=(1, 2)))).status_code == 200
    async with server.http(alice_token) as http:
        item_id = (await http.post(f"{Q}/enqueue_batch", json=batch())).json()["item_ids"][0]
        assert (await http.put(f"{Q}/i/{item_id}/cancel")).status_code == 200
        polled = (await http.get(f"{Q}/status")).json()["queue"]
    await server.bus.publish(SENTINEL_MESSAGE)

    def status_changes(events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        return [data for event, data in events if event == "queue_item_status_changed"]

    [mine] = status_changes(await alice.until_sentinel())
    [everyone] = status_changes(await root.until_sentinel())
    assert mine["item_id"] == everyone["item_id"] == item_id and mine["status"] == "canceled"
    own = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0, "canceled": 1, "total": 1}
    assert counts(mine["queue_status"]) == own == counts(polled)
    assert counts(everyone["queue_status"]) == {**own, "pending": 2, "total": 3}  # bob's two items too
    # Everything but the counts is the same event.
    assert {**mine, "queue_status": None} == {**everyone, "queue_status": None}

    async with server.http(root_token) as http:
        assert counts((await http.get(f"{Q}/status")).json()["queue"]) == counts(everyone["queue_status"])
