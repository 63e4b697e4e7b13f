"""HfHubClient: the Hugging Face Hub for installs (which files of a repo, at which URLs) and token checks.

Which files to fetch is decided by pure functions (`select_files`, `local_layout`) over the repo's file list,
so it is tested without a network; the client only asks the hub for that list (`HfApi.model_info`).

Selection, as InvokeAI does it: configs (.json, .txt, sentencepiece .model) are kept; of the weights in each
folder one layout is chosen, preferring safetensors over pickles, then the requested variant (fp16 by default,
falling back to plain weights); every shard of the chosen layout is kept. ONNX, OpenVINO and Flax files never are.
A pipeline repo (model_index.json) ignores single-file checkpoints lying at its top level.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

from serve_app.domain.errors import InvalidRequest, ServiceUnavailable
from serve_app.domain.model_jobs import HFSource

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
CONFIG_SUFFIXES = (".json", ".txt", ".model")
_OTHER_RUNTIMES = ("onnx", "openvino", "flax", "tf_model")
_VARIANTS = ("fp16", "fp32", "bf16", "non_ema", "ema")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
_INDEX = re.compile(r"\.index(?:\.(?P<variant>\w+))?\.json$")
TOKEN_CHECK_TIMEOUT_S = 5.0
HUB_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class HubFile:
    """One file to download: where it goes inside the install folder, and from where."""

    path: str
    url: str
    sha256: str | None = None
    size: int | None = None


def _is_weight(path: PurePosixPath) -> bool:
    return path.suffix in WEIGHT_SUFFIXES


def _layout(path: PurePosixPath) -> tuple[str | None, str, str]:
    """(variant label, suffix, stem without variant and shard numbers) of a weights file."""
    inner = path.name[: -len(path.suffix)]
    variant = None
    for part in re.split(r"[.]", inner)[1:]:
        label = _SHARD.sub("", part)
        if label in _VARIANTS:
            variant = label
    stem = _SHARD.sub("", inner)
    if variant is not None:
        stem = stem.replace(f".{variant}", "")
    return variant, path.suffix, stem


def _score(variant: str | None, suffix: str, wanted: str | None) -> tuple[int, int]:
    """Safetensors first (never unpickle when a safe copy exists), then the wanted variant, then plain weights."""
    if variant == wanted:
        match = 2
    elif variant is None:
        match = 1
    else:
        match = 0
    return 1 if suffix == ".safetensors" else 0, match


def select_files(paths: Sequence[str], *, variant: str | None, subfolder: str | None) -> list[str]:
    """The repo files to download for one model (see the module docstring); empty when nothing fits."""
    files = [PurePosixPath(path) for path in paths]
    files = [path for path in files if not any(part.startswith(".") for part in path.parts)]
    if subfolder and PurePosixPath(subfolder).suffix in WEIGHT_SUFFIXES:
        return [subfolder] if subfolder in paths else []
    is_pipeline = any(path == PurePosixPath("model_index.json") for path in files)
    if subfolder:
        root = PurePosixPath(subfolder.strip("/"))
        files = [path for path in files if path.parent == root]
    files = [path for path in files if not any(runtime in path.name for runtime in _OTHER_RUNTIMES)]
    if is_pipeline and not subfolder:
        files = [path for path in files if not (_is_weight(path) and path.parent == PurePosixPath("."))]

    configs = [path for path in files if path.suffix in CONFIG_SUFFIXES]
    weights: dict[PurePosixPath, list[PurePosixPath]] = {}
    for path in files:
        if _is_weight(path):
            weights.setdefault(path.parent, []).append(path)
    chosen: list[PurePosixPath] = []
    chosen_variant: dict[PurePosixPath, str | None] = {}
    for folder, candidates in weights.items():
        best = max(
            ((_layout(path)[0], path.suffix) for path in candidates),
            key=lambda layout: _score(layout[0], layout[1], variant),
        )
        chosen_variant[folder] = best[0]
        chosen += [path for path in candidates if (_layout(path)[0], path.suffix) == best]
    for path in configs:
        index = _INDEX.search(path.name)
        if index and path.parent in chosen_variant and index["variant"] != chosen_variant[path.parent]:
            continue  # the shard index of a layout not chosen
        chosen.append(path)
    return sorted(str(path) for path in chosen)


def distinct_models(selected: Sequence[str]) -> int:
    """How many different weight files (shards and variants counted once) lie at the top of a selection."""
    top = [PurePosixPath(path) for path in selected if "/" not in path]
    return len({_layout(path)[2] for path in top if _is_weight(path)})


def local_layout(repo_id: str, subfolder: str | None, selected: Sequence[str]) -> list[tuple[str, str]]:
    """(repo path, path inside the install folder) pairs: a single weights file by its own name; anything else
    under one folder named after the repo (and subfolder), keeping the repo's layout below it."""
    name = repo_id.rsplit("/", 1)[-1]
    single = len(selected) == 1 and _is_weight(PurePosixPath(selected[0]))
    if single and (subfolder is None or PurePosixPath(subfolder).suffix in WEIGHT_SUFFIXES):
        return [(selected[0], PurePosixPath(selected[0]).name)]
    root = PurePosixPath(subfolder.strip("/")) if subfolder else PurePosixPath(".")
    if subfolder:
        name = f"{name}_{subfolder.strip('/').replace('/', '_')}"
    return [(path, str(PurePosixPath(name) / PurePosixPath(path).relative_to(root))) for path in selected]


class HfHubClient:
    """The hub behind services.model_install.HubClient: blocking `huggingface_hub` calls run in threads."""

    def __init__(self, *, endpoint: str | None = None, timeout_s: float = HUB_TIMEOUT_S) -> None:
        self._endpoint = endpoint
        self._api = HfApi(endpoint=endpoint)
        self._timeout_s = timeout_s

    async def files(self, source: HFSource, access_token: str | None) -> list[HubFile]:
        """The files of `source` to download, in install-folder layout; InvalidRequest when none fit or the repo
        holds several models and none was named."""
        siblings = await self._siblings(source.repo_id, access_token)
        selected = select_files(list(siblings), variant=source.variant, subfolder=source.subfolder)
        if not selected:
            raise InvalidRequest(f"No model files found in {source.repo_id} for {source.subfolder or 'its root'}")
        weights_at_top = not any(PurePosixPath(path).name == "config.json" for path in selected if "/" not in path)
        if not source.subfolder and weights_at_top and distinct_models(selected) > 1:
            raise InvalidRequest(
                f"{source.repo_id} holds several models; name one as {source.repo_id}::path/in/repo.safetensors"
            )
        return [
            HubFile(
                path=local,
                url=hf_hub_url(source.repo_id, remote, endpoint=self._endpoint),
                sha256=siblings[remote][0],
                size=siblings[remote][1],
            )
            for remote, local in local_layout(source.repo_id, source.subfolder, selected)
        ]

    async def model_urls(self, repo_id: str, access_token: str | None) -> tuple[list[str] | None, bool]:
        """InvokeAI's `/hugging_face` answer: (checkpoint URLs, or None for a diffusers repo; is_diffusers)."""
        siblings = await self._siblings(repo_id, access_token)
        is_diffusers = any(path.endswith(("model_index.json", "config.json")) for path in siblings)
        if is_diffusers:
            return None, True
        urls = [
            hf_hub_url(repo_id, path, endpoint=self._endpoint) for path in siblings if path.endswith(WEIGHT_SUFFIXES)
        ]
        return urls, False

    async def token_status(self, token: str | None) -> str:
        """ "valid", "invalid" (no token, or the hub refuses it) or "unknown" (the hub did not answer in time)."""
        if not token:
            return "invalid"
        try:
            await asyncio.wait_for(asyncio.to_thread(self._api.whoami, token=token), TOKEN_CHECK_TIMEOUT_S)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            return "invalid" if status in (401, 403) else "unknown"
        except Exception:  # unreachable, offline mode, timeout: we cannot tell
            return "unknown"
        return "valid"

    async def _siblings(self, repo_id: str, access_token: str | None) -> dict[str, tuple[str | None, int | None]]:
        """Every file of the repo: path -> (LFS sha256, size)."""
        try:
            info = await asyncio.to_thread(
                self._api.model_info, repo_id, files_metadata=True, token=access_token or False,
                timeout=self._timeout_s,
            )  # fmt: skip
        except GatedRepoError:
            raise InvalidRequest(f"{repo_id} is gated: log in with a token that has access to it") from None
        except (RepositoryNotFoundError, HFValidationError):
            raise InvalidRequest(f"No HuggingFace repository found: {repo_id}") from None
        except Exception as exc:  # the hub client (httpx2) raises transport errors of its own
            raise ServiceUnavailable(f"Cannot reach Hugging Face: {exc}") from None
        found: dict[str, tuple[str | None, int | None]] = {}
        for sibling in info.siblings or []:
            lfs = getattr(sibling, "lfs", None)
            found[sibling.rfilename] = (getattr(lfs, "sha256", None), getattr(sibling, "size", None))
        return found
