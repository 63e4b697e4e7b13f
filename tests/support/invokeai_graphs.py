"""Graphs and enqueue bodies shaped exactly as the InvokeAI 6.8 web UI sends them (reference §6).

Every builder returns `(graph, ids)`: `graph` is the JSON dict for `batch.graph`, `ids` names the
nodes a test needs (`ids.seed`, `ids.positive_prompt`, `ids.output`, every node in `ids.nodes`).
Seed and prompt are left unset, as the UI does: pass them to `enqueue_body`, which puts them in
`batch.data`. `model`, `vae` and LoRA models are ModelIdentifierField dicts `{key, hash, name, base, type}`.

    graph, ids = sd1_txt2img(model, width=64, height=64, steps=2)
    body = enqueue_body(graph, seeds=[1, 2], prompts=["a cat"])
    client.post("/api/v1/queue/default/enqueue_batch", json=body)
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_NANOID_ALPHABET = string.ascii_letters + string.digits


def nanoid(size: int = 10) -> str:
    """A random id like the UI's (`V1StGXR8_Z`-style, letters and digits)."""
    return "".join(random.choices(_NANOID_ALPHABET, k=size))


@dataclass(frozen=True)
class GraphIds:
    seed: str
    positive_prompt: str
    output: str
    nodes: dict[str, str] = field(default_factory=dict)  # id prefix -> node id ("lora_selector_2" for repeats)


class _Builder:
    def __init__(self, graph_prefix: str) -> None:
        self.graph: dict[str, Any] = {"id": f"{graph_prefix}:{nanoid()}", "nodes": {}, "edges": []}
        self.ids: dict[str, str] = {}

    def node(self, prefix: str, node_type: str, **fields: Any) -> str:
        node_id = f"{prefix}:{nanoid()}"
        self.graph["nodes"][node_id] = {
            "id": node_id,
            "type": node_type,
            "is_intermediate": True,
            "use_cache": True,
            **fields,
        }
        name, count = prefix, 1
        while name in self.ids:
            count += 1
            name = f"{prefix}_{count}"
        self.ids[name] = node_id
        return node_id

    def edge(self, source: str, source_field: str, destination: str, destination_field: str) -> None:
        self.graph["edges"].append(
            {
                "source": {"node_id": source, "field": source_field},
                "destination": {"node_id": destination, "field": destination_field},
            }
        )

    def output(self, node_type: str, board_id: str | None, **fields: Any) -> str:
        """The node whose image lands in the gallery: not intermediate, never cached."""
        node_id = self.node("canvas_output", node_type, **fields)
        node = self.graph["nodes"][node_id]
        node.update(is_intermediate=False, use_cache=False)
        if board_id is not None:
            node["board"] = {"board_id": board_id}
        return node_id

    def result(self) -> tuple[dict[str, Any], GraphIds]:
        ids = GraphIds(
            seed=self.ids["seed"],
            positive_prompt=self.ids["positive_prompt"],
            output=self.ids["canvas_output"],
            nodes=dict(self.ids),
        )
        return self.graph, ids


def _sd1(
    b: _Builder,
    model: dict[str, Any],
    *,
    generation_mode: str,
    width: int,
    height: int,
    steps: int,
    cfg_scale: float,
    scheduler: str,
    negative: str,
    vae: dict[str, Any] | None,
    loras: Sequence[tuple[dict[str, Any], float]],
    board_id: str | None,
    clip_skip: int,
    fp32: bool,
    denoising_start: float = 0.0,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The SD1 txt2img core (§6.1, §6.3); returns the ids img2img/inpaint build on."""
    seed = b.node("seed", "integer")
    prompt = b.node("positive_prompt", "string")
    loader = b.node("sd1_model_loader", "main_model_loader", model=model)
    skip = b.node("clip_skip", "clip_skip", skipped_layers=clip_skip)
    pos = b.node("pos_cond", "compel")
    pos_collect = b.node("pos_cond_collect", "collect")
    neg = b.node("neg_cond", "compel", prompt=negative)
    neg_collect = b.node("neg_cond_collect", "collect")
    noise = b.node("noise", "noise", width=width, height=height, use_cpu=True)
    denoise = b.node(
        "denoise_latents",
        "denoise_latents",
        cfg_scale=cfg_scale,
        cfg_rescale_multiplier=0,
        scheduler=scheduler,
        steps=steps,
        denoising_start=denoising_start,
        denoising_end=1,
    )
    output = b.output("l2i", board_id, fp32=fp32)
    metadata_fields: dict[str, Any] = {
        "generation_mode": generation_mode,
        "cfg_scale": cfg_scale,
        "cfg_rescale_multiplier": 0,
        "negative_prompt": negative,
        "model": model,
        "steps": steps,
        "rand_device": "cpu",
        "scheduler": scheduler,
        "clip_skip": clip_skip,
        "width": width,
        "height": height,
        **(extra_metadata or {}),
    }
    if vae is not None:
        metadata_fields["vae"] = vae
    if loras:
        metadata_fields["loras"] = [{"model": lora, "weight": weight} for lora, weight in loras]
    metadata = b.node("core_metadata", "core_metadata", **metadata_fields)

    b.edge(loader, "clip", skip, "clip")
    unet_source, clip_source = loader, skip
    if loras:
        collector = b.node("lora_collector", "collect")
        lora_loader = b.node("lora_collection_loader", "lora_collection_loader")
        for lora, weight in loras:
            selector = b.node("lora_selector", "lora_selector", lora=lora, weight=weight)
            b.edge(selector, "lora", collector, "item")
        b.edge(collector, "collection", lora_loader, "loras")
        b.edge(loader, "unet", lora_loader, "unet")
        b.edge(skip, "clip", lora_loader, "clip")
        unet_source, clip_source = lora_loader, lora_loader
    b.edge(unet_source, "unet", denoise, "unet")
    b.edge(clip_source, "clip", pos, "clip")
    b.edge(clip_source, "clip", neg, "clip")
    b.edge(prompt, "value", pos, "prompt")
    b.edge(pos, "conditioning", pos_collect, "item")
    b.edge(pos_collect, "collection", denoise, "positive_conditioning")
    b.edge(neg, "conditioning", neg_collect, "item")
    b.edge(neg_collect, "collection", denoise, "negative_conditioning")
    b.edge(seed, "value", noise, "seed")
    b.edge(noise, "noise", denoise, "noise")
    b.edge(denoise, "latents", output, "latents")
    vae_source = loader if vae is None else b.node("vae", "vae_loader", vae_model=vae)
    b.edge(vae_source, "vae", output, "vae")
    b.edge(seed, "value", metadata, "seed")
    b.edge(prompt, "value", metadata, "positive_prompt")
    b.edge(metadata, "metadata", output, "metadata")
    return {"loader": loader, "denoise": denoise, "vae_source": vae_source, "output": output}


def sd1_txt2img(
    model: dict[str, Any],
    *,
    width: int = 512,
    height: int = 512,
    steps: int = 30,
    cfg_scale: float = 7.5,
    scheduler: str = "euler",
    negative: str = "",
    vae: dict[str, Any] | None = None,
    loras: Sequence[tuple[dict[str, Any], float]] = (),
    board_id: str | None = None,
    clip_skip: int = 0,
    fp32: bool = True,
) -> tuple[dict[str, Any], GraphIds]:
    """SD1.5/SD2 text-to-image (`buildSD1Graph`, generation_mode `txt2img`)."""
    b = _Builder("sd1_graph")
    _sd1(b, model, generation_mode="txt2img", width=width, height=height, steps=steps, cfg_scale=cfg_scale,
         scheduler=scheduler, negative=negative, vae=vae, loras=loras, board_id=board_id, clip_skip=clip_skip,
         fp32=fp32)  # fmt: skip
    return b.result()


def sd1_img2img(
    model: dict[str, Any],
    image_name: str,
    strength: float,
    *,
    width: int = 512,
    height: int = 512,
    steps: int = 30,
    cfg_scale: float = 7.5,
    scheduler: str = "euler",
    negative: str = "",
    vae: dict[str, Any] | None = None,
    loras: Sequence[tuple[dict[str, Any], float]] = (),
    board_id: str | None = None,
    clip_skip: int = 0,
    fp32: bool = True,
) -> tuple[dict[str, Any], GraphIds]:
    """Canvas image-to-image (§6.4): the init image is encoded and denoised from `1 - strength`."""
    b = _Builder("sd1_graph")
    core = _sd1(b, model, generation_mode="img2img", width=width, height=height, steps=steps, cfg_scale=cfg_scale,
                scheduler=scheduler, negative=negative, vae=vae, loras=loras, board_id=board_id, clip_skip=clip_skip,
                fp32=fp32, denoising_start=1 - strength, extra_metadata={"strength": strength})  # fmt: skip
    _add_i2l(b, core, image_name, fp32)
    return b.result()


def sd1_inpaint(
    model: dict[str, Any],
    image_name: str,
    mask_name: str,
    *,
    strength: float = 1.0,
    width: int = 512,
    height: int = 512,
    steps: int = 30,
    cfg_scale: float = 7.5,
    scheduler: str = "euler",
    negative: str = "",
    vae: dict[str, Any] | None = None,
    loras: Sequence[tuple[dict[str, Any], float]] = (),
    board_id: str | None = None,
    clip_skip: int = 0,
    fp32: bool = True,
) -> tuple[dict[str, Any], GraphIds]:
    """Canvas inpaint (§6.5) without the blend/expand-mask nodes: `l2i` is the output node.

    The mask is grayscale: white keeps, black regenerates.
    """
    b = _Builder("sd1_graph")
    core = _sd1(b, model, generation_mode="inpaint", width=width, height=height, steps=steps, cfg_scale=cfg_scale,
                scheduler=scheduler, negative=negative, vae=vae, loras=loras, board_id=board_id, clip_skip=clip_skip,
                fp32=fp32, denoising_start=1 - strength, extra_metadata={"strength": strength})  # fmt: skip
    _add_i2l(b, core, image_name, fp32)
    mask = b.node(
        "create_gradient_mask",
        "create_gradient_mask",
        mask={"image_name": mask_name},
        image={"image_name": image_name},
        coherence_mode="Gaussian Blur",
        minimum_denoise=0,
        edge_radius=16,
        fp32=fp32,
    )
    b.edge(core["vae_source"], "vae", mask, "vae")
    b.edge(core["loader"], "unet", mask, "unet")
    b.edge(mask, "denoise_mask", core["denoise"], "denoise_mask")
    return b.result()


def _add_i2l(b: _Builder, core: dict[str, str], image_name: str, fp32: bool) -> None:
    i2l = b.node("i2l", "i2l", image={"image_name": image_name}, fp32=fp32)
    b.edge(core["vae_source"], "vae", i2l, "vae")
    b.edge(i2l, "latents", core["denoise"], "latents")


def sdxl_txt2img(
    model: dict[str, Any],
    *,
    width: int = 1024,
    height: int = 1024,
    steps: int = 30,
    cfg_scale: float = 7.5,
    scheduler: str = "euler",
    negative: str = "",
    vae: dict[str, Any] | None = None,
    loras: Sequence[tuple[dict[str, Any], float]] = (),
    board_id: str | None = None,
    fp32: bool = True,
) -> tuple[dict[str, Any], GraphIds]:
    """SDXL text-to-image (`buildSDXLGraph`, §6.2): no clip_skip, prompt also used as style."""
    b = _Builder("sdxl_graph")
    seed = b.node("seed", "integer")
    prompt = b.node("positive_prompt", "string")
    loader = b.node("sdxl_model_loader", "sdxl_model_loader", model=model)
    pos = b.node("pos_cond", "sdxl_compel_prompt")
    pos_collect = b.node("pos_cond_collect", "collect")
    neg = b.node("neg_cond", "sdxl_compel_prompt", prompt=negative, style=negative)
    neg_collect = b.node("neg_cond_collect", "collect")
    noise = b.node("noise", "noise", width=width, height=height, use_cpu=True)
    denoise = b.node("denoise_latents", "denoise_latents", cfg_scale=cfg_scale, cfg_rescale_multiplier=0,
                     scheduler=scheduler, steps=steps, denoising_start=0, denoising_end=1)  # fmt: skip
    output = b.output("l2i", board_id, fp32=fp32)
    metadata_fields: dict[str, Any] = {
        "generation_mode": "sdxl_txt2img",
        "cfg_scale": cfg_scale,
        "cfg_rescale_multiplier": 0,
        "negative_prompt": negative,
        "model": model,
        "steps": steps,
        "rand_device": "cpu",
        "scheduler": scheduler,
        "width": width,
        "height": height,
    }
    if vae is not None:
        metadata_fields["vae"] = vae
    if loras:
        metadata_fields["loras"] = [{"model": lora, "weight": weight} for lora, weight in loras]
    metadata = b.node("core_metadata", "core_metadata", **metadata_fields)

    unet_source, clip_source = loader, loader
    if loras:
        collector = b.node("lora_collector", "collect")
        lora_loader = b.node("sdxl_lora_collection_loader", "sdxl_lora_collection_loader")
        for lora, weight in loras:
            selector = b.node("lora_selector", "lora_selector", lora=lora, weight=weight)
            b.edge(selector, "lora", collector, "item")
        b.edge(collector, "collection", lora_loader, "loras")
        for handle in ("unet", "clip", "clip2"):
            b.edge(loader, handle, lora_loader, handle)
        unet_source, clip_source = lora_loader, lora_loader
    b.edge(unet_source, "unet", denoise, "unet")
    for cond in (pos, neg):
        b.edge(clip_source, "clip", cond, "clip")
        b.edge(clip_source, "clip2", cond, "clip2")
    b.edge(prompt, "value", pos, "prompt")
    b.edge(prompt, "value", pos, "style")
    b.edge(pos, "conditioning", pos_collect, "item")
    b.edge(pos_collect, "collection", denoise, "positive_conditioning")
    b.edge(neg, "conditioning", neg_collect, "item")
    b.edge(neg_collect, "collection", denoise, "negative_conditioning")
    b.edge(seed, "value", noise, "seed")
    b.edge(noise, "noise", denoise, "noise")
    b.edge(denoise, "latents", output, "latents")
    vae_source = loader if vae is None else b.node("vae", "vae_loader", vae_model=vae)
    b.edge(vae_source, "vae", output, "vae")
    b.edge(seed, "value", metadata, "seed")
    b.edge(prompt, "value", metadata, "positive_prompt")
    b.edge(metadata, "metadata", output, "metadata")
    return b.result()


def enqueue_body(
    graph: dict[str, Any],
    seeds: Sequence[int],
    prompts: Sequence[str],
    *,
    zipped: bool = False,
    runs: int = 1,
    prepend: bool = False,
    origin: str = "generate",
    destination: str = "generate",
) -> dict[str, Any]:
    """The `enqueue_batch` body: seeds x prompts (cartesian, the UI's "per iteration" seed behaviour),
    or seeds zipped with prompts (`zipped=True`, "per prompt"; the lists must then be equally long)."""
    seed_id = _node_with_prefix(graph, "seed")
    prompt_id = _node_with_prefix(graph, "positive_prompt")
    seed_datum = {"node_path": seed_id, "field_name": "value", "items": list(seeds)}
    prompt_datum = {"node_path": prompt_id, "field_name": "value", "items": list(prompts)}
    data = [[seed_datum, prompt_datum]] if zipped else [[seed_datum], [prompt_datum]]
    batch = {"graph": graph, "runs": runs, "data": data, "origin": origin, "destination": destination}
    return {"prepend": prepend, "batch": batch}


def _node_with_prefix(graph: dict[str, Any], prefix: str) -> str:
    matches = [node_id for node_id in graph["nodes"] if node_id.startswith(f"{prefix}:")]
    if len(matches) != 1:
        raise ValueError(f"expected one {prefix}:* node in the graph, found {len(matches)}")
    return matches[0]
