"""Accounts across the InvokeAI API, auth on: users see and change only their own queue items, images and boards;
admins see everything; with auth off nothing is narrowed.

Real app (httpx.ASGITransport), real Postgres, real argon2 (cheap parameters). Items are stored but never run
(no dispatcher), so they stay pending unless a test cancels them.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.services.accounts import AccountService
from serve_app.services.boards import BoardService
from serve_app.services.images import ImageService
from serve_app.services.session_queue import SessionQueueService
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.image_repository import PgImageRepository
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.objects import FileObjectStore
from serve_app.storage.passwords import Argon2Hasher
from serve_app.storage.session_queue_repository import PgSessionQueue
from tests.api.invokeai.conftest import RecordingBus
from tests.api.invokeai.gallery_support import upload
from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

FAST = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
Q = "/api/v1/queue/default"
# Never loaded: nothing runs the items.
MODEL = {"key": "k-sd15", "hash": "blake3:00", "name": "demo-sd15", "base": "sd-1", "type": "main"}


@dataclass
class Clients:
    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    root: httpx.AsyncClient
    bus: RecordingBus


def batch(*, seeds: tuple[int, ...] = (1,), destination: str = "generate") -> dict[str, Any]:
    graph, _ = sd1_txt2img(MODEL, width=64, height=64, steps=2)
    return enqueue_body(graph, seeds=list(seeds), prompts=["a cat"], destination=destination)


async def enqueue(client: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    response = await client.post(f"{Q}/enqueue_batch", json=batch(**kwargs))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _app(pool: Any, tmp_path: Path, accounts: AccountService, *, auth: bool, bus: RecordingBus | None = None) -> Any:
    store = FileObjectStore(tmp_path / "objects")
    images = PgImageRepository(pool)
    context = ApiContext(
        jobs=cast(Any, None),
        store=store,
        version="test",
        session_queue=SessionQueueService(jobs=PgJobRepository(pool), queue=PgSessionQueue(pool)),
        images=ImageService(repo=images, store=store, bus=bus),
        boards=BoardService(boards=images, images=images, store=store),
        accounts=accounts,
        auth_enabled=auth,
    )
    return create_app(context)


@pytest_asyncio.fixture(loop_scope="session")
async def clients(pool: Any, tmp_path: Path) -> AsyncIterator[Clients]:
    accounts = AccountService(PgAccountStore(pool), FAST)
    for name, admin in (("root", True), ("alice", False), ("bob", False)):
        await accounts.create_user(name, f"{name}-pw", f"{name}-pw", admin=admin)
    bus = RecordingBus()
    app = _app(pool, tmp_path, accounts, auth=True, bus=bus)

    async def client(name: str) -> httpx.AsyncClient:
        token = (await accounts.login(name, f"{name}-pw")).token
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://serve-app.test",
            headers={"Authorization": f"Bearer {token}"},
        )

    async with await client("alice") as alice, await client("bob") as bob, await client("root") as root:
        yield Clients(alice=alice, bob=bob, root=root, bus=bus)


# -- queue --------------------------------------------------------------------------------------------------


async def test_queue_items_are_their_owners_alone(clients: Clients) -> None:
    mine = (await enqueue(clients.alice))["item_ids"][0]
    theirs = (await enqueue(clients.bob))["item_ids"][0]

    assert (await clients.alice.get(f"{Q}/i/{mine}")).json()["item_id"] == mine
    assert (await clients.bob.get(f"{Q}/i/{mine}")).status_code == 404
    assert (await clients.root.get(f"{Q}/i/{mine}")).status_code == 200
    assert [item["item_id"] for item in (await clients.bob.get(f"{Q}/list_all")).json()] == [theirs]
    assert (await clients.bob.get(f"{Q}/item_ids")).json() == {"item_ids": [theirs], "total_count": 1}
    by_ids = await clients.bob.post(f"{Q}/items_by_ids", json={"item_ids": [mine, theirs]})
    assert [item["item_id"] for item in by_ids.json()] == [theirs]
    assert [item["item_id"] for item in (await clients.bob.get(f"{Q}/list")).json()["items"]] == [theirs]
    assert (await clients.bob.get(f"{Q}/next")).json()["item_id"] == theirs
    assert (await clients.alice.get(f"{Q}/next")).json()["item_id"] == mine
    status = (await clients.bob.get(f"{Q}/status")).json()["queue"]
    assert (status["pending"], status["total"]) == (1, 1)
    batch_id = (await clients.alice.get(f"{Q}/i/{mine}")).json()["batch_id"]
    assert (await clients.bob.get(f"{Q}/b/{batch_id}/status")).json()["total"] == 0
    assert (await clients.alice.get(f"{Q}/b/{batch_id}/status")).json()["total"] == 1
    counts = (await clients.bob.get(f"{Q}/counts_by_destination", params={"destination": "generate"})).json()
    assert counts["pending"] == 1

    # The admin sees both.
    assert {item["item_id"] for item in (await clients.root.get(f"{Q}/list_all")).json()} == {mine, theirs}
    assert (await clients.root.get(f"{Q}/status")).json()["queue"]["pending"] == 2


async def test_single_item_changes_of_others_items_are_404_and_change_nothing(clients: Clients) -> None:
    mine = (await enqueue(clients.alice))["item_ids"][0]

    assert (await clients.bob.put(f"{Q}/i/{mine}/cancel")).status_code == 404
    assert (await clients.bob.delete(f"{Q}/i/{mine}")).status_code == 200  # unknown ids are fine, as before
    assert (await clients.alice.get(f"{Q}/i/{mine}")).json()["status"] == "pending"

    canceled = await clients.alice.put(f"{Q}/i/{mine}/cancel")
    assert canceled.json()["status"] == "canceled"
    retried = await clients.bob.put(f"{Q}/retry_items_by_id", json=[mine])
    assert retried.json()["retried_item_ids"] == []
    assert (await clients.alice.put(f"{Q}/retry_items_by_id", json=[mine])).json()["retried_item_ids"] == [mine]


async def test_bulk_changes_touch_only_the_callers_items(clients: Clients) -> None:
    alices = await enqueue(clients.alice, seeds=(1, 2))
    bobs = await enqueue(clients.bob)
    alice_batch = alices["batch"]["batch_id"]

    # Bob names Alice's batch, then cancels and deletes everything he can: none of it is Alice's.
    assert (await clients.bob.put(f"{Q}/cancel_by_batch_ids", json={"batch_ids": [alice_batch]})).json() == {
        "canceled": 0
    }
    by_destination = await clients.bob.put(f"{Q}/cancel_by_destination", params={"destination": "generate"})
    assert by_destination.json() == {"canceled": 1}
    assert (await clients.bob.put(f"{Q}/cancel_all_except_current")).json() == {"canceled": 0}
    assert (await clients.bob.put(f"{Q}/prune")).json() == {"deleted": 1}
    await enqueue(clients.bob)
    assert (await clients.bob.put(f"{Q}/delete_all_except_current")).json() == {"deleted": 1}
    await enqueue(clients.bob)
    assert (await clients.bob.put(f"{Q}/clear")).json() == {"deleted": 1}
    await enqueue(clients.bob)
    assert (await clients.bob.delete(f"{Q}/d/generate")).json() == {"deleted": 1}

    alice_items = (await clients.alice.get(f"{Q}/list_all")).json()
    assert sorted(item["item_id"] for item in alice_items) == sorted(alices["item_ids"])
    assert {item["status"] for item in alice_items} == {"pending"}
    assert bobs["item_ids"][0] not in {item["item_id"] for item in (await clients.root.get(f"{Q}/list_all")).json()}

    # The admin's bulk change reaches everyone's items.
    assert (await clients.root.put(f"{Q}/cancel_all_except_current")).json() == {"canceled": 2}


async def test_pausing_the_processor_is_for_admins(clients: Clients) -> None:
    assert (await clients.alice.put(f"{Q}/processor/pause")).status_code == 403
    assert (await clients.alice.put(f"{Q}/processor/resume")).status_code == 403
    assert (await clients.root.put(f"{Q}/processor/pause")).json()["is_started"] is False
    assert (await clients.root.put(f"{Q}/processor/resume")).json()["is_started"] is True


# -- images and boards --------------------------------------------------------------------------------------


async def test_images_are_their_owners_alone(clients: Clients) -> None:
    mine = (await upload(clients.alice))["image_name"]
    theirs = (await upload(clients.bob, is_intermediate=True))["image_name"]
    base = "/api/v1/images"

    for suffix in ("", "/full", "/thumbnail", "/metadata", "/urls", "/workflow"):
        assert (await clients.bob.get(f"{base}/i/{mine}{suffix}")).status_code == 404, suffix
        assert (await clients.alice.get(f"{base}/i/{mine}{suffix}")).status_code == 200, suffix
        assert (await clients.root.get(f"{base}/i/{mine}{suffix}")).status_code == 200, suffix
    assert (await clients.bob.head(f"{base}/i/{mine}/full")).status_code == 404
    assert (await clients.bob.patch(f"{base}/i/{mine}", json={"starred": True})).status_code == 400

    listed = (await clients.bob.get(f"{base}/", params={"is_intermediate": "true"})).json()
    assert [image["image_name"] for image in listed["items"]] == [theirs]
    assert (await clients.bob.get(f"{base}/names")).json()["image_names"] == [theirs]
    assert (await clients.root.get(f"{base}/names")).json()["total_count"] == 2
    by_names = await clients.bob.post(f"{base}/images_by_names", json={"image_names": [mine, theirs]})
    assert [image["image_name"] for image in by_names.json()] == [theirs]
    assert (await clients.alice.get(f"{base}/intermediates")).json() == 0
    assert (await clients.root.get(f"{base}/intermediates")).json() == 1

    # Bob's stars, deletes and bulk deletes skip Alice's image.
    assert (await clients.bob.post(f"{base}/star", json={"image_names": [mine]})).json()["starred_images"] == []
    assert (await clients.bob.post(f"{base}/delete", json={"image_names": [mine]})).json()["deleted_images"] == []
    assert (await clients.bob.delete(f"{base}/i/{mine}")).json()["deleted_images"] == []
    assert (await clients.alice.delete(f"{base}/intermediates")).json() == 0
    assert (await clients.root.get(f"{base}/i/{theirs}")).status_code == 200
    # Both images are on no board: Bob's "delete uncategorized" deletes only his.
    assert (await clients.bob.delete(f"{base}/uncategorized")).json()["deleted_images"] == [theirs]
    got = (await clients.alice.get(f"{base}/i/{mine}")).json()
    assert got["starred"] is False


async def test_boards_are_their_owners_alone(clients: Clients) -> None:
    board = (await clients.alice.post("/api/v1/boards/", params={"board_name": "cats"})).json()["board_id"]
    mine = (await upload(clients.alice))["image_name"]
    theirs = (await upload(clients.bob))["image_name"]

    assert (await clients.bob.get(f"/api/v1/boards/{board}")).status_code == 404
    assert (await clients.bob.patch(f"/api/v1/boards/{board}", json={"board_name": "dogs"})).status_code == 404
    assert (await clients.bob.delete(f"/api/v1/boards/{board}")).status_code == 404
    assert (await clients.bob.get(f"/api/v1/boards/{board}/image_names")).status_code == 404
    assert (await clients.bob.get("/api/v1/boards/", params={"all": "true"})).json() == []
    assert [b["board_id"] for b in (await clients.root.get("/api/v1/boards/", params={"all": "true"})).json()] == [
        board
    ]
    add = {"board_id": board, "image_name": theirs}
    assert (await clients.bob.post("/api/v1/board_images/", json=add)).status_code == 404

    # Alice may not put Bob's image on her board either; her own goes.
    batch_add = {"board_id": board, "image_names": [mine, theirs]}
    added = await clients.alice.post("/api/v1/board_images/batch", json=batch_add)
    assert added.json()["added_images"] == [mine]
    removed = await clients.bob.post("/api/v1/board_images/batch/delete", json={"image_names": [mine]})
    assert removed.json()["removed_images"] == []
    assert (await clients.alice.get(f"/api/v1/boards/{board}/image_names")).json() == [mine]
    assert (await clients.root.get(f"/api/v1/boards/{board}")).json()["board_name"] == "cats"


async def test_uploads_go_onto_own_boards_only(clients: Clients) -> None:
    board = (await clients.alice.post("/api/v1/boards/", params={"board_name": "cats"})).json()["board_id"]
    await upload(clients.bob, board_id=board, expect=404)
    uploaded = await upload(clients.alice, board_id=board)
    assert uploaded["board_id"] == board
    assert (await clients.root.get(f"/api/v1/boards/{board}/image_names")).json() == [uploaded["image_name"]]


async def test_bulk_downloads_hold_own_images_and_only_the_requester_hears_of_them(clients: Clients) -> None:
    mine = (await upload(clients.alice))["image_name"]
    theirs = (await upload(clients.bob))["image_name"]

    started = await clients.bob.post("/api/v1/images/download", json={"image_names": [mine, theirs]})
    name = started.json()["bulk_download_item_name"]
    done = await clients.bus.wait_for("bulk_download_complete", bulk_download_item_name=name)
    assert done.owner == "bob"
    archive = zipfile.ZipFile(io.BytesIO((await clients.bob.get(f"/api/v1/images/download/{name}")).content))
    assert archive.namelist() == [theirs]


# -- auth off -----------------------------------------------------------------------------------------------


async def test_with_auth_off_every_request_sees_everything(pool: Any, tmp_path: Path) -> None:
    accounts = AccountService(PgAccountStore(pool), FAST)
    app = _app(pool, tmp_path, accounts, auth=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test") as http:
        first = (await enqueue(http))["item_ids"][0]
        assert (await http.get(f"{Q}/i/{first}")).json()["item_id"] == first
        assert (await http.put(f"{Q}/processor/pause")).json()["is_started"] is False
        image = (await upload(http))["image_name"]
        assert (await http.get(f"/api/v1/images/i/{image}")).json()["image_name"] == image
