"""Enfugue's SDXL refiner and inpainting model (enfugue-api.md §5.1, §5.2): resolved at submit, added to the graph.

Resolution: `refiner` and `inpainter` name main models the way `model` names a checkpoint (400 "Cannot find or
access {name}" when unknown). A refiner must be an SDXL refiner (or an SDXL model) and, since it continues the
base model's latents, the main model must be SDXL; an inpainter must be a main model of the main model's base.
`refiner_vae` / `inpainter_vae` resolve like `vae`, checked against the refiner / inpainter.

Graph: with a refiner and `refiner_strength` > 0, every sample's denoise stops at `1 - refiner_strength` and a
second `denoise_latents` on the refiner's UNet (its own prompts, the request's when unset, and aesthetic scores;
`refiner_guidance_scale`) takes its latents from there, at the same step count; the refiner's VAE (or
`refiner_vae`) decodes. With an inpainter and a mask, the samples' denoise runs on the inpainter's UNet (a 9-channel
inpainting UNet reads the masked image's latents) and its VAE (or `inpainter_vae`) encodes and decodes; the prompts
stay the main model's, LoRAs included. Enfugue swaps whole pipelines instead; the UNet is where they differ.
Not covered: canvas regions (`nodes`) and upscale re-diffusion run on the main model only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.models import ModelFamily, ModelType

if TYPE_CHECKING:
    from serve_app.services.generation_graphs import GraphExtras, GraphModel

# (type, name, main model to prefer a match for) -> the model, or None when nothing answers to the name.
FindFn = Callable[[ModelType, str, "GraphModel | None"], Awaitable["GraphModel | None"]]
# (VAE name, the model it decodes for) -> the VAE; InvalidRequest when unknown or of another latent space.
VaeFn = Callable[[str, "GraphModel"], Awaitable["GraphModel"]]

REFINER_BASES = frozenset({ModelFamily.SDXL_REFINER, ModelFamily.SDXL})
# A preset's default configuration keys for the refiner, as GenerationRequest fields.
REFINER_CONFIG_FIELDS = {
    "refiner_denoising_strength": "refiner_strength",
    "refiner_guidance_scale": "refiner_guidance_scale",
    "refiner_aesthetic_score": "refiner_aesthetic_score",
    "refiner_negative_aesthetic_score": "refiner_negative_aesthetic_score",
}
# The request keys a preset's own values replace (Enfugue pops them from the request).
PRESET_MODEL_FIELDS = ("refiner", "refiner_size", "refiner_vae", "inpainter", "inpainter_size", "inpainter_vae")
_DENOISE = re.compile(r"denoise_\d+")

Nodes = dict[str, dict[str, Any]]
Edges = list[dict[str, Any]]


async def resolve_refiner_and_inpainter(
    extras: GraphExtras, request: GenerationRequest, main: GraphModel, *, find: FindFn, vae: VaeFn
) -> GraphExtras:
    """`extras` with the request's refiner, inpainter and their VAEs resolved; InvalidRequest (400) for a name
    nothing answers to or a model that cannot serve."""
    refiner = await _main_model(request.refiner, "refiner", find) if request.refiner else None
    if refiner is not None:
        spec = refiner.spec
        if spec.family not in REFINER_BASES:
            raise InvalidRequest(f"Refiner {request.refiner} is a {spec.family} model; a refiner must be an SDXL "
                                 "refiner or SDXL model", field="refiner")  # fmt: skip
        if main.spec.family is not ModelFamily.SDXL:
            raise InvalidRequest(f"Refiner {request.refiner} continues SDXL latents and cannot be used with "
                                 f"{main.spec.name}, a {main.spec.family} model", field="refiner")  # fmt: skip
    inpainter = await _main_model(request.inpainter, "inpainter", find) if request.inpainter else None
    if inpainter is not None and inpainter.spec.family is not main.spec.family:
        raise InvalidRequest(f"Inpainter {request.inpainter} is a {inpainter.spec.family} model and cannot be used "
                             f"with {main.spec.name}, a {main.spec.family} model", field="inpainter")  # fmt: skip
    return dataclasses.replace(
        extras,
        refiner=refiner,
        refiner_vae=await vae(request.refiner_vae, refiner) if refiner is not None and request.refiner_vae else None,
        inpainter=inpainter,
        inpainter_vae=(
            await vae(request.inpainter_vae, inpainter) if inpainter is not None and request.inpainter_vae else None
        ),
    )


async def _main_model(name: str, field: str, find: FindFn) -> GraphModel:
    found = await find(ModelType.MAIN, name, None)
    if found is None:
        raise InvalidRequest(f"Cannot find or access {name}", field=field)
    return found


def refiner_runs(request: GenerationRequest, extras: GraphExtras) -> bool:
    return extras.refiner is not None and request.refiner_strength > 0


def add_refiner_and_inpainter(nodes: Nodes, edges: Edges, request: GenerationRequest, extras: GraphExtras) -> None:
    """Rewire a built single-region graph (samples' denoise nodes `denoise_<i>`) for the inpainter and refiner."""
    if extras.inpainter is not None and request.mask is not None:
        _use_inpainter(nodes, edges, extras.inpainter, extras.inpainter_vae)
    if refiner_runs(request, extras):
        _add_refiner(nodes, edges, request, extras)


def _add(nodes: Nodes, node_id: str, node_type: str, **fields: Any) -> str:
    nodes[node_id] = {"id": node_id, "type": node_type, "is_intermediate": True, **fields}
    return node_id


def _edge(edges: Edges, source: str, source_field: str, destination: str, destination_field: str) -> None:
    edges.append({"source": {"node_id": source, "field": source_field},
                  "destination": {"node_id": destination, "field": destination_field}})  # fmt: skip


def _loader(nodes: Nodes, node_id: str, model: GraphModel) -> str:
    family = model.spec.family
    node_type = {ModelFamily.SDXL: "sdxl_model_loader",
                 ModelFamily.SDXL_REFINER: "sdxl_refiner_model_loader"}.get(family, "main_model_loader")  # fmt: skip
    return _add(nodes, node_id, node_type, model=model.identifier())


def _vae_source(nodes: Nodes, node_id: str, vae: GraphModel | None, fallback: str) -> str:
    return _add(nodes, node_id, "vae_loader", vae_model=vae.identifier()) if vae is not None else fallback


def _denoise_nodes(nodes: Nodes) -> list[str]:
    return [node_id for node_id in nodes if _DENOISE.fullmatch(node_id)]


def _feeds_denoise(edge: dict[str, Any], denoise: list[str], field: str) -> bool:
    return bool(edge["destination"]["node_id"] in denoise and edge["destination"]["field"] == field)


def _decoders_of(edges: Edges, sources: set[str]) -> set[str]:
    """The nodes (decodes) that take latents from `sources`."""
    return {e["destination"]["node_id"] for e in edges if e["source"]["node_id"] in sources
            and e["source"]["field"] == "latents" and e["destination"]["field"] == "latents"}  # fmt: skip


def _set_vae(edges: Edges, destinations: set[str], vae: str) -> None:
    for e in edges:
        if e["destination"]["node_id"] in destinations and e["destination"]["field"] == "vae":
            e["source"] = {"node_id": vae, "field": "vae"}


def _use_inpainter(nodes: Nodes, edges: Edges, inpainter: GraphModel, inpainter_vae: GraphModel | None) -> None:
    denoise = _denoise_nodes(nodes)
    loader = _loader(nodes, "inpainter", inpainter)
    vae = _vae_source(nodes, "inpainter_vae", inpainter_vae, loader)
    for e in edges:
        if _feeds_denoise(e, denoise, "unet"):
            e["source"] = {"node_id": loader, "field": "unet"}
    # The input's latents, the mask's masked-image latents (what a 9-channel UNet reads) and the decodes.
    latent_inputs = {e["source"]["node_id"] for e in edges if _feeds_denoise(e, denoise, "latents")
                     or _feeds_denoise(e, denoise, "denoise_mask")}  # fmt: skip
    _set_vae(edges, latent_inputs | _decoders_of(edges, set(denoise)), vae)


def _add_refiner(nodes: Nodes, edges: Edges, request: GenerationRequest, extras: GraphExtras) -> None:
    refiner = extras.refiner
    assert refiner is not None and request.width is not None and request.height is not None
    start = 1.0 - request.refiner_strength
    denoise = _denoise_nodes(nodes)
    loader = _loader(nodes, "refiner", refiner)
    vae = _vae_source(nodes, "refiner_vae", extras.refiner_vae, loader)
    decoders = _decoders_of(edges, set(denoise))
    is_refiner = refiner.spec.family is ModelFamily.SDXL_REFINER
    prompts = {
        "refiner_positive": (request.refiner_prompt or request.prompt,
                             request.refiner_prompt_2 or request.refiner_prompt or request.prompt_2 or request.prompt,
                             request.refiner_aesthetic_score),
        "refiner_negative": (request.refiner_negative_prompt or request.negative_prompt,
                             request.refiner_negative_prompt_2 or request.refiner_negative_prompt
                             or request.negative_prompt_2 or request.negative_prompt,
                             request.refiner_negative_aesthetic_score),
    }  # fmt: skip
    for node_id, (prompt, style, score) in prompts.items():
        if is_refiner:
            _add(nodes, node_id, "sdxl_refiner_compel_prompt", style=style, aesthetic_score=score,
                 original_width=request.width, original_height=request.height)  # fmt: skip
        else:
            # An SDXL base model as refiner takes the base's prompt node (no aesthetic score).
            _add(nodes, node_id, "sdxl_compel_prompt", prompt=prompt, style=style, original_width=request.width,
                 original_height=request.height, target_width=request.width, target_height=request.height)  # fmt: skip
            _edge(edges, loader, "clip", node_id, "clip")
        _edge(edges, loader, "clip2", node_id, "clip2")
    for base in denoise:
        node = nodes[base]
        node["denoising_end"] = start
        # An img2img starting after the refiner's start leaves it all to the refiner (InvokeAI: min(start, 1-s)).
        node["denoising_start"] = min(node.get("denoising_start", 0.0), start)
        refine = _add(nodes, f"refiner_{base}", "denoise_latents", steps=node["steps"], scheduler=node["scheduler"],
                      cfg_scale=request.refiner_guidance_scale, denoising_start=start, denoising_end=1.0)  # fmt: skip
        for e in edges:
            if e["source"] == {"node_id": base, "field": "latents"}:
                e["source"] = {"node_id": refine, "field": "latents"}
        _edge(edges, base, "latents", refine, "latents")
        _edge(edges, loader, "unet", refine, "unet")
        _edge(edges, "refiner_positive", "conditioning", refine, "positive_conditioning")
        _edge(edges, "refiner_negative", "conditioning", refine, "negative_conditioning")
    _set_vae(edges, decoders, vae)
    if "metadata" in nodes:
        nodes["metadata"].update(
            refiner_model=refiner.identifier(),
            refiner_cfg_scale=request.refiner_guidance_scale,
            refiner_steps=request.steps,
            refiner_scheduler=nodes[denoise[0]]["scheduler"] if denoise else None,
            refiner_positive_aesthetic_score=request.refiner_aesthetic_score,
            refiner_negative_aesthetic_score=request.refiner_negative_aesthetic_score,
            refiner_start=start,
        )
