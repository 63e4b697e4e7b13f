"""The registry, the image nodes in a graph of their own, and node checks that need no diffusion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import (
    CLIPField,
    ConditioningField,
    ImageField,
    IPAdapterField,
    LoRAField,
    ModelIdentifierField,
    UNetField,
)
from serve_app.domain.graph.invocations import INVOCATIONS
from serve_app.domain.graph.latent_nodes import DenoiseLatentsInvocation
from serve_app.domain.graph.model_nodes import LoRALoaderInvocation, MainModelLoaderInvocation, SDXLLoRALoaderInvocation
from serve_app.domain.models import ModelSpec
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.invocations import IMPLEMENTATIONS
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import Demo, gradient_image, identifier, pixels, run_session, stored_png, upload


class _CatalogOnly:
    """The part of NodeContext that the handle-building nodes use."""

    def __init__(self, catalog: DirectoryModelCatalog) -> None:
        self._catalog = catalog

    def model(self, field: ModelIdentifierField) -> ModelSpec:
        return self._catalog.get(field.key)


def _run(node: Any, demo: Demo) -> Any:
    return IMPLEMENTATIONS[node.type](node, _CatalogOnly(demo.catalog))  # type: ignore[arg-type]


def test_every_node_type_has_an_implementation() -> None:
    assert set(IMPLEMENTATIONS) == set(INVOCATIONS)


def _handles(demo: Demo, loras: list[LoRAField]) -> tuple[UNetField, CLIPField]:
    model = ModelIdentifierField.model_validate(identifier(demo.sd15))
    unet = UNetField(unet=model, scheduler=model, loras=list(loras))
    return unet, CLIPField(tokenizer=model, text_encoder=model, loras=list(loras))


def test_a_lora_already_on_a_handle_is_an_error(demo: Demo) -> None:
    lora = ModelIdentifierField.model_validate(identifier(demo.lora))
    unet, clip = _handles(demo, [LoRAField(lora=lora, weight=0.5)])

    with pytest.raises(InvalidRequest, match=f'LoRA "{lora.key}" already applied to unet'):
        _run(LoRALoaderInvocation(lora=lora, weight=1.0, unet=unet, clip=clip), demo)

    fresh_unet, fresh_clip = _handles(demo, [])
    output = _run(SDXLLoRALoaderInvocation(lora=lora, weight=0.3, unet=fresh_unet, clip=fresh_clip), demo)
    assert output.unet.loras == output.clip.loras == [LoRAField(lora=lora, weight=0.3)]
    assert output.clip2 is None  # an unconnected handle stays unconnected
    assert fresh_unet.loras == []  # the input handle is not modified


def test_loaders_check_the_model_they_are_given(demo: Demo) -> None:
    with pytest.raises(InvalidRequest, match="sdxl_model_loader"):
        _run(MainModelLoaderInvocation(model=ModelIdentifierField.model_validate(identifier(demo.sdxl))), demo)
    with pytest.raises(InvalidRequest, match="not a main model"):
        _run(MainModelLoaderInvocation(model=ModelIdentifierField.model_validate(identifier(demo.lora))), demo)


def test_adapters_on_denoise_latents_are_refused_clearly(demo: Demo) -> None:
    model = ModelIdentifierField.model_validate(identifier(demo.sd15))
    conditioning = ConditioningField(conditioning_name="unused")
    node = DenoiseLatentsInvocation(
        positive_conditioning=conditioning,
        negative_conditioning=conditioning,
        unet=UNetField(unet=model, scheduler=model),
        ip_adapter=IPAdapterField(
            image=ImageField(image_name="x.png"), ip_adapter_model=model, image_encoder_model=model
        ),
    )
    with pytest.raises(NotImplementedError, match="IP-Adapter"):
        _run(node, demo)


async def test_image_resize_and_save_image_nodes(executor: InProcessExecutor, store: FileObjectStore) -> None:
    name = await upload(store, gradient_image())
    graph = {
        "id": "images",
        "nodes": {
            "source": {"id": "source", "type": "image", "image": {"image_name": name}, "is_intermediate": True},
            "resize": {"id": "resize", "type": "img_resize", "width": 32, "height": 48, "resample_mode": "nearest"},
            "save": {"id": "save", "type": "save_image", "board": {"board_id": "b1"}},
        },
        "edges": [
            {"source": {"node_id": "source", "field": "image"}, "destination": {"node_id": "resize", "field": "image"}},
            {"source": {"node_id": "resize", "field": "image"}, "destination": {"node_id": "save", "field": "image"}},
        ],
    }
    run = await run_session(executor, graph)

    assert run.output("source") == {"type": "image_output", "output_meta": None, "image": {"image_name": name},
                                    "width": 64, "height": 64}  # fmt: skip
    assert not run.of("source", "complete")[0].images  # the image primitive stores nothing
    resized = run.output("resize")
    assert (resized["width"], resized["height"]) == (32, 48)
    (saved_record,) = run.of("save", "complete")[0].images
    saved = run.output("save")
    assert saved_record.name == saved["image"]["image_name"] != resized["image"]["image_name"]
    assert saved_record.board_id == "b1" and not saved_record.is_intermediate
    resized_image, _ = await stored_png(store, resized["image"]["image_name"])
    saved_image, chunks = await stored_png(store, saved_record.name)
    assert resized_image.size == (32, 48)
    assert np.array_equal(pixels(resized_image), pixels(saved_image))
    assert "invokeai_graph" in chunks and "invokeai_metadata" not in chunks  # no metadata node was wired in
