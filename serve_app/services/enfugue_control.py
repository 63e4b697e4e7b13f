"""Enfugue's single-step ControlNet (enfugue-api.md §5.2): `control_image` with `controlnet`, `conditioning_scale`,
`process_control_image` and `invert_control_image`, from the request to graph nodes.

At submit: the keys are checked before anything is stored (`check_control`), the control image is decoded, fitted
and stored with the other inline images (services/enfugue_images.py) and named in `GenerationRequest.control`.
The resolver finds the model (`controlnet_repo`, `is_controlnet_for`): the Enfugue name maps to a Hugging Face repo
through `/api/settings` (`<name>`, or `<name>_xl` for SDXL main models; services/settings.py holds the defaults),
and an installed ControlNet of the main model's base answers to that repo (its install source), to the repo's last
segment or to the Enfugue name. In the graph (`control_node`): canny runs OpenCV's detector
(`canny_edge_detection`) first when `process` is set; tile and inpaint take the image as it is; the other
detectors need models this server does not have, so such a request must send a processed image
(`process_control_image: false`). `invert` (only for unprocessed images, as in Enfugue) inverts its colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import CONTROLNET_NAMES, ControlInput, GenerationRequest
from serve_app.domain.models import ModelFamily, ModelType
from serve_app.services.enfugue_upscale import EdgeFn, NodeFn
from serve_app.services.settings import CONTROLNETS, CONTROLNETS_XL

if TYPE_CHECKING:
    from serve_app.services.generation_graphs import GraphModel

# Detectors this server runs (canny), and the controlnets that take the image as it is whatever the flag says.
DETECTORS = frozenset({"canny"})
NO_DETECTOR = frozenset({"tile", "inpaint"})
# InvokeAI's bounds on a ControlNet weight.
MIN_SCALE, MAX_SCALE = -1.0, 2.0


class ControlNetSettings(Protocol):
    """Where the controlnet repos come from: `/api/settings` (services/settings.py SettingsService)."""

    async def get(self) -> dict[str, Any]:
        """Every setting, defaults filled in."""
        ...


@dataclass(frozen=True)
class ControlImage:
    """The ControlNet keys of one Enfugue request, as sent (`image` is a data URL)."""

    image: str
    controlnet: Any = None
    conditioning_scale: float = 1.0
    process: bool = True
    invert: bool = False


def check_controlnet(name: Any, field: str = "controlnet") -> str:
    """An Enfugue controlnet name; 400 for anything else."""
    if name not in CONTROLNET_NAMES:
        allowed = ", ".join(CONTROLNET_NAMES)
        raise InvalidRequest(f"Unknown controlnet {name!r}; expected one of {allowed}", field=field)
    return str(name)


def check_control(control: ControlImage | None) -> None:
    """What can be refused before the image is even decoded: an unknown or missing controlnet, a scale out of
    range, or a detector this server cannot run."""
    if control is None:
        return
    if control.controlnet is None or control.controlnet == "":
        raise InvalidRequest("`control_image` needs a `controlnet`", field="controlnet")
    name = check_controlnet(control.controlnet)
    if not MIN_SCALE <= control.conditioning_scale <= MAX_SCALE:
        raise InvalidRequest(f"`conditioning_scale` must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got "
                             f"{control.conditioning_scale}", field="conditioning_scale")  # fmt: skip
    check_processable(name, control.process)


def check_processable(name: str, process: bool, field: str = "process_control_image") -> None:
    """400 when `process` asks for a detector this server does not have (everything but canny; tile and inpaint
    need none)."""
    if process and name not in DETECTORS | NO_DETECTOR:
        raise InvalidRequest(
            f"This server cannot run the `{name}` detector: send an already processed control image with "
            "`process_control_image` false",
            field=field,
        )


def control_input(control: ControlImage, stored_name: str) -> ControlInput:
    """The domain's ControlInput for checked keys and the stored (fitted) control image."""
    return ControlInput(
        controlnet=check_controlnet(control.controlnet),
        image=stored_name,
        conditioning_scale=control.conditioning_scale,
        process=control.process,
        invert=control.invert,
    )


def used_controlnets(request: GenerationRequest) -> list[str]:
    """The controlnet names a request uses (single-step, per region and per upscale pass), each once, in order."""
    controls = [request.control, *(region.control for region in request.nodes)]
    names = [control.controlnet for control in controls if control is not None]
    names += [step.controlnet for step in request.upscale if step.controlnet is not None]
    return list(dict.fromkeys(names))


def controlnet_repo(name: str, base: ModelFamily, settings: Mapping[str, Any] | None) -> str:
    """The repo an Enfugue controlnet name stands for with a main model of `base`: `/api/settings`' `<name>`
    (`<name>_xl` for SDXL), else Enfugue's default; 400 for SDXL names without one (only canny and depth)."""
    sdxl = base is ModelFamily.SDXL
    key = f"{name}_xl" if sdxl else name
    repo = (settings or {}).get(key) or (CONTROLNETS_XL.get(name) if sdxl else CONTROLNETS.get(name))
    if not isinstance(repo, str) or not repo:
        raise InvalidRequest(f"There is no SDXL ControlNet for `{name}`; set `{key}` in the settings to one",
                             field="controlnet")  # fmt: skip
    return repo


def is_controlnet_for(model: GraphModel, source: str, name: str, repo: str, base: ModelFamily) -> bool:
    """Whether an installed model (installed from `source`) is the ControlNet `repo` stands for, for `base`:
    installed from that repo (maybe with a `:variant`), or named as the repo's last segment or the Enfugue name."""
    spec = model.spec
    if spec.type is not ModelType.CONTROLNET or spec.family is not base:
        return False
    return source.split(":", 1)[0] == repo or spec.name in (repo.rsplit("/", 1)[-1], name)


def missing_controlnet(name: str, repo: str) -> InvalidRequest:
    return InvalidRequest(f"No ControlNet model for `{name}` is installed (install {repo})", field="controlnet")


def single_control(
    node: NodeFn, edge: EdgeFn, request: GenerationRequest, controlnets: Mapping[str, GraphModel]
) -> str | None:
    """The controlnet node of a request's single-step `control` (None without one), over the whole canvas."""
    control = request.control
    if control is None:
        return None
    model = controlnets.get(control.controlnet)
    if model is None:
        raise InvalidRequest(f"No ControlNet model for `{control.controlnet}` is installed", field="controlnet")
    assert request.width is not None and request.height is not None, "resolve the size before building"
    return control_node(node, edge, control, model, prefix="control", width=request.width, height=request.height)


def control_node(
    node: NodeFn, edge: EdgeFn, control: ControlInput, model: GraphModel, *, prefix: str, width: int, height: int
) -> str:
    """Add the nodes that turn `control` into a ControlNet input for a width × height denoise and return the id
    of the `controlnet` node (its `control` output feeds denoise_latents' `control`). The stored control image is
    already fitted to width × height (the region's size), and denoise_latents resizes it to its latents' size
    anyway (`just_resize`), so the size only documents what the caller builds."""
    check_processable(control.controlnet, control.process, field="controlnet")
    image = {"image_name": control.image}
    source: str | None = None
    if control.process and control.controlnet in DETECTORS:
        source = node(f"{prefix}_canny", "canny_edge_detection", image=image)
    elif control.invert and not control.process:
        # InvokeAI's img_lerp with min 255, max 0 maps v to 255 - v.
        source = node(f"{prefix}_invert", "img_lerp", image=image, min=255, max=0)
    controlnet = _controlnet(node, model, prefix, control.conditioning_scale, image=None if source else image)
    if source is not None:
        edge(source, "image", controlnet, "image")
    return controlnet


def image_control_node(node: NodeFn, edge: EdgeFn, name: str, model: GraphModel, *, image: str, prefix: str) -> str:
    """ControlNet guidance whose control image another node makes (`image`: an upscale pass's resized sample):
    through the detector for canny, as it is otherwise (tile). Returns the `controlnet` node's id."""
    source = image
    if name in DETECTORS:
        source = node(f"{prefix}_canny", "canny_edge_detection")
        edge(image, "image", source, "image")
    controlnet = _controlnet(node, model, prefix, 1.0)
    edge(source, "image", controlnet, "image")
    return controlnet


def _controlnet(node: NodeFn, model: GraphModel, prefix: str, weight: float, *, image: Any = None) -> str:
    return node(
        f"{prefix}_controlnet",
        "controlnet",
        control_model=model.identifier(),
        control_weight=weight,
        begin_step_percent=0.0,
        end_step_percent=1.0,
        control_mode="balanced",
        resize_mode="just_resize",
        **({} if image is None else {"image": image}),
    )
