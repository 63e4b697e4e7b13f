"""`POST /api/invoke` with inline images: img2img, inpaint, fit/anchor, samples × iterations, bad data URLs, stop.

The tiny demo VAE has random weights, so a VAE round trip does not give the input back: inpainting is checked by
what depends on the seed (the repainted area) and what does not (the kept area), and strength 0 (no change) by
the pass-through, which skips the VAE.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.serving.args import StorageArgs
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5}


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(255, 0, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1), "RGB")


def right_half_mask() -> Image.Image:
    """Enfugue's convention: white = repaint (here the right half)."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 255
    return Image.fromarray(mask, "L")


async def run(client, **params: Any) -> list[np.ndarray]:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    data = await wait_for(client, response.json()["data"]["uuid"], finished)
    assert data["status"] == "completed", data
    images = [await fetch_png(client, entry) for entry in data["images"]]
    return [np.asarray(image.convert("RGB"), dtype=np.int16) for image in images]


def files_under(storage: StorageArgs) -> list[Path]:
    root = Path(storage.url.removeprefix("file://"))
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def test_img2img_starts_from_the_image(client):
    [txt2img] = await run(client)
    [img2img] = await run(client, image=data_url(gradient()), strength=0.5)
    [again] = await run(client, image=data_url(gradient()), strength=0.5)
    [other] = await run(client, image=data_url(gradient().rotate(90)), strength=0.5)
    assert img2img.shape == (64, 64, 3)
    assert np.abs(img2img - txt2img).mean() > 5
    assert np.array_equal(img2img, again)  # same seed, same input: same pixels
    assert np.abs(img2img - other).mean() > 1  # the input matters (the tiny VAE flattens contrast)


async def test_strength_zero_gives_the_input_back(client):
    source = gradient()
    [result] = await run(client, image=data_url(source), strength=0)
    assert np.array_equal(result, np.asarray(source, dtype=np.int16))


def assert_repainted_only(first: np.ndarray, second: np.ndarray, kept: Any, repainted: Any) -> None:
    """Two seeds: the repainted area depends on the seed, the kept area (almost) does not. Its latents are the
    input's exactly; the decoder's group norms mix in the whole image, so its pixels move a little."""
    kept_change = np.abs(first[kept] - second[kept]).mean()
    repainted_change = np.abs(first[repainted] - second[repainted]).mean()
    assert repainted_change > 20
    assert repainted_change > 5 * kept_change


async def test_inpaint_repaints_only_the_masked_area(client):
    params = {"image": data_url(gradient()), "mask": data_url(right_half_mask())}
    [first] = await run(client, **params)
    [second] = await run(client, **params, seed=6)
    kept, repainted = (slice(None), slice(0, 16)), (slice(None), slice(48, 64))
    assert_repainted_only(first, second, kept, repainted)


async def test_invert_mask_repaints_the_other_side(client):
    params = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "invert_mask": True}
    [first] = await run(client, **params)
    [second] = await run(client, **params, seed=6)
    kept, repainted = (slice(None), slice(48, 64)), (slice(None), slice(0, 16))
    assert_repainted_only(first, second, kept, repainted)


async def test_canvas_defaults_to_the_image_size_rounded_up_to_8(client):
    [result] = await run(client, image=data_url(gradient(36, 20)), strength=0, width=None, height=None)
    assert result.shape == (24, 40, 3)
    assert np.array_equal(result[:20, :36], np.asarray(gradient(36, 20), dtype=np.int16))


@pytest.mark.parametrize(
    ("fit", "anchor", "box"),
    [
        # A 32×16 image on a 64×64 canvas; `box` is where its pixels land (top, bottom, left, right).
        ("actual", "bottom-right", (48, 64, 32, 64)),
        ("contain", "center-center", (16, 48, 0, 64)),
        ("contain", "top-left", (0, 32, 0, 64)),
        ("stretch", None, (0, 64, 0, 64)),
        ("cover", "center-center", (0, 64, 0, 64)),
    ],
)
async def test_fit_and_anchor_place_the_image(client, fit, anchor, box):
    red = Image.new("RGB", (32, 16), (250, 10, 10))
    [result] = await run(client, image=data_url(red), strength=0, fit=fit, anchor=anchor)
    assert result.shape == (64, 64, 3)
    top, bottom, left, right = box
    inside = np.zeros((64, 64), dtype=bool)
    inside[top:bottom, left:right] = True
    assert (result[inside] == (250, 10, 10)).all()
    assert (result[~inside] == (127, 127, 127)).all()  # the empty area (repainted when strength > 0)


async def test_samples_times_iterations_images_with_consecutive_seeds_and_enfugue_chunks(client):
    state = {"canvas": {"width": 64}, "note": "opaque"}
    # Not scaled up to the model's size (enfugue_inpaint_options.py): no intermediate images before the results.
    body = {**SMALL, "image": data_url(gradient()), "samples": 2, "iterations": 2, "state": state,
            "scale_to_model_size": False}  # fmt: skip
    response = await client.post("/api/invoke", json=body)
    assert response.status_code == 200, response.text
    uid = response.json()["data"]["uuid"]
    data = await wait_for(client, uid, finished)
    assert data["images"] == [f"images/{uid}_{i}.png" for i in range(4)]
    pngs = [await fetch_png(client, entry) for entry in data["images"]]
    plans = [json.loads(png.info["EnfugueGenerationData"]) for png in pngs]
    assert [plan["seed"] for plan in plans] == [5, 6, 7, 8]
    assert plans[0]["image"] == {"width": 64, "height": 64, "mode": "RGB"}  # redacted, as Enfugue's plan
    assert "state" not in plans[0]
    assert all(json.loads(png.info["EnfugueUIState"]) == state for png in pngs)
    pixels = [np.asarray(png.convert("RGB"), dtype=np.int16) for png in pngs]
    assert np.abs(pixels[0] - pixels[1]).mean() > 1


def bomb() -> str:
    """A tiny PNG whose header claims 9000×8000 pixels (more than the 64M-pixel upload limit)."""
    buffer = io.BytesIO()
    Image.new("1", (9000, 8000)).save(buffer, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"image": "/etc/passwd"}, "data URL"),
        ({"image": "data:image/png;base64,@@@@"}, "not valid base64"),
        ({"image": "data:text/plain;base64," + base64.b64encode(b"hello, world").decode()}, "not a readable image"),
        ({"image": data_url(gradient()), "mask": "data:image/png;base64,AAAA"}, "not a readable image"),
        ({"mask": data_url(right_half_mask())}, "needs an `image`"),
        ({"image": bomb()}, "too many pixels"),
        ({"image": data_url(gradient()), "width": 60}, "multiple of 8"),
        ({"image": data_url(gradient()), "strength": 1.5}, "strength"),
        ({"image": data_url(gradient()), "strength": "lots"}, "strength"),
        ({"image": data_url(gradient()), "fit": "squash"}, "fit"),
        ({"image": data_url(gradient()), "anchor": "middle"}, "anchor"),
        ({"image": data_url(gradient()), "invert_mask": "perhaps"}, "invert_mask"),
        ({"image": 7}, "image"),
    ],
)
async def test_bad_image_parameters_are_400_with_nothing_stored(idle_client, repo, tmp_path, params, detail):
    response = await idle_client.post("/api/invoke", json={**SMALL, **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_inputs_are_removed_when_the_submit_fails(idle_client, repo, tmp_path):
    # The queue refuses the job (an unknown model) after the inputs were stored: they are deleted again.
    response = await idle_client.post("/api/invoke", json={**SMALL, "image": data_url(gradient()),
                                                           "model": "no-such-model.safetensors"})  # fmt: skip
    assert response.status_code in (400, 404), response.text
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_inputs_are_stored_as_images_the_graph_loads(idle_client, repo, tmp_path):
    # Without Enfugue's feather and scaling (enfugue_inpaint_options.py) the nodes load the stored inputs directly.
    body = {**SMALL, "image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint_feather": 0,
            "scale_to_model_size": False}  # fmt: skip
    response = await idle_client.post("/api/invoke", json=body)
    assert response.status_code == 200, response.text
    [job] = await repo.list_jobs()
    nodes = job.request["graph"]["nodes"]
    stored = {path.name for path in (tmp_path / "idle-files").rglob("*.png")}
    assert {nodes["input"]["image"]["image_name"], nodes["mask"]["mask"]["image_name"]} == stored
    mask = Image.open(next((tmp_path / "idle-files").rglob("*_mask.png")))
    # Stored in the engine's convention: white keeps (the left half), black repaints.
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0
    assert job.request["enfugue"]["image"] == nodes["input"]["image"]["image_name"]


async def test_still_unsupported_parameters_are_501(idle_client, repo):
    response = await idle_client.post("/api/invoke", json={**SMALL, "fill_background": data_url(gradient())})
    assert_enfugue_error(response, 501, "NotImplementedError", "fill_background")
    await assert_nothing_stored(repo)


async def test_stop_cancels_the_running_invocation(client):
    response = await client.post("/api/invoke", json={**SMALL, "width": 512, "height": 512, "samples": 4,
                                                      "num_inference_steps": 50})  # fmt: skip
    uid = response.json()["data"]["uuid"]
    await wait_for(client, uid, lambda data: data["status"] != "queued")
    stopped = await client.post("/api/invocation/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["data"] is None
    data = await wait_for(client, uid, finished)
    assert data["status"] == "error"
    assert data["message"] == "The invocation was canceled."
    # A new invocation runs normally afterwards.
    assert len(await run(client)) == 1


async def test_a_running_invocation_lists_its_previews(client):
    response = await client.post("/api/invoke", json={**SMALL, "width": 512, "height": 512, "samples": 4,
                                                      "num_inference_steps": 50})  # fmt: skip
    uid = response.json()["data"]["uuid"]
    running = await wait_for(client, uid, lambda data: data["status"] != "queued" and bool(data.get("images")))
    assert running["status"] == "processing", running
    assert running["images"][0] == f"intermediates/{uid}_0.png"
    preview = await client.get(f"/api/invocation/{running['images'][0]}")
    assert preview.status_code == 200
    assert preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).format == "PNG"
    await client.post("/api/invocation/stop")
    await wait_for(client, uid, finished)
    # Deleting the invocation deletes its previews.
    assert (await client.delete(f"/api/invocation/{uid}")).status_code == 200
    assert (await client.get(f"/api/invocation/intermediates/{uid}_0.png")).status_code == 404


async def test_no_previews_when_intermediates_are_off(client):
    response = await client.post("/api/invoke", json={**SMALL, "num_inference_steps": 20, "intermediates": False})
    uid = response.json()["data"]["uuid"]
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed"
    assert (await client.get(f"/api/invocation/intermediates/{uid}_0.png")).status_code == 404
    # With previews on, the same job leaves one behind (until the invocation is deleted).
    response = await client.post("/api/invoke", json={**SMALL, "num_inference_steps": 20})
    uid = response.json()["data"]["uuid"]
    await wait_for(client, uid, finished)
    assert (await client.get(f"/api/invocation/intermediates/{uid}_0.png")).status_code == 200


async def test_deleting_an_invocation_deletes_its_inputs(client, storage):
    response = await client.post("/api/invoke", json={**SMALL, "image": data_url(gradient()),
                                                      "mask": data_url(right_half_mask())})  # fmt: skip
    uid = response.json()["data"]["uuid"]
    await wait_for(client, uid, finished)
    assert any(path.name.endswith("_input.png") for path in files_under(storage))
    assert (await client.delete(f"/api/invocation/{uid}")).status_code == 200
    assert not any(path.name.endswith(("_input.png", "_mask.png")) for path in files_under(storage))
