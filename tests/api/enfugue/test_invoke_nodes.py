"""`POST /api/invoke` with canvas `nodes` (regions), and the single-step inpaint's exact paste-back.

The real queue and graph engine run the tiny demo model in process. Regions are checked by what must hold
exactly: pasted pixels equal their source, a region at the same size, prompt and seed gives the same pixels
wherever it lands, a whole-canvas region equals the single-step request it mirrors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from serve_app.serving.args import StorageArgs
from tests.api.enfugue.preset_support import running_client
from tests.api.enfugue.test_invoke_control import CANNY_REPO, install, square
from tests.api.enfugue.test_invoke_images import data_url, files_under, gradient, right_half_mask
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored
from tests.support.tiny_models import controlnet_folder

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

# Single steps without Enfugue's feather and scaling (enfugue_inpaint_options.py): hard mask edges, as the regions'.
SMALL = {"prompt": "", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5, "inpaint_feather": 0,
         "scale_to_model_size": False}  # fmt: skip
RED = (250, 10, 10)


async def submit(client, **params: Any) -> str:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    uid: str = response.json()["data"]["uuid"]
    return uid


async def run(client, **params: Any) -> list[np.ndarray]:
    """Each result as RGBA (uncovered canvas stays transparent)."""
    data = await wait_for(client, await submit(client, **params), finished)
    assert data["status"] == "completed", data
    return [np.asarray((await fetch_png(client, entry)).convert("RGBA"), dtype=np.int16)
            for entry in data["images"]]  # fmt: skip


def region(x: int, y: int, w: int, h: int, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"x": x, "y": y, "w": w, "h": h, "prompt": prompt, **extra}


def opaque(pixels: np.ndarray) -> bool:
    return bool((pixels[..., 3] == 255).all())


async def test_prompt_regions_side_by_side_differ_from_one_whole_canvas_image(client):
    [whole] = await run(client, prompt="a red barn")
    [split] = await run(client, nodes=[region(0, 0, 32, 64, "a red barn"), region(32, 0, 32, 64, "a blue sea")])
    assert split.shape == (64, 64, 4) and opaque(split)
    assert np.abs(split[:, :32, :3] - whole[:, :32, :3]).mean() > 5
    assert np.abs(split[:, 32:, :3] - whole[:, 32:, :3]).mean() > 5
    # A region at the same size, prompt and seed is the same image wherever it lands.
    [moved] = await run(client, nodes=[region(32, 0, 32, 64, "a red barn")])
    assert np.array_equal(moved[:, 32:], split[:, :32])


async def test_the_uncovered_canvas_stays_transparent_without_a_global_prompt_and_is_filled_with_one(client):
    nodes = [region(0, 0, 32, 64, "a red barn")]
    [bare] = await run(client, nodes=nodes)
    assert (bare[:, 32:, 3] == 0).all() and opaque(bare[:, :32])
    [filled] = await run(client, nodes=nodes, prompt="a landscape")
    assert opaque(filled)
    # The region's pixels are kept exactly (region prompts do not take the global one); the rest is painted.
    assert np.array_equal(filled[:, :32], bare[:, :32])
    assert filled[:, 40:, :3].std() > 1


async def test_a_pass_through_node_pastes_its_image_exactly_and_keeps_its_transparency(client):
    red = Image.new("RGB", (16, 16), RED)
    holed = Image.new("RGBA", (16, 16), (*RED, 255))
    holed.paste((0, 0, 0, 0), (0, 0, 8, 16))  # the left half transparent: the region below shows through
    background = region(0, 0, 64, 64, "a red barn")
    [base] = await run(client, nodes=[background])
    [result] = await run(client, nodes=[background, {"image": data_url(red), "x": 8, "y": 24},
                                        {"image": data_url(holed), "x": 40, "y": 0}])  # fmt: skip
    assert (result[24:40, 8:24] == (*RED, 255)).all()
    assert (result[0:16, 48:56] == (*RED, 255)).all()
    assert np.array_equal(result[0:16, 40:48], base[0:16, 40:48])
    outside = np.ones((64, 64), dtype=bool)
    outside[24:40, 8:24] = outside[0:16, 48:56] = False
    assert np.array_equal(result[outside], base[outside])


async def test_a_region_past_the_canvas_edge_is_cropped(client):
    square = Image.fromarray(np.asarray(gradient(32, 32)), "RGB")
    [result] = await run(client, nodes=[{"image": data_url(square), "x": 48, "y": -16},
                                        {"image": data_url(square), "x": -16, "y": 48}])  # fmt: skip
    source = np.asarray(square, dtype=np.int16)
    assert (result[0:16, 48:64, :3] == source[16:32, 0:16]).all()
    assert (result[48:64, 0:16, :3] == source[0:16, 16:32]).all()
    assert (result[16:48, :, 3] == 0).all()  # nothing else covered, no global prompt
    [cut] = await run(client, nodes=[region(48, 0, 32, 64, "a red barn")])
    [whole] = await run(client, nodes=[region(0, 0, 32, 64, "a red barn")])
    assert np.array_equal(cut[:, 48:64], whole[:, 0:16])


async def test_an_infer_region_over_the_canvas_is_the_single_step_img2img(client):
    [single] = await run(client, prompt="a lighthouse", image=data_url(gradient()), strength=0.5)
    [node] = await run(client, prompt="a lighthouse", nodes=[{"image": data_url(gradient()), "infer": True,
                                                             "strength": 0.5}])  # fmt: skip
    assert opaque(node)
    assert np.array_equal(node[..., :3], single[..., :3])
    assert np.abs(node[..., :3] - np.asarray(gradient(), dtype=np.int16)).mean() > 5


async def test_an_inpaint_region_repaints_only_its_mask(client):
    node = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint": True, "x": 0, "y": 0,
            "inpaint_feather": 0, "scale_to_model_size": False}  # fmt: skip
    [first] = await run(client, prompt="a lighthouse", nodes=[node])
    [second] = await run(client, prompt="a lighthouse", nodes=[node], seed=6)
    source = np.asarray(gradient(), dtype=np.int16)
    assert (first[:, :32, :3] == source[:, :32]).all() and (second[:, :32, :3] == source[:, :32]).all()
    assert np.abs(first[:, 32:, :3] - second[:, 32:, :3]).mean() > 5  # the seed repaints the right half
    # The same as the single-step inpaint of the same image, mask, prompt and seed.
    [single] = await run(client, prompt="a lighthouse", image=data_url(gradient()), mask=data_url(right_half_mask()))
    assert np.array_equal(first[..., :3], single[..., :3])


async def test_single_step_inpaint_keeps_the_unmasked_pixels_exactly(client):
    source = np.asarray(gradient(), dtype=np.int16)
    [first] = await run(client, prompt="a lighthouse", image=data_url(gradient()), mask=data_url(right_half_mask()))
    [second] = await run(client, prompt="a lighthouse", image=data_url(gradient()), mask=data_url(right_half_mask()),
                         seed=6)  # fmt: skip
    assert (first[:, :32, :3] == source[:, :32]).all() and (second[:, :32, :3] == source[:, :32]).all()
    assert np.abs(first[:, 32:, :3] - source[:, 32:]).mean() > 5
    assert np.abs(first[:, 32:, :3] - second[:, 32:, :3]).mean() > 5


async def test_region_results_are_upscaled_and_carry_redacted_nodes(client):
    uid = await submit(client, nodes=[region(0, 0, 64, 64, "a red barn"), {"image": data_url(gradient(16, 16)),
                                                                           "x": 8, "y": 8}],
                       samples=2, upscale="nearest", outscale=2)  # fmt: skip
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    pngs = [await fetch_png(client, entry) for entry in data["images"]]
    assert [png.size for png in pngs] == [(128, 128), (128, 128)]
    red = np.asarray(pngs[0].convert("RGB"), dtype=np.int16)
    assert (red[16:48, 16:48] == np.asarray(gradient(16, 16).resize((32, 32), Image.Resampling.NEAREST))).all()
    plans = [json.loads(png.info["EnfugueGenerationData"]) for png in pngs]
    assert [plan["seed"] for plan in plans] == [5, 6]
    assert plans[0]["nodes"][1]["image"] == {"width": 16, "height": 16, "mode": "RGB"}
    assert plans[0]["nodes"][0]["prompt"] == "a red barn"
    pixels = [np.asarray(png.convert("RGB"), dtype=np.int16) for png in pngs]
    assert np.abs(pixels[0] - pixels[1]).mean() > 1  # seed + i per image


async def test_deleting_the_invocation_deletes_the_node_inputs(client, storage):
    node = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint": True,
            "scale_to_model_size": False}  # fmt: skip
    uid = await submit(client, nodes=[node])
    await wait_for(client, uid, finished)
    assert sum(path.name.endswith(("_input.png", "_mask.png")) for path in files_under(storage)) == 2
    assert (await client.delete(f"/api/invocation/{uid}")).status_code == 200
    assert not any(path.name.endswith(("_input.png", "_mask.png")) for path in files_under(storage))


@pytest.mark.parametrize(
    ("nodes", "detail"),
    [
        ([{"x": 0, "y": 0, "w": 32, "h": 32}], "Can't assemble a node from arguments"),
        ([{"prompt": "a cat", "w": 32}], "`w` and `h` are required"),
        (["a cat"], "nodes"),
        ([{"prompt": "a cat", "w": 32, "h": 32, "infer": True}], "`infer` needs an `image`"),
        ([{"prompt": "a cat", "w": -8, "h": 32}], "nodes[0]"),
        ([{"prompt": "a cat", "w": 32, "h": 32, "strength": 2}], "nodes[0]"),
        ([{"prompt": "a cat", "w": 32, "h": 32, "x": "left"}], "nodes[0]"),
        ([{"prompt": "a cat", "w": 32, "h": 32, "inference_steps": 51}], "inference_steps"),
        ([{"prompt": "a cat", "w": 10**5, "h": 10**5}], "w` × `h`"),
        ([{"prompt": "a cat", "w": 1024, "h": 64}], "over this server's limits"),
        ([{"prompt": "a cat", "w": 32, "h": 32}] * 17, "At most 16 nodes"),
        ([{"image": "data:image/png;base64,AAAA"}], "not a readable image"),
        ([{"image": data_url(gradient()), "control": True}], "`control` needs a `controlnet`"),
        ([{"image": data_url(gradient()), "anchor": "middle"}], "anchor"),
        ([{"image": data_url(gradient()), "control": True, "controlnet": "sketchy"}], "controlnet"),
        ([{"image": data_url(gradient()), "control": True, "controlnet": "canny", "conditioning_scale": 5}], "scale"),
        ([{"image": data_url(gradient()), "remove_background": True}], "background"),
        # Refused after its image was stored (the canvas is known once the request is resolved): deleted again.
        ([{"image": data_url(gradient()), "x": 64}], "lies outside the 64×64 canvas"),
    ],
)
async def test_bad_nodes_are_400_with_nothing_stored(idle_client, repo, tmp_path, nodes, detail):
    response = await idle_client.post("/api/invoke", json={**SMALL, "nodes": nodes})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_node_images_are_stored_fitted_with_their_gaps_as_the_mask(idle_client, repo, tmp_path):
    wide = Image.new("RGB", (32, 16), RED)
    node = {"image": data_url(wide), "w": 32, "h": 32, "fit": "contain", "anchor": "center-center", "infer": True}
    response = await idle_client.post("/api/invoke", json={**SMALL, "nodes": [node]})
    assert response.status_code == 200, response.text
    [job] = await repo.list_jobs()
    [stored] = job.request["enfugue"]["nodes"]
    assert (stored["w"], stored["h"], stored["infer"]) == (32, 32, True)
    files = {path.name: path for path in (tmp_path / "idle-files").rglob("*.png")}
    assert set(files) == {stored["image"], stored["mask"]}
    image, mask = Image.open(files[stored["image"]]), Image.open(files[stored["mask"]])
    pixels = np.asarray(image)
    assert image.mode == "RGBA" and tuple(pixels[16, 16]) == (*RED, 255) and pixels[2, 16, 3] == 0
    assert mask.getpixel((16, 16)) == 255 and mask.getpixel((16, 2)) == 0  # engine convention: black repaints


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime, pool, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process stack with the demo models in the registry (where installed ControlNets are found)."""
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


async def test_a_control_region_is_the_single_step_controlled_image(stack, pool, tmp_path):
    await install(pool, controlnet_folder(tmp_path / "controlnet"), CANNY_REPO)
    params = {"prompt": "a lighthouse", "model": "demo-sd15"}
    [single] = await run(stack, **params, control_image=data_url(square()), controlnet="canny")
    [region_prompt] = await run(stack, **params, nodes=[region(0, 0, 64, 64, "a lighthouse")])
    [controlled] = await run(stack, **params, nodes=[{"image": data_url(square()), "control": True,
                                                      "controlnet": "canny"}])  # fmt: skip
    assert opaque(controlled)
    assert np.array_equal(controlled[..., :3], single[..., :3])
    assert np.abs(controlled[..., :3] - region_prompt[..., :3]).mean() > 1
    # With `infer` too: an img2img from the node image, guided by its edges.
    [inferred] = await run(stack, **params, nodes=[{"image": data_url(square()), "control": True,
                                                    "controlnet": "canny", "infer": True}])  # fmt: skip
    assert np.abs(inferred[..., :3] - controlled[..., :3]).mean() > 1


async def test_a_control_region_without_an_installed_controlnet_is_400(idle_client, repo, tmp_path):
    response = await idle_client.post("/api/invoke", json={**SMALL, "nodes": [
        {"image": data_url(square()), "control": True, "controlnet": "canny"}]})  # fmt: skip
    assert_enfugue_error(response, 400, "BadRequestError", "No ControlNet model for `canny`")
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))
