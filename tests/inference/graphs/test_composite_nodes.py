"""The compositing nodes (`blank_image`, `img_crop`, `img_paste`, `tomask`): their PIL operations, and a graph of
them run by the engine with InvokeAI-shaped JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.composite_nodes import BlankImageInvocation
from serve_app.domain.graph.graph import Graph
from serve_app.domain.images import ImageCategory
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.nodes.composite import blank, crop, mask_from_alpha, paste
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import run_session, stored_png, upload


def rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"), dtype=np.int16)


def test_blank_image_is_one_colour_in_its_mode():
    transparent = blank(6, 4, "RGBA", (0, 0, 0, 0))
    assert transparent.size == (6, 4) and transparent.mode == "RGBA"
    assert transparent.getchannel("A").getextrema() == (0, 0)
    red = blank(3, 3, "RGB", (200, 10, 20, 0))
    assert red.mode == "RGB" and red.getpixel((1, 1)) == (200, 10, 20)  # RGB ignores the alpha


def test_crop_outside_the_image_is_transparent():
    image = Image.new("RGB", (10, 10), (9, 8, 7))
    result = crop(image, 5, -5, 10, 10)
    assert result.mode == "RGBA" and result.size == (10, 10)
    assert result.getpixel((0, 9)) == (9, 8, 7, 255)  # (5, 4) of the image
    assert rgba(result)[0, 0, 3] == 0  # above the image
    assert rgba(result)[9, 9, 3] == 0  # right of it


def test_paste_lands_the_image_where_the_mask_is_black():
    base = Image.new("RGB", (8, 8), (0, 0, 255))
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    mask = Image.new("L", (4, 4), 255)
    mask.paste(0, (0, 0, 2, 4))  # black on the left half: paste there (InvokeAI inverts the mask)
    result = rgba(paste(base, image, mask, 2, 2, crop_to_base=False))
    assert result.shape == (8, 8, 4)
    assert (result[2:6, 2:4] == (255, 0, 0, 255)).all()
    assert (result[2:6, 4:6] == (0, 0, 255, 255)).all()
    assert (result[0:2] == (0, 0, 255, 255)).all()


def test_paste_past_the_edge_grows_the_canvas_unless_cropped():
    base = Image.new("RGB", (8, 8), (0, 0, 255))
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    grown = rgba(paste(base, image, None, -2, 6, crop_to_base=False))
    assert grown.shape == (10, 10, 4)  # 2 more on the left, 2 more below
    assert (grown[6:10, 0:4] == (255, 0, 0, 255)).all()
    assert (grown[0:6, 0:2, 3] == 0).all()  # new area nothing covers: transparent
    assert (grown[0:6, 2:10] == (0, 0, 255, 255)).all()  # the base, moved right by 2
    cropped = rgba(paste(base, image, None, -2, 6, crop_to_base=True))
    assert cropped.shape == (8, 8, 4)
    assert (cropped[6:8, 0:2] == (255, 0, 0, 255)).all()  # the visible quarter of the image
    assert (cropped[0:6] == (0, 0, 255, 255)).all() and (cropped[6:8, 2:] == (0, 0, 255, 255)).all()


def test_paste_refuses_a_mask_of_another_size():
    with pytest.raises(InvalidRequest, match="mask"):
        paste(Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4)), Image.new("L", (3, 3)), 0, 0, crop_to_base=False)


def test_an_absurd_paste_offset_is_refused_before_allocating():
    with pytest.raises(InvalidRequest, match="larger than"):
        paste(Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4)), None, 10**6, 10**6, crop_to_base=True)


def test_mask_from_alpha():
    image = Image.new("RGBA", (4, 4), (1, 2, 3, 0))
    image.putpixel((1, 1), (1, 2, 3, 200))
    mask = mask_from_alpha(image, invert=False)
    assert mask.mode == "L" and mask.getpixel((1, 1)) == 200 and mask.getpixel((0, 0)) == 0
    assert mask_from_alpha(image, invert=True).getpixel((0, 0)) == 255
    # Without alpha everything is opaque (InvokeAI would return the blue channel).
    assert mask_from_alpha(Image.new("RGB", (2, 2), (0, 0, 7)), invert=False).getextrema() == (255, 255)


def _edge(source: str, field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": field}, "destination": {"node_id": destination,
                                                                           "field": destination_field}}  # fmt: skip


def test_invokeai_shaped_nodes_validate_and_refuse_bad_colours():
    color = {"r": 1, "g": 2, "b": 3, "a": 4}
    blank_node = {"id": "blank", "type": "blank_image", "width": 8, "height": 8, "mode": "RGBA", "color": color}
    graph: dict[str, Any] = {"id": "g", "nodes": {"blank": blank_node}}
    parsed = Graph.model_validate(graph).nodes["blank"]
    assert isinstance(parsed, BlankImageInvocation) and parsed.color.tuple() == (1, 2, 3, 4)
    color["r"] = 256
    with pytest.raises(ValueError, match="less than or equal to 255"):
        Graph.model_validate(graph)


async def test_a_compositing_graph_runs(executor: InProcessExecutor, store: FileObjectStore) -> None:
    red = Image.new("RGB", (16, 16), (250, 10, 10))
    name = await upload(store, red)
    graph = {
        "id": "composite",
        "nodes": {
            "canvas": {"id": "canvas", "type": "blank_image", "width": 32, "height": 32, "mode": "RGBA",
                       "color": {"r": 0, "g": 0, "b": 0, "a": 0}},
            "red": {"id": "red", "type": "image", "image": {"image_name": name}},
            "paste": {"id": "paste", "type": "img_paste", "x": 24, "y": 8, "crop": True},
            "mask": {"id": "mask", "type": "tomask"},
            "crop": {"id": "crop", "type": "img_crop", "x": 16, "y": 0, "width": 16, "height": 16},
        },
        "edges": [
            _edge("canvas", "image", "paste", "base_image"),
            _edge("red", "image", "paste", "image"),
            _edge("paste", "image", "mask", "image"),
            _edge("paste", "image", "crop", "image"),
        ],
    }  # fmt: skip
    run = await run_session(executor, graph)

    pasted, _ = await stored_png(store, run.output("paste")["image"]["image_name"])
    assert pasted.size == (32, 32) and pasted.mode == "RGBA"
    pixels = rgba(pasted)
    assert (pixels[8:24, 24:32] == (250, 10, 10, 255)).all()  # the left half of the red square; the rest cropped
    assert (pixels[:, :24, 3] == 0).all() and (pixels[:8, :, 3] == 0).all()
    mask, _ = await stored_png(store, run.output("mask")["image"]["image_name"])
    assert np.array_equal(np.asarray(mask), pixels[:, :, 3])
    (mask_record,) = run.of("mask", "complete")[0].images
    assert mask_record.category is ImageCategory.MASK
    cropped, _ = await stored_png(store, run.output("crop")["image"]["image_name"])
    assert run.output("crop")["width"] == 16 and (rgba(cropped)[8:16, 8:16] == (250, 10, 10, 255)).all()
