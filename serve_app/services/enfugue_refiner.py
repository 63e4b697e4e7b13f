"""Enfugue's SDXL refiner and inpainting model (enfugue-api.md §5.1, §5.2): resolved at submit, added to the graph.

Resolution: `refiner` and `inpainter` name main models the way `model` names a checkpoint (400 "Cannot find or
access {name}" when unknown). A refiner must be an SDXL refiner (or an SDXL model) and, since it continues the
base model's latents, the main model must be SDXL; an inpainter must be a main model of the main model's base.
`refiner_vae` / `inpainter_vae` resolve like `vae`, checked against the refiner / inpainter.

Graph: the builders list their diffusion steps (`DiffusionStep`: one `denoise_latents` each; a single-region
graph's samples, or every region, gap fill and final outpaint of a canvas, services/enfugue_regions.py). With a
refiner, each step whose refiner strength (a region's `refiner_strength`, else the request's) is > 0 stops at
`1 - strength` and a second `denoise_latents` on the refiner's UNet takes its latents from there, at the same step
count, with its own prompt encodings (the request's `refiner_prompt*`, else the step's own prompts; the
aesthetic scores and `refiner_guidance_scale`, a region's overrides first); the refiner's VAE (or `refiner_vae`)
decodes. With an inpainter, the inpaint steps (a masked repaint) run on the inpainter's UNet (a 9-channel
inpainting UNet reads the masked image's latents) and its VAE (or `inpainter_vae`) encodes and decodes; the prompts
stay the main model's, LoRAs included. Enfugue swaps whole pipelines instead; the UNet is where they differ.
Not covered: upscale re-diffusion runs on the main model only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, RegionNode
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


@dataclass(frozen=True)
class RefinerSettings:
    """How a refiner pass runs after one diffusion step: the request's values, or a canvas region's overrides."""

    strength: float
    guidance_scale: float
    aesthetic_score: float
    negative_aesthetic_score: float

    @classmethod
    def of(cls, request: GenerationRequest, region: RegionNode | None = None) -> RefinerSettings:
        # Each is `refiner_<field>` on both; a region's None means the request's.
        values: dict[str, float] = {}
        for item in dataclasses.fields(cls):
            override = getattr(region, f"refiner_{item.name}") if region is not None else None
            values[item.name] = getattr(request, f"refiner_{item.name}") if override is None else override
        return cls(**values)


@dataclass(frozen=True)
class DiffusionStep:
    """One `denoise_latents` node of a built graph, as the inpainter and refiner rewire it: whether it repaints
    within a mask (`inpaint`: the inpainter's UNet runs it), the id prefix of its refiner prompt nodes (steps that
    name the same prefix share them, so they must agree on texts, size and scores), its own prompt and `_2`
    texts (the request's `refiner_prompt*` replace them when set), the size it diffuses at and its refiner
    settings."""

    denoise: str
    inpaint: bool
    prompts: str
    positive: tuple[str, str | None]
    negative: tuple[str, str | None]
    width: int
    height: int
    refiner: RefinerSettings


def single_region_steps(nodes: Nodes, request: GenerationRequest) -> list[DiffusionStep]:
    """The steps of a single-region graph: its samples' denoise nodes `denoise_<i>`, with the request's prompts."""
    assert request.width is not None and request.height is not None
    settings = RefinerSettings.of(request)
    return [DiffusionStep(denoise, request.mask is not None, "refiner", (request.prompt, request.prompt_2),
                          (request.negative_prompt, request.negative_prompt_2), request.width, request.height,
                          settings) for denoise in _denoise_nodes(nodes)]  # fmt: skip


def add_refiner_and_inpainter(
    nodes: Nodes,
    edges: Edges,
    request: GenerationRequest,
    extras: GraphExtras,
    steps: Sequence[DiffusionStep] | None = None,
) -> None:
    """Rewire a built graph for the inpainter and the refiner: the inpaint `steps` run on the inpainter, the steps
    with a refiner strength > 0 end where the refiner's denoise takes over. `steps`: a canvas region graph's
    (services/enfugue_regions.py); None: the single-region graph's (`single_region_steps`)."""
    steps = single_region_steps(nodes, request) if steps is None else steps
    inpaint = [step.denoise for step in steps if step.inpaint]
    if extras.inpainter is not None and inpaint:
        _use_inpainter(nodes, edges, inpaint, extras.inpainter, extras.inpainter_vae)
    refined = [step for step in steps if step.refiner.strength > 0] if extras.refiner is not None else []
    if refined:
        _add_refiner(nodes, edges, request, extras, refined)


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


def _feeds(edge: dict[str, Any], destinations: Sequence[str], field: str) -> bool:
    return bool(edge["destination"]["node_id"] in destinations and edge["destination"]["field"] == field)


def _decoders_of(edges: Edges, sources: set[str]) -> set[str]:
    """The nodes (decodes) that take latents from `sources`."""
    return {e["destination"]["node_id"] for e in edges if e["source"]["node_id"] in sources
            and e["source"]["field"] == "latents" and e["destination"]["field"] == "latents"}  # fmt: skip


def _set_vae(edges: Edges, destinations: set[str], vae: str) -> None:
    for e in edges:
        if e["destination"]["node_id"] in destinations and e["destination"]["field"] == "vae":
            e["source"] = {"node_id": vae, "field": "vae"}


def _use_inpainter(
    nodes: Nodes, edges: Edges, denoise: Sequence[str], inpainter: GraphModel, inpainter_vae: GraphModel | None
) -> None:
    loader = _loader(nodes, "inpainter", inpainter)
    vae = _vae_source(nodes, "inpainter_vae", inpainter_vae, loader)
    for e in edges:
        if _feeds(e, denoise, "unet"):
            e["source"] = {"node_id": loader, "field": "unet"}
    # The input's latents, the mask's masked-image latents (what a 9-channel UNet reads) and the decodes. The
    # builders give an inpaint step latents and masks of its own (no other step reads them), so they may move.
    latent_inputs = {e["source"]["node_id"] for e in edges if _feeds(e, denoise, "latents")
                     or _feeds(e, denoise, "denoise_mask")}  # fmt: skip
    _set_vae(edges, latent_inputs | _decoders_of(edges, set(denoise)), vae)


def _add_refiner(
    nodes: Nodes, edges: Edges, request: GenerationRequest, extras: GraphExtras, steps: Sequence[DiffusionStep]
) -> None:
    refiner = extras.refiner
    assert refiner is not None
    loader = _loader(nodes, "refiner", refiner)
    vae = _vae_source(nodes, "refiner_vae", extras.refiner_vae, loader)
    for step in steps:
        if f"{step.prompts}_positive" not in nodes:
            _refiner_prompts(nodes, edges, request, step, loader, sdxl_refiner=refiner.spec.family
                             is ModelFamily.SDXL_REFINER)  # fmt: skip
        _refine(nodes, edges, step, loader, vae)
    if "metadata" in nodes:
        nodes["metadata"].update(
            refiner_model=refiner.identifier(),
            refiner_cfg_scale=request.refiner_guidance_scale,
            refiner_steps=request.steps,
            refiner_scheduler=nodes[steps[0].denoise]["scheduler"],
            refiner_positive_aesthetic_score=request.refiner_aesthetic_score,
            refiner_negative_aesthetic_score=request.refiner_negative_aesthetic_score,
            refiner_start=1.0 - request.refiner_strength,
        )


def _refiner_prompts(
    nodes: Nodes, edges: Edges, request: GenerationRequest, step: DiffusionStep, loader: str, *, sdxl_refiner: bool
) -> None:
    """The refiner's prompt encodings of `step`: the request's refiner prompts, else the step's own."""
    (prompt, prompt_2), (negative, negative_2) = step.positive, step.negative
    texts = {
        "positive": (request.refiner_prompt or prompt,
                     request.refiner_prompt_2 or request.refiner_prompt or prompt_2 or prompt,
                     step.refiner.aesthetic_score),
        "negative": (request.refiner_negative_prompt or negative,
                     request.refiner_negative_prompt_2 or request.refiner_negative_prompt or negative_2 or negative,
                     step.refiner.negative_aesthetic_score),
    }  # fmt: skip
    for kind, (text, style, score) in texts.items():
        node_id = f"{step.prompts}_{kind}"
        if sdxl_refiner:
            _add(nodes, node_id, "sdxl_refiner_compel_prompt", style=style, aesthetic_score=score,
                 original_width=step.width, original_height=step.height)  # fmt: skip
        else:
            # An SDXL base model as refiner takes the base's prompt node (no aesthetic score).
            _add(nodes, node_id, "sdxl_compel_prompt", prompt=text, style=style, original_width=step.width,
                 original_height=step.height, target_width=step.width, target_height=step.height)  # fmt: skip
            _edge(edges, loader, "clip", node_id, "clip")
        _edge(edges, loader, "clip2", node_id, "clip2")


def _refine(nodes: Nodes, edges: Edges, step: DiffusionStep, loader: str, vae: str) -> None:
    """`step`'s denoise ends at 1 - strength; a denoise on the refiner's UNet continues from its latents (same
    steps and scheduler) and feeds what it fed; the refiner's VAE decodes."""
    start = 1.0 - step.refiner.strength
    base = nodes[step.denoise]
    decoders = _decoders_of(edges, {step.denoise})
    base["denoising_end"] = start
    # An img2img starting after the refiner's start leaves it all to the refiner (InvokeAI: min(start, 1-s)).
    base["denoising_start"] = min(base.get("denoising_start", 0.0), start)
    refine = _add(nodes, f"refiner_{step.denoise}", "denoise_latents", steps=base["steps"],
                  scheduler=base["scheduler"], cfg_scale=step.refiner.guidance_scale, denoising_start=start,
                  denoising_end=1.0)  # fmt: skip
    for e in edges:
        if e["source"] == {"node_id": step.denoise, "field": "latents"}:
            e["source"] = {"node_id": refine, "field": "latents"}
    _edge(edges, step.denoise, "latents", refine, "latents")
    _edge(edges, loader, "unet", refine, "unet")
    _edge(edges, f"{step.prompts}_positive", "conditioning", refine, "positive_conditioning")
    _edge(edges, f"{step.prompts}_negative", "conditioning", refine, "negative_conditioning")
    _set_vae(edges, decoders, vae)
