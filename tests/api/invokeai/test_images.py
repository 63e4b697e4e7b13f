"""/api/v1/images: uploads, the gallery queries, bytes and headers, stars, deletes and bulk downloads."""

from __future__ import annotations

import io
import json
import re
import struct
import uuid
import zipfile
import zlib
from typing import Any

import pytest
from PIL import Image

from serve_app.domain.errors import ImageNotFound
from tests.api.invokeai.gallery_support import png_bytes, upload
from tests.support.golden import golden_body

pytestmark = pytest.mark.timeout(60)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
UUID_PNG = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.png$")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels, with one tiny IDAT: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


# Uploads


async def test_upload_answers_201_with_location_and_the_dto(gallery, gallery_services):
    text = {
        "invokeai_metadata": json.dumps({"positive_prompt": "a cat", "seed": 5}),
        "invokeai_workflow": '{"nodes": []}',
        "invokeai_graph": '{"id": "g"}',
        "unrelated": "dropped",
    }
    response = await gallery.post(
        "/api/v1/images/upload",
        params={"image_category": "user", "is_intermediate": "true", "session_id": "sess-1"},
        files={"file": ("cat.png", png_bytes(600, 300, text=text), "image/png")},
    )
    assert response.status_code == 201, response.text
    dto = response.json()
    name = dto["image_name"]
    assert UUID_PNG.match(name)
    assert response.headers["location"] == f"api/v1/images/i/{name}/full"
    assert list(dto) == list(golden_body("41-image-dto.json"))
    assert dto == {
        "image_name": name,
        "image_url": f"api/v1/images/i/{name}/full",
        "thumbnail_url": f"api/v1/images/i/{name}/thumbnail",
        "image_origin": "external",
        "image_category": "user",
        "width": 600,
        "height": 300,
        "created_at": dto["created_at"],
        "updated_at": dto["updated_at"],
        "deleted_at": None,
        "is_intermediate": True,
        "session_id": "sess-1",
        "node_id": None,
        "starred": False,
        "has_workflow": True,
        "board_id": None,
    }
    assert TIMESTAMP.match(dto["created_at"]) and TIMESTAMP.match(dto["updated_at"])

    # The stored PNG keeps InvokeAI's chunks (and only those); the thumbnail is a WebP of 256 px at most.
    assert gallery_services.has_object(f"images/{name}")
    full = await gallery.get(f"/api/v1/images/i/{name}/full")
    with Image.open(io.BytesIO(full.content)) as stored:
        assert (stored.format, stored.size) == ("PNG", (600, 300))
        assert json.loads(stored.info["invokeai_metadata"]) == {"positive_prompt": "a cat", "seed": 5}
        assert stored.info["invokeai_workflow"] == '{"nodes": []}'
        assert stored.info["invokeai_graph"] == '{"id": "g"}'
        assert "unrelated" not in stored.info
    thumbnail = await gallery.get(f"/api/v1/images/i/{name}/thumbnail")
    assert thumbnail.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumbnail.content)) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (256, 128))

    assert (await gallery.get(f"/api/v1/images/i/{name}/metadata")).json() == {"positive_prompt": "a cat", "seed": 5}
    assert (await gallery.get(f"/api/v1/images/i/{name}/workflow")).json() == {
        "workflow": '{"nodes": []}',
        "graph": '{"id": "g"}',
    }


async def test_upload_metadata_field_wins_and_plain_images_have_none(gallery):
    text = {"invokeai_metadata": json.dumps({"from": "chunk"})}
    dto = await upload(gallery, png_bytes(text=text), form={"metadata": json.dumps({"from": "form"})})
    assert (await gallery.get(f"/api/v1/images/i/{dto['image_name']}/metadata")).json() == {"from": "form"}

    plain = await upload(gallery, png_bytes(image_format="JPEG"), content_type="image/jpeg", filename="x.jpg")
    assert plain["has_workflow"] is False
    assert (await gallery.get(f"/api/v1/images/i/{plain['image_name']}/metadata")).json() is None
    assert (await gallery.get(f"/api/v1/images/i/{plain['image_name']}/workflow")).json() == {
        "workflow": None,
        "graph": None,
    }
    # JPEG in, PNG stored.
    full = await gallery.get(f"/api/v1/images/i/{plain['image_name']}/full")
    assert full.content.startswith(b"\x89PNG")

    body = await upload(gallery, form={"metadata": "[1, 2]"}, expect=400)
    assert body == {"detail": "metadata must be a JSON object"}


async def test_upload_rejects_what_is_not_an_image(gallery, gallery_services):
    body = await upload(gallery, b"hello", content_type="text/plain", filename="a.txt", expect=415)
    assert body == {"detail": "Not an image"}
    body = await upload(gallery, b"\x89PNG but not really", expect=415)
    assert body == {"detail": "Failed to read image"}
    truncated = png_bytes(300, 300, mode="RGB", color=(1, 2, 3))[:80]
    body = await upload(gallery, truncated, expect=415)
    assert body == {"detail": "Failed to read image"}
    # A format PIL reads but uploads may not be (only PNG, JPEG, WebP, GIF, BMP and TIFF are opened).
    body = await upload(gallery, png_bytes(image_format="PPM"), content_type="image/x-portable-pixmap", expect=415)
    assert body == {"detail": "Failed to read image"}
    assert await gallery_services.repo.count_intermediates() == 0
    assert (await gallery.get("/api/v1/images/", params={"limit": 0})).json()["total"] == 0


async def test_upload_too_many_bytes_is_413(gallery):
    too_big = b"\0" * (512 * 1024 + 1)
    body = await upload(gallery, too_big, expect=413)
    assert "larger than" in body["detail"]


async def test_upload_too_many_pixels_is_400_without_decoding(gallery):
    # Over this app's max_pixels (1 Mpx), read from the header alone: the IDAT could never fill it.
    body = await upload(gallery, png_header_only(2000, 2000), expect=400)
    assert "too many pixels" in body["detail"]
    # A classic bomb: far beyond PIL's own limit too.
    body = await upload(gallery, png_header_only(100_000, 100_000), expect=400)
    assert "too many pixels" in body["detail"]


async def test_upload_resize_to_and_crop_visible(gallery):
    dto = await upload(gallery, png_bytes(100, 80), form={"resize_to": json.dumps({"width": 50, "height": 20})})
    assert (dto["width"], dto["height"]) == (50, 20)

    for bad in ('{"width": 5000, "height": 5000}', '{"width": 0, "height": 10}', "[10, 10]", "nope", '{"width": 1}'):
        body = await upload(gallery, form={"resize_to": bad}, expect=400)
        assert body == {"detail": "Invalid resize_to format or size"}, bad

    # A 40×30 opaque rectangle in a transparent 100×100 canvas.
    canvas = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    canvas.paste(Image.new("RGBA", (40, 30), (255, 0, 0, 255)), (10, 20))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    dto = await upload(gallery, buffer.getvalue(), crop_visible=True)
    assert (dto["width"], dto["height"]) == (40, 30)
    dto = await upload(gallery, buffer.getvalue())
    assert (dto["width"], dto["height"]) == (100, 100)


async def test_upload_onto_a_board(gallery):
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    dto = await upload(gallery, board_id=board["board_id"])
    assert dto["board_id"] == board["board_id"]
    # As InvokeAI: an unknown board leaves the image on no board.
    dto = await upload(gallery, board_id="no-such-board")
    assert dto["board_id"] is None


async def test_create_image_upload_entry_is_501(gallery):
    response = await gallery.post("/api/v1/images/", json={"width": 64, "height": 64})
    assert response.status_code == 501


# Queries


async def test_list_filters_pagination_and_counts(gallery, gallery_services):
    general = [await upload(gallery) for _ in range(3)]
    mask = await upload(gallery, category="mask")
    intermediate = await upload(gallery, is_intermediate=True)
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    boarded = await upload(gallery, board_id=board["board_id"])
    await gallery.post("/api/v1/images/star", json={"image_names": [general[0]["image_name"]]})

    listing = (await gallery.get("/api/v1/images/")).json()
    assert list(listing) == ["limit", "offset", "total", "items"]
    assert (listing["limit"], listing["offset"], listing["total"]) == (10, 0, 6)
    names = [item["image_name"] for item in listing["items"]]
    # Starred first, then newest first.
    assert names[0] == general[0]["image_name"]
    assert names[1:] == [
        boarded["image_name"],
        intermediate["image_name"],
        mask["image_name"],
        general[2]["image_name"],
        general[1]["image_name"],
    ]

    async def names_of(**params) -> list[str]:
        response = await gallery.get("/api/v1/images/", params=params)
        assert response.status_code == 200, response.text
        return [item["image_name"] for item in response.json()["items"]]

    assert await names_of(categories=["mask"]) == [mask["image_name"]]
    assert set(await names_of(categories=["general", "mask"], is_intermediate="false")) == {
        *(image["image_name"] for image in general),
        mask["image_name"],
        boarded["image_name"],
    }
    assert await names_of(is_intermediate="true") == [intermediate["image_name"]]
    assert await names_of(board_id=board["board_id"]) == [boarded["image_name"]]
    assert boarded["image_name"] not in await names_of(board_id="none")
    assert await names_of(image_origin="internal") == []
    assert await names_of(starred_first="false", order_dir="ASC", offset=1, limit=2) == [
        general[1]["image_name"],
        general[2]["image_name"],
    ]

    counted = (await gallery.get("/api/v1/images/", params={"limit": 0, "categories": ["general"]})).json()
    assert counted == {"limit": 0, "offset": 0, "total": 5, "items": []}
    assert (await gallery.get("/api/v1/images/", params={"order_dir": "sideways"})).status_code == 422
    assert (await gallery.get("/api/v1/images/", params={"limit": -1})).status_code == 422

    result = (await gallery.get("/api/v1/images/names", params={"categories": ["general"]})).json()
    assert list(result) == ["image_names", "starred_count", "total_count"]
    assert result["image_names"][0] == general[0]["image_name"]
    assert (result["starred_count"], result["total_count"]) == (1, 5)
    none_board = (await gallery.get("/api/v1/images/names", params={"board_id": "none"})).json()
    assert boarded["image_name"] not in none_board["image_names"]
    assert none_board["total_count"] == 5


async def test_search_term_matches_metadata(gallery):
    cat = await upload(gallery, form={"metadata": json.dumps({"positive_prompt": "A fluffy CAT"})})
    await upload(gallery, form={"metadata": json.dumps({"positive_prompt": "a dog"})})
    response = await gallery.get("/api/v1/images/", params={"search_term": "fluffy cat"})
    assert [item["image_name"] for item in response.json()["items"]] == [cat["image_name"]]


async def test_images_by_names_keeps_request_order(gallery):
    first, second = await upload(gallery), await upload(gallery)
    body = {"image_names": [second["image_name"], "missing.png", first["image_name"], "../etc/passwd"]}
    response = await gallery.post("/api/v1/images/images_by_names", json=body)
    assert response.status_code == 200
    assert [dto["image_name"] for dto in response.json()] == [second["image_name"], first["image_name"]]
    assert response.json()[1] == first


async def test_patch_updates_the_record(gallery):
    dto = await upload(gallery)
    name = dto["image_name"]
    response = await gallery.patch(
        f"/api/v1/images/i/{name}", json={"image_category": "control", "starred": True, "unknown": 1}
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["image_category"], patched["starred"], patched["is_intermediate"]) == ("control", True, False)
    assert patched["updated_at"] >= dto["updated_at"]
    assert (await gallery.get(f"/api/v1/images/i/{name}")).json() == patched

    response = await gallery.patch(f"/api/v1/images/i/{name}", json={"session_id": "s9", "is_intermediate": True})
    assert (response.json()["session_id"], response.json()["is_intermediate"]) == ("s9", True)
    assert response.json()["image_category"] == "control"

    response = await gallery.patch("/api/v1/images/i/missing.png", json={"starred": True})
    assert (response.status_code, response.json()) == (400, {"detail": "Failed to update image"})
    response = await gallery.patch(f"/api/v1/images/i/{name}", json={"image_category": "bogus"})
    assert response.status_code == 422


async def test_star_and_unstar(gallery):
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    on_board = await upload(gallery, board_id=board["board_id"])
    loose = await upload(gallery)
    names = [on_board["image_name"], loose["image_name"]]

    response = await gallery.post("/api/v1/images/star", json={"image_names": [*names, "missing.png"]})
    assert response.status_code == 200
    assert response.json() == {"affected_boards": [board["board_id"], "none"], "starred_images": names}
    assert list(response.json()) == list(golden_body("57-images-star.json"))
    assert (await gallery.get(f"/api/v1/images/i/{names[1]}")).json()["starred"] is True

    response = await gallery.post("/api/v1/images/unstar", json={"image_names": [names[0]]})
    assert response.json() == {"affected_boards": [board["board_id"]], "unstarred_images": [names[0]]}
    assert (await gallery.get(f"/api/v1/images/i/{names[0]}")).json()["starred"] is False


# Deletes


async def test_delete_removes_rows_and_objects(gallery, gallery_services):
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    dto = await upload(gallery, board_id=board["board_id"])
    name = dto["image_name"]
    keys = [f"images/{name}", f"thumbnails/{name.removesuffix('.png')}.webp"]
    assert all(gallery_services.has_object(key) for key in keys)

    response = await gallery.delete(f"/api/v1/images/i/{name}")
    assert response.status_code == 200
    assert response.json() == {"affected_boards": [board["board_id"]], "deleted_images": [name]}
    assert not any(gallery_services.has_object(key) for key in keys)
    assert (await gallery.get(f"/api/v1/images/i/{name}")).status_code == 404

    # Never a 404: an unknown image is simply not deleted.
    response = await gallery.delete(f"/api/v1/images/i/{name}")
    assert (response.status_code, response.json()) == (200, {"affected_boards": [], "deleted_images": []})

    first, second, kept = await upload(gallery), await upload(gallery), await upload(gallery)
    response = await gallery.post(
        "/api/v1/images/delete", json={"image_names": [first["image_name"], second["image_name"], "nope.png"]}
    )
    assert response.json() == {
        "affected_boards": ["none"],
        "deleted_images": [first["image_name"], second["image_name"]],
    }
    assert not gallery_services.has_object(f"images/{first['image_name']}")
    assert gallery_services.has_object(f"images/{kept['image_name']}")


async def test_intermediates_count_and_clear(gallery, gallery_services):
    intermediates = [await upload(gallery, is_intermediate=True) for _ in range(2)]
    kept = await upload(gallery)
    assert (await gallery.get("/api/v1/images/intermediates")).json() == 2

    response = await gallery.delete("/api/v1/images/intermediates")
    assert (response.status_code, response.json()) == (200, 2)
    assert (await gallery.get("/api/v1/images/intermediates")).json() == 0
    assert not any(gallery_services.has_object(f"images/{dto['image_name']}") for dto in intermediates)
    assert (await gallery.get(f"/api/v1/images/i/{kept['image_name']}")).status_code == 200


async def test_delete_uncategorized_keeps_boarded_images(gallery, gallery_services):
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    boarded = await upload(gallery, board_id=board["board_id"])
    loose = [await upload(gallery), await upload(gallery, is_intermediate=True)]

    response = await gallery.delete("/api/v1/images/uncategorized")
    assert response.status_code == 200
    body = response.json()
    assert body["affected_boards"] == ["none"]
    assert sorted(body["deleted_images"]) == sorted(dto["image_name"] for dto in loose)
    assert not any(gallery_services.has_object(f"images/{dto['image_name']}") for dto in loose)
    assert (await gallery.get(f"/api/v1/images/i/{boarded['image_name']}")).status_code == 200


# Bytes, headers, urls


async def test_full_head_thumbnail_and_urls(gallery):
    dto = await upload(gallery, png_bytes(40, 20))
    name = dto["image_name"]

    full = await gallery.get(f"/api/v1/images/i/{name}/full")
    assert full.status_code == 200
    assert full.headers["content-type"] == "image/png"
    assert full.headers["cache-control"] == "max-age=31536000"
    assert full.headers["content-disposition"] == f'inline; filename="{name}"'
    with Image.open(io.BytesIO(full.content)) as image:
        assert image.size == (40, 20)

    head = await gallery.head(f"/api/v1/images/i/{name}/full")
    assert head.status_code == 200
    assert head.headers["content-type"] == "image/png"
    assert head.headers["cache-control"] == "max-age=31536000"
    assert head.content == b""

    thumbnail = await gallery.get(f"/api/v1/images/i/{name}/thumbnail")
    assert thumbnail.headers["content-type"] == "image/webp"
    assert thumbnail.headers["cache-control"] == "max-age=31536000"
    assert thumbnail.content[:4] == b"RIFF" and thumbnail.content[8:12] == b"WEBP"

    urls = (await gallery.get(f"/api/v1/images/i/{name}/urls")).json()
    assert urls == {
        "image_name": name,
        "image_url": f"api/v1/images/i/{name}/full",
        "thumbnail_url": f"api/v1/images/i/{name}/thumbnail",
    }
    assert list(urls) == list(golden_body("44-image-urls.json"))


@pytest.mark.parametrize("suffix", ["", "/full", "/thumbnail", "/urls", "/metadata", "/workflow"])
async def test_missing_image_is_a_bare_404(gallery, suffix):
    response = await gallery.get(f"/api/v1/images/i/does-not-exist.png{suffix}")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    assert response.json() == golden_body("94-err-404-image.json")


async def test_head_of_a_missing_image_is_404(gallery):
    assert (await gallery.head("/api/v1/images/i/nope.png/full")).status_code == 404


@pytest.mark.parametrize(
    "name", ["..", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", ".hidden.png", "a%5Cb.png", "x%00.png", "images%2Fa.png"]
)
async def test_names_that_are_not_plain_never_reach_storage(gallery, gallery_services, tmp_path, name):
    # Something a traversal could find: a file just outside the object store's root.
    secret = gallery_services.store.root.parent / "secret.png"
    secret.write_bytes(png_bytes())
    for suffix in ("/full", "/thumbnail", ""):
        response = await gallery.get(f"/api/v1/images/i/{name}{suffix}")
        assert response.content != secret.read_bytes()
        if response.request.url.path.startswith("/api/v1/images/i/"):
            # (A bare `..` is resolved by the client itself and asks for another route.)
            assert response.status_code in (404, 400), (name, suffix, response.status_code)


async def test_the_service_refuses_unsafe_names(gallery_services):
    for name in ("../secret.png", "a/b.png", "..", "", "x" * 300):
        with pytest.raises(ImageNotFound):
            await gallery_services.images.full(name)


# Bulk download


async def test_bulk_download_of_names(gallery, gallery_services):
    first, second = await upload(gallery, png_bytes(10, 10)), await upload(gallery, png_bytes(20, 10))
    names = [first["image_name"], second["image_name"]]

    response = await gallery.post("/api/v1/images/download", json={"image_names": names})
    assert response.status_code == 202
    body = response.json()
    assert list(body) == ["response", "bulk_download_item_name"]
    assert body["response"] is None
    item_name = body["bulk_download_item_name"]
    assert re.fullmatch(r"[0-9a-f-]{36}\.zip", item_name)

    bus = gallery_services.bus
    complete = await bus.wait_for("bulk_download_complete", bulk_download_item_name=item_name)
    started = await bus.wait_for("bulk_download_started", bulk_download_item_name=item_name)
    assert bus.messages.index(started) < bus.messages.index(complete)
    item_id = item_name.removesuffix(".zip")
    for message in (started, complete):
        assert message.room == "default"
        assert set(message.data) == {
            "bulk_download_id",
            "bulk_download_item_id",
            "bulk_download_item_name",
            "timestamp",
        }
        assert message.data["bulk_download_id"] == "default"
        assert message.data["bulk_download_item_id"] == item_id
        assert isinstance(message.data["timestamp"], int)

    response = await gallery.get(f"/api/v1/images/download/{item_name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == sorted(names)
        for name in names:
            assert archive.read(name) == (await gallery.get(f"/api/v1/images/i/{name}/full")).content

    # Served once, then gone.
    response = await gallery.get(f"/api/v1/images/download/{item_name}")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    assert not gallery_services.has_object(f"downloads/{item_name}")


async def test_bulk_download_of_a_board(gallery, gallery_services):
    board = (await gallery.post("/api/v1/boards/", params={"board_name": "b"})).json()
    on_board = await upload(gallery, board_id=board["board_id"])
    await upload(gallery)

    response = await gallery.post("/api/v1/images/download", json={"board_id": board["board_id"]})
    item_name = response.json()["bulk_download_item_name"]
    await gallery_services.images.wait_for_downloads()
    assert [message.event for message in gallery_services.bus.messages] == [
        "bulk_download_started",
        "bulk_download_complete",
    ]
    response = await gallery.get(f"/api/v1/images/download/{item_name}")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == [on_board["image_name"]]


async def test_bulk_download_failure_is_an_error_event(gallery, gallery_services):
    dto = await upload(gallery)
    # The row is there but its object is not: the zip cannot be built.
    (gallery_services.store.root / "images" / dto["image_name"]).unlink()

    response = await gallery.post("/api/v1/images/download", json={"image_names": [dto["image_name"]]})
    item_name = response.json()["bulk_download_item_name"]
    error = await gallery_services.bus.wait_for("bulk_download_error", bulk_download_item_name=item_name)
    assert error.data["error"]
    assert not [m for m in gallery_services.bus.messages if m.event == "bulk_download_complete"]
    assert (await gallery.get(f"/api/v1/images/download/{item_name}")).status_code == 404


async def test_bulk_download_needs_images_or_a_board(gallery):
    bodies: list[dict[str, Any]] = [{}, {"image_names": []}, {"image_names": None, "board_id": None}]
    for body in bodies:
        response = await gallery.post("/api/v1/images/download", json=body)
        assert (response.status_code, response.json()) == (400, {"detail": "No images or board id specified."})


@pytest.mark.parametrize("name", ["nope.zip", "..%2Fimages%2Fx.png", "x.png", f"{uuid.uuid4()}"])
async def test_unknown_downloads_are_404(gallery, name):
    response = await gallery.get(f"/api/v1/images/download/{name}")
    assert response.status_code == 404
