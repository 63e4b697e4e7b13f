"""/api/v1/boards and /api/v1/board_images: board CRUD, cover and counts, moving images, deleting boards."""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

import httpx
import pytest

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from tests.api.invokeai.gallery_support import upload
from tests.support.golden import golden_body

pytestmark = pytest.mark.timeout(60)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


async def create_board(client: httpx.AsyncClient, name: str = "board", **params: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/boards/", params={"board_name": name, **params})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def get_board(client: httpx.AsyncClient, board_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/boards/{board_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_create_and_get_match_the_golden_shape(gallery):
    board = await create_board(gallery, "golden-board")
    uuid.UUID(board["board_id"])
    assert TIMESTAMP.match(board["created_at"]) and board["created_at"] == board["updated_at"]
    golden = golden_body("50-boards-create.json")
    assert list(board) == list(golden)
    same = {"board_id", "created_at", "updated_at"}
    assert {k: v for k, v in board.items() if k not in same} == {k: v for k, v in golden.items() if k not in same}
    # InvokeAI's create and get answer is_private null; its list answers the stored flag.
    assert board["is_private"] is None
    assert await get_board(gallery, board["board_id"]) == board

    listed = (await gallery.get("/api/v1/boards/", params={"all": "true"})).json()
    assert listed == [{**board, "is_private": False}]
    assert listed == [
        {**item, "board_id": board["board_id"], "created_at": board["created_at"], "updated_at": board["updated_at"]}
        for item in golden_body("51-boards-list-all.json")
    ]


async def test_board_errors(gallery):
    response = await gallery.get("/api/v1/boards/does-not-exist")
    assert (response.status_code, response.json()) == (404, golden_body("96-err-404-board.json"))

    response = await gallery.post("/api/v1/boards/")
    assert response.status_code == 422
    assert response.json() == golden_body("92-err-422-missing-param-board_name.json")
    response = await gallery.post("/api/v1/boards/", params={"board_name": "x" * 301})
    assert response.status_code == 422

    response = await gallery.get("/api/v1/boards/")
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Invalid request: Must provide either 'all' or both 'offset' and 'limit'"},
    )
    response = await gallery.get("/api/v1/boards/", params={"offset": 0})
    assert response.status_code == 400

    response = await gallery.patch("/api/v1/boards/does-not-exist", json={"board_name": "x"})
    assert (response.status_code, response.json()) == (404, {"detail": "Board not found"})


async def test_list_pages_order_and_archived(gallery):
    boards = [await create_board(gallery, name) for name in ("beta", "Alpha", "gamma")]

    page = (await gallery.get("/api/v1/boards/", params={"offset": 0, "limit": 2})).json()
    assert list(page) == list(golden_body("56-boards-list-paged.json"))
    assert (page["limit"], page["offset"], page["total"]) == (2, 0, 3)
    assert [board["board_name"] for board in page["items"]] == ["gamma", "Alpha"]
    page = (await gallery.get("/api/v1/boards/", params={"offset": 2, "limit": 2})).json()
    assert [board["board_name"] for board in page["items"]] == ["beta"]

    by_name = (
        await gallery.get("/api/v1/boards/", params={"all": "true", "order_by": "board_name", "direction": "ASC"})
    ).json()
    assert [board["board_name"] for board in by_name] == ["Alpha", "beta", "gamma"]

    response = await gallery.patch(f"/api/v1/boards/{boards[2]['board_id']}", json={"archived": True})
    assert response.status_code == 201
    assert response.json()["archived"] is True
    listed = (await gallery.get("/api/v1/boards/", params={"all": "true"})).json()
    assert [board["board_name"] for board in listed] == ["Alpha", "beta"]
    listed = (await gallery.get("/api/v1/boards/", params={"all": "true", "include_archived": "true"})).json()
    assert [board["board_name"] for board in listed] == ["gamma", "Alpha", "beta"]


async def test_patch_renames_and_forbids_unknown_fields(gallery):
    board = await create_board(gallery, "old")
    response = await gallery.patch(f"/api/v1/boards/{board['board_id']}", json={"board_name": "new"})
    assert response.status_code == 201
    renamed = response.json()
    assert (renamed["board_name"], renamed["archived"], renamed["created_at"]) == ("new", False, board["created_at"])
    assert renamed["updated_at"] >= board["updated_at"]
    assert (await get_board(gallery, board["board_id"]))["board_name"] == "new"

    response = await gallery.patch(f"/api/v1/boards/{board['board_id']}", json={"board_name": "x", "color": "red"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"
    assert (await get_board(gallery, board["board_id"]))["board_name"] == "new"


async def test_board_images_add_move_and_remove(gallery):
    first, second = await create_board(gallery, "first"), await create_board(gallery, "second")
    image = (await upload(gallery))["image_name"]

    response = await gallery.post("/api/v1/board_images/", json={"board_id": first["board_id"], "image_name": image})
    assert response.status_code == 201
    assert response.json() == {"affected_boards": ["none", first["board_id"]], "added_images": [image]}
    assert list(response.json()) == list(golden_body("53-board_images-add.json"))
    assert (await gallery.get(f"/api/v1/images/i/{image}")).json()["board_id"] == first["board_id"]
    assert (await gallery.get(f"/api/v1/boards/{first['board_id']}/image_names")).json() == [image]

    # An image is on one board at most: adding it elsewhere moves it.
    response = await gallery.post("/api/v1/board_images/", json={"board_id": second["board_id"], "image_name": image})
    assert response.json() == {"affected_boards": [first["board_id"], second["board_id"]], "added_images": [image]}
    assert (await gallery.get(f"/api/v1/boards/{first['board_id']}/image_names")).json() == []
    assert (await gallery.get(f"/api/v1/boards/{second['board_id']}/image_names")).json() == [image]

    response = await gallery.request("DELETE", "/api/v1/board_images/", json={"image_name": image})
    assert response.status_code == 201
    assert response.json() == {"affected_boards": [second["board_id"], "none"], "removed_images": [image]}
    assert (await gallery.get(f"/api/v1/images/i/{image}")).json()["board_id"] is None
    assert image in (await gallery.get("/api/v1/boards/none/image_names")).json()

    response = await gallery.post("/api/v1/board_images/", json={"board_id": "no-such-board", "image_name": image})
    assert (response.status_code, response.json()) == (404, {"detail": "Board not found"})
    response = await gallery.post(
        "/api/v1/board_images/", json={"board_id": first["board_id"], "image_name": "missing.png"}
    )
    assert response.status_code == 404
    response = await gallery.request("DELETE", "/api/v1/board_images/", json={"image_name": "missing.png"})
    assert response.status_code == 404


async def test_board_images_batch(gallery):
    first, second = await create_board(gallery, "first"), await create_board(gallery, "second")
    images = [(await upload(gallery))["image_name"] for _ in range(3)]
    await gallery.post("/api/v1/board_images/", json={"board_id": first["board_id"], "image_name": images[0]})

    response = await gallery.post(
        "/api/v1/board_images/batch",
        json={"board_id": second["board_id"], "image_names": [*images, "missing.png"]},
    )
    assert response.status_code == 201
    assert response.json() == {
        "affected_boards": [first["board_id"], "none", second["board_id"]],
        "added_images": images,
    }
    assert sorted((await gallery.get(f"/api/v1/boards/{second['board_id']}/image_names")).json()) == sorted(images)

    response = await gallery.post("/api/v1/board_images/batch/delete", json={"image_names": images[:2]})
    assert response.status_code == 201
    assert response.json() == {"affected_boards": [second["board_id"], "none"], "removed_images": images[:2]}
    assert (await gallery.get(f"/api/v1/boards/{second['board_id']}/image_names")).json() == [images[2]]

    response = await gallery.post(
        "/api/v1/board_images/batch", json={"board_id": "no-such-board", "image_names": images}
    )
    assert response.status_code == 404


async def test_cover_image_and_counts(gallery):
    board = await create_board(gallery, "counted")
    board_id = board["board_id"]
    older = await upload(gallery, board_id=board_id)
    newer = await upload(gallery, board_id=board_id)
    asset = await upload(gallery, category="control", board_id=board_id)
    await upload(gallery, is_intermediate=True, board_id=board_id)
    await upload(gallery)  # on no board

    got = await get_board(gallery, board_id)
    assert (got["cover_image_name"], got["image_count"], got["asset_count"], got["video_count"]) == (
        asset["image_name"],
        2,
        1,
        0,
    )
    # Starred first.
    await gallery.post("/api/v1/images/star", json={"image_names": [older["image_name"]]})
    assert (await get_board(gallery, board_id))["cover_image_name"] == older["image_name"]
    await gallery.post("/api/v1/images/unstar", json={"image_names": [older["image_name"]]})
    await gallery.delete(f"/api/v1/images/i/{asset['image_name']}")
    got = await get_board(gallery, board_id)
    assert (got["cover_image_name"], got["image_count"], got["asset_count"]) == (newer["image_name"], 2, 0)

    listed = (await gallery.get("/api/v1/boards/", params={"all": "true"})).json()
    assert (listed[0]["cover_image_name"], listed[0]["image_count"]) == (newer["image_name"], 2)

    # Board image names filter like the image listing.
    names = (await gallery.get(f"/api/v1/boards/{board_id}/image_names", params={"is_intermediate": "false"})).json()
    assert sorted(names) == sorted([older["image_name"], newer["image_name"]])
    names = (await gallery.get(f"/api/v1/boards/{board_id}/image_names", params={"categories": ["control"]})).json()
    assert names == []


async def test_delete_board_keeps_its_images_by_default(gallery, gallery_services):
    board = await create_board(gallery, "kept")
    images = [(await upload(gallery, board_id=board["board_id"]))["image_name"] for _ in range(2)]

    response = await gallery.delete(f"/api/v1/boards/{board['board_id']}")
    assert response.status_code == 200
    body = response.json()
    assert (body["board_id"], body["deleted_images"]) == (board["board_id"], [])
    assert sorted(body["deleted_board_images"]) == sorted(images)
    for name in images:
        dto = (await gallery.get(f"/api/v1/images/i/{name}")).json()
        assert dto["board_id"] is None
        assert gallery_services.has_object(f"images/{name}")
    assert (await gallery.get(f"/api/v1/boards/{board['board_id']}")).status_code == 404


async def test_delete_board_with_its_images(gallery, gallery_services):
    board = await create_board(gallery, "purged")
    images = [(await upload(gallery, board_id=board["board_id"]))["image_name"] for _ in range(2)]
    elsewhere = (await upload(gallery))["image_name"]

    response = await gallery.delete(f"/api/v1/boards/{board['board_id']}", params={"include_images": "true"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["board_id", "deleted_board_images", "deleted_images"]
    assert (body["board_id"], body["deleted_board_images"]) == (board["board_id"], [])
    assert sorted(body["deleted_images"]) == sorted(images)
    for name in images:
        assert (await gallery.get(f"/api/v1/images/i/{name}")).status_code == 404
        assert not gallery_services.has_object(f"images/{name}")
        assert not gallery_services.has_object(f"thumbnails/{name.removesuffix('.png')}.webp")
    assert (await gallery.get(f"/api/v1/images/i/{elsewhere}")).status_code == 200


async def test_images_list_by_board_matches_the_golden_shape(gallery):
    board = await create_board(gallery, "b")
    image = await upload(gallery, board_id=board["board_id"])
    page = (await gallery.get("/api/v1/images/", params={"board_id": board["board_id"], "limit": 10})).json()
    golden = golden_body("60-images-list-board.json")
    assert list(page) == list(golden)
    assert list(page["items"][0]) == list(golden["items"][0])
    assert page["items"] == [image]


async def test_routes_answer_503_without_the_services():
    app = create_app(ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/api/v1/boards/", params={"all": "true"})).status_code == 503
        assert (await client.get("/api/v1/images/")).status_code == 503
