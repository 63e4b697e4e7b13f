"""Hugging Face file selection (pure, over fake file lists) and HfHubClient against a hub-shaped local server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from serve_app.domain.errors import InvalidRequest, ServiceUnavailable
from serve_app.domain.model_jobs import HFSource
from serve_app.storage.hf_hub import HfHubClient, distinct_models, local_layout, select_files
from tests.support.http_files import FileServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("local_hub_allowed")]

PIPELINE = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "sd_xl_base_1.0.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/flax_model.msgpack",
    "text_encoder/openvino_model.bin",
    "text_encoder_2/config.json",
    "text_encoder_2/model-00001-of-00002.safetensors",
    "text_encoder_2/model-00002-of-00002.safetensors",
    "text_encoder_2/model.fp16-00001-of-00002.safetensors",
    "text_encoder_2/model.fp16-00002-of-00002.safetensors",
    "text_encoder_2/model.safetensors.index.json",
    "text_encoder_2/model.safetensors.index.fp16.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "onnx/unet/model.onnx",
]

COMMON = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",  # no fp16 copy: the plain one is the fallback
]


def test_a_pipeline_in_fp16_takes_fp16_weights_and_their_shard_index() -> None:
    assert select_files(PIPELINE, variant="fp16", subfolder=None) == sorted(
        COMMON
        + [
            "text_encoder/model.fp16.safetensors",
            "text_encoder_2/model.fp16-00001-of-00002.safetensors",
            "text_encoder_2/model.fp16-00002-of-00002.safetensors",
            "text_encoder_2/model.safetensors.index.fp16.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ]
    )


def test_a_pipeline_without_variant_takes_plain_safetensors() -> None:
    assert select_files(PIPELINE, variant=None, subfolder=None) == sorted(
        COMMON
        + [
            "text_encoder/model.safetensors",
            "text_encoder_2/model-00001-of-00002.safetensors",
            "text_encoder_2/model-00002-of-00002.safetensors",
            "text_encoder_2/model.safetensors.index.json",
            "unet/diffusion_pytorch_model.safetensors",
        ]
    )


def test_safetensors_win_over_a_pickle_of_the_wanted_variant() -> None:
    files = ["config.json", "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.safetensors"]
    assert select_files(files, variant="fp16", subfolder=None) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert select_files(["config.json", "x.bin"], variant="fp16", subfolder=None) == ["config.json", "x.bin"]


def test_subfolders_and_single_files() -> None:
    assert select_files(PIPELINE, variant="fp16", subfolder="unet") == [
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert select_files(PIPELINE, variant=None, subfolder="unet/diffusion_pytorch_model.bin") == [
        "unet/diffusion_pytorch_model.bin"
    ]
    assert select_files(PIPELINE, variant=None, subfolder="unet/missing.safetensors") == []
    assert select_files(PIPELINE, variant="fp16", subfolder="nothing") == []


def test_repos_of_loose_files() -> None:
    lora = select_files(["README.md", "image.png", "pytorch_lora_weights.safetensors"], variant="fp16", subfolder=None)
    assert lora == ["pytorch_lora_weights.safetensors"]
    assert distinct_models(lora) == 1
    several = select_files(["a.safetensors", "a.ckpt", "b.safetensors"], variant="fp16", subfolder=None)
    assert several == ["a.safetensors", "b.safetensors"]
    assert distinct_models(several) == 2
    assert distinct_models(["m.fp16-00001-of-00002.safetensors", "m.fp16-00002-of-00002.safetensors"]) == 1


def test_local_layout() -> None:
    assert local_layout("org/lora", None, ["pytorch_lora_weights.safetensors"]) == [
        ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.safetensors")
    ]
    assert local_layout("org/repo", "unet/x.safetensors", ["unet/x.safetensors"]) == [
        ("unet/x.safetensors", "x.safetensors")
    ]
    assert local_layout("org/vae-fix", None, ["config.json", "diffusion_pytorch_model.safetensors"]) == [
        ("config.json", "vae-fix/config.json"),
        ("diffusion_pytorch_model.safetensors", "vae-fix/diffusion_pytorch_model.safetensors"),
    ]
    assert local_layout("org/sd", "vae", ["vae/config.json", "vae/w.safetensors"]) == [
        ("vae/config.json", "sd_vae/config.json"),
        ("vae/w.safetensors", "sd_vae/w.safetensors"),
    ]
    assert local_layout("org/sd", None, ["model_index.json", "unet/config.json"])[1] == (
        "unet/config.json",
        "sd/unet/config.json",
    )


@pytest.fixture
def hub() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


WEIGHTS = b"\x01" * 1000


async def test_client_lists_files_with_urls_and_checksums(hub: FileServer) -> None:
    endpoint = hub.add_hf_repo("org/tiny", {"README.md": b"# hi", "config.json": b"{}", "w.safetensors": WEIGHTS})
    client = HfHubClient(endpoint=endpoint)
    files = await client.files(HFSource(repo_id="org/tiny"), None)
    assert [(item.path, item.url, item.sha256, item.size) for item in files] == [
        ("tiny/config.json", f"{endpoint}/org/tiny/resolve/main/config.json", None, 2),
        ("tiny/w.safetensors", f"{endpoint}/org/tiny/resolve/main/w.safetensors", hashlib.sha256(WEIGHTS).hexdigest(),
         len(WEIGHTS)),
    ]  # fmt: skip
    assert await client.model_urls("org/tiny", None) == (None, True)


async def test_client_refuses_repos_with_nothing_or_several_models(hub: FileServer) -> None:
    endpoint = hub.add_hf_repo("org/two", {"a.safetensors": WEIGHTS, "b.safetensors": WEIGHTS})
    hub.add_hf_repo("org/docs", {"README.md": b"# hi"})
    client = HfHubClient(endpoint=endpoint)
    with pytest.raises(InvalidRequest, match="several models"):
        await client.files(HFSource(repo_id="org/two"), None)
    one = await client.files(HFSource(repo_id="org/two", subfolder="b.safetensors"), None)
    assert [item.path for item in one] == ["b.safetensors"]
    with pytest.raises(InvalidRequest, match="No model files"):
        await client.files(HFSource(repo_id="org/docs"), None)
    urls, is_diffusers = await client.model_urls("org/two", None)
    assert not is_diffusers
    assert urls == [f"{endpoint}/org/two/resolve/main/a.safetensors", f"{endpoint}/org/two/resolve/main/b.safetensors"]


async def test_client_unknown_repos_and_unreachable_hubs(hub: FileServer) -> None:
    hub.add("/api/models/org/missing", b"{}", status=401, headers={"X-Error-Code": "RepoNotFound"})
    with pytest.raises(InvalidRequest, match="No HuggingFace repository found"):
        await HfHubClient(endpoint=hub.base_url).model_urls("org/missing", None)
    with pytest.raises(InvalidRequest, match="No HuggingFace repository found"):
        await HfHubClient(endpoint=hub.base_url).model_urls("not a repo id", None)
    with pytest.raises(ServiceUnavailable):
        await HfHubClient(endpoint="http://127.0.0.1:9", timeout_s=2).model_urls("org/x", None)


async def test_token_status(hub: FileServer) -> None:
    hub.add("/api/whoami-v2", b'{"name": "someone", "type": "user"}', content_type="application/json",
            auth="Bearer hf_good")  # fmt: skip
    client = HfHubClient(endpoint=hub.base_url)
    assert await client.token_status("hf_good") == "valid"
    assert await client.token_status("hf_bad") == "invalid"
    assert await client.token_status(None) == "invalid"
    assert await HfHubClient(endpoint="http://127.0.0.1:9").token_status("hf_good") == "unknown"
