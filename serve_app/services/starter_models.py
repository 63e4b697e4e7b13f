"""A curated list of real, public models for InvokeAI's `GET /api/v2/models/starter_models`: sources that
install as they are (Hugging Face repo ids, `repo::file` paths and URLs) with their correct base, type and
dependencies. Shaped like InvokeAI 6.8's `StarterModelResponse`; `is_installed` is filled in per request."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, Field


class StarterModelWithoutDependencies(BaseModel):
    description: str
    source: str
    name: str
    base: str
    type: str
    format: str | None = None
    is_installed: bool = False
    previous_names: list[str] = Field(default_factory=list)


class StarterModel(StarterModelWithoutDependencies):
    dependencies: list[StarterModelWithoutDependencies] | None = None


class StarterModelBundle(BaseModel):
    name: str
    models: list[StarterModel]


class StarterModelResponse(BaseModel):
    starter_models: list[StarterModel]
    starter_bundles: dict[str, StarterModelBundle]


def _model(
    name: str,
    base: str,
    type_: str,
    source: str,
    description: str,
    *,
    previous_names: Collection[str] = (),
    dependencies: Collection[StarterModelWithoutDependencies] = (),
) -> StarterModel:
    return StarterModel(
        name=name,
        base=base,
        type=type_,
        source=source,
        description=description,
        previous_names=list(previous_names),
        dependencies=list(dependencies),
    )


def _dependency(model: StarterModel) -> StarterModelWithoutDependencies:
    return StarterModelWithoutDependencies.model_validate(model.model_dump(exclude={"dependencies"}))


# Image encoders the IP-Adapters need (InvokeAI's own repackaging of the CLIP ViT-H/ViT-bigG vision towers).
IP_ADAPTER_SD_ENCODER = _model(
    "IP Adapter SD1.5 Image Encoder", "sd-1", "clip_vision", "InvokeAI/ip_adapter_sd_image_encoder",
    "IP Adapter SD Image Encoder",
)  # fmt: skip
IP_ADAPTER_SDXL_ENCODER = _model(
    "IP Adapter SDXL Image Encoder", "sdxl", "clip_vision", "InvokeAI/ip_adapter_sdxl_image_encoder",
    "IP Adapter SDXL Image Encoder",
)  # fmt: skip
SDXL_VAE_FP16_FIX = _model(
    "sdxl-vae-fp16-fix", "sdxl", "vae", "madebyollin/sdxl-vae-fp16-fix", "SDXL VAE that works with FP16."
)
SD_VAE_FT_MSE = _model(
    "sd-vae-ft-mse", "sd-1", "vae", "stabilityai/sd-vae-ft-mse",
    "Stability AI's improved SD 1.x VAE (fine-tuned with MSE loss): smoother, less noisy faces.",
)  # fmt: skip

SD15 = _model(
    "Stable Diffusion v1.5", "sd-1", "main", "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "The original Stable Diffusion 1.5 (512 px), the base most community models build on.",
)  # fmt: skip
SD21 = _model(
    "Stable Diffusion v2.1", "sd-2", "main", "stabilityai/stable-diffusion-2-1",
    "Stable Diffusion 2.1 (768 px, v-prediction).",
)  # fmt: skip
SDXL_BASE = _model(
    "Stable Diffusion XL Base", "sdxl", "main", "stabilityai/stable-diffusion-xl-base-1.0",
    "Stable Diffusion XL base 1.0 (1024 px).", dependencies=[_dependency(SDXL_VAE_FP16_FIX)],
)  # fmt: skip
SDXL_REFINER = _model(
    "Stable Diffusion XL Refiner", "sdxl-refiner", "main", "stabilityai/stable-diffusion-xl-refiner-1.0",
    "Stable Diffusion XL refiner 1.0: adds detail in the last denoising steps of an SDXL image.",
    dependencies=[_dependency(SDXL_VAE_FP16_FIX)],
)  # fmt: skip
DREAMSHAPER_8 = _model("Dreamshaper 8", "sd-1", "main", "Lykon/dreamshaper-8", "Popular versatile model.")
JUGGERNAUT_XL_9 = _model(
    "Juggernaut XL v9", "sdxl", "main", "RunDiffusion/Juggernaut-XL-v9", "Photograph-focused model.",
    dependencies=[_dependency(SDXL_VAE_FP16_FIX)],
)  # fmt: skip
EASY_NEGATIVE = _model(
    "EasyNegative", "sd-1", "embedding",
    "https://huggingface.co/embed/EasyNegative/resolve/main/EasyNegative.safetensors",
    "A textual inversion to use in the negative prompt to reduce bad anatomy",
)  # fmt: skip

IP_ADAPTER_SD15 = _model(
    "Standard Reference (IP Adapter)", "sd-1", "ip_adapter",
    "https://huggingface.co/InvokeAI/ip_adapter_sd15/resolve/main/ip-adapter_sd15.safetensors",
    "References images with a more generalized/looser degree of precision.",
    previous_names=["IP Adapter"], dependencies=[_dependency(IP_ADAPTER_SD_ENCODER)],
)  # fmt: skip
IP_ADAPTER_PLUS_SD15 = _model(
    "Precise Reference (IP Adapter Plus)", "sd-1", "ip_adapter",
    "https://huggingface.co/InvokeAI/ip_adapter_plus_sd15/resolve/main/ip-adapter-plus_sd15.safetensors",
    "References images with a higher degree of precision.",
    previous_names=["IP Adapter Plus"], dependencies=[_dependency(IP_ADAPTER_SD_ENCODER)],
)  # fmt: skip
IP_ADAPTER_SDXL = _model(
    "Standard Reference (IP Adapter ViT-H)", "sdxl", "ip_adapter",
    "https://huggingface.co/InvokeAI/ip_adapter_sdxl_vit_h/resolve/main/ip-adapter_sdxl_vit-h.safetensors",
    "References images with a higher degree of precision.",
    previous_names=["IP Adapter SDXL"], dependencies=[_dependency(IP_ADAPTER_SDXL_ENCODER)],
)  # fmt: skip

CANNY_SD15 = _model(
    "Hard Edge Detection (canny)", "sd-1", "controlnet", "lllyasviel/control_v11p_sd15_canny",
    "Uses detected edges in the image to control composition.", previous_names=["canny"],
)  # fmt: skip
DEPTH_SD15 = _model(
    "Depth Map", "sd-1", "controlnet", "lllyasviel/control_v11f1p_sd15_depth",
    "Uses depth information in the image to control the depth in the generation.", previous_names=["depth"],
)  # fmt: skip
OPENPOSE_SD15 = _model(
    "Pose Detection (openpose)", "sd-1", "controlnet", "lllyasviel/control_v11p_sd15_openpose",
    "Uses pose information to control the pose of human characters in the generation.",
    previous_names=["openpose"],
)  # fmt: skip
TILE_SD15 = _model(
    "Tile", "sd-1", "controlnet", "lllyasviel/control_v11f1e_sd15_tile",
    "Uses image data to replicate exact colors/structure in the resulting generation.", previous_names=["tile"],
)  # fmt: skip
CANNY_SDXL = _model(
    "Hard Edge Detection (canny)", "sdxl", "controlnet", "xinsir/controlNet-canny-sdxl-1.0",
    "Uses detected edges in the image to control composition.", previous_names=["canny-sdxl"],
)  # fmt: skip
DEPTH_SDXL = _model(
    "Depth Map", "sdxl", "controlnet", "diffusers/controlNet-depth-sdxl-1.0",
    "Uses depth information in the image to control the depth in the generation.", previous_names=["depth-sdxl"],
)  # fmt: skip
OPENPOSE_SDXL = _model(
    "Pose Detection (openpose)", "sdxl", "controlnet", "xinsir/controlNet-openpose-sdxl-1.0",
    "Uses pose information to control the pose of human characters in the generation.",
    previous_names=["openpose-sdxl", "controlnet-openpose-sdxl"],
)  # fmt: skip

REAL_ESRGAN_X4 = _model(
    "RealESRGAN_x4plus", "any", "spandrel_image_to_image",
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
    "A Real-ESRGAN 4x upscaling model (general-purpose).",
)  # fmt: skip
REAL_ESRGAN_X2 = _model(
    "RealESRGAN_x2plus", "any", "spandrel_image_to_image",
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
    "A Real-ESRGAN 2x upscaling model (general-purpose).",
)  # fmt: skip

STARTER_MODELS: list[StarterModel] = [
    SD15, SD21, SDXL_BASE, SDXL_REFINER, DREAMSHAPER_8, JUGGERNAUT_XL_9, SDXL_VAE_FP16_FIX, SD_VAE_FT_MSE,
    EASY_NEGATIVE, IP_ADAPTER_SD15, IP_ADAPTER_PLUS_SD15, IP_ADAPTER_SDXL, IP_ADAPTER_SD_ENCODER,
    IP_ADAPTER_SDXL_ENCODER, CANNY_SD15, DEPTH_SD15, OPENPOSE_SD15, TILE_SD15, CANNY_SDXL, DEPTH_SDXL, OPENPOSE_SDXL,
    REAL_ESRGAN_X4, REAL_ESRGAN_X2,
]  # fmt: skip

STARTER_BUNDLES: dict[str, StarterModelBundle] = {
    "sd-1": StarterModelBundle(
        name="Stable Diffusion 1.5",
        models=[
            SD15,
            DREAMSHAPER_8,
            SD_VAE_FT_MSE,
            EASY_NEGATIVE,
            IP_ADAPTER_SD15,
            IP_ADAPTER_PLUS_SD15,
            CANNY_SD15,
            DEPTH_SD15,
            OPENPOSE_SD15,
            TILE_SD15,
            REAL_ESRGAN_X4,
        ],
    ),  # fmt: skip
    "sdxl": StarterModelBundle(
        name="SDXL",
        models=[
            SDXL_BASE,
            SDXL_REFINER,
            JUGGERNAUT_XL_9,
            SDXL_VAE_FP16_FIX,
            IP_ADAPTER_SDXL,
            CANNY_SDXL,
            DEPTH_SDXL,
            OPENPOSE_SDXL,
            REAL_ESRGAN_X4,
        ],
    ),  # fmt: skip
}


def _marked(model: StarterModel, installed: Collection[str]) -> StarterModel:
    # As InvokeAI: a model is installed when a registered model came from its source; dependencies already
    # installed are left out, so installing the model installs only what is missing.
    return model.model_copy(
        update={
            "is_installed": model.source in installed,
            "dependencies": [dep for dep in model.dependencies or [] if dep.source not in installed],
        }
    )


def starter_models(installed_sources: Collection[str]) -> StarterModelResponse:
    """The curated list and bundles, each model marked installed when a registered model has its source."""
    installed = set(installed_sources)
    return StarterModelResponse(
        starter_models=[_marked(model, installed) for model in STARTER_MODELS],
        starter_bundles={
            key: StarterModelBundle(name=bundle.name, models=[_marked(model, installed) for model in bundle.models])
            for key, bundle in STARTER_BUNDLES.items()
        },
    )
