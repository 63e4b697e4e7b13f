"""Install sources as InvokeAI writes them: a local path, an http(s) URL, or a Hugging Face repo id."""

from __future__ import annotations

import re
from typing import Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.model_jobs import HFSource, LocalSource, ModelSource, URLSource
from serve_app.domain.models import SourceType

# `org/name`, `org/name:variant`, `org/name:variant:subfolder`, `org/name::path/in/repo.safetensors`.
_HF_REPO = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<variant>[\w-]*)(?::(?P<subfolder>[^:]+))?)?$")
# InvokeAI's ModelRepoVariant values this server can load ("" is the default layout).
HF_VARIANTS = ("", "fp16", "fp32")
_DEFAULT_VARIANT = "fp16"  # what people almost always want, as InvokeAI says


def parse_source(source: str, *, inplace: bool = False) -> ModelSource:
    """The source a user typed: an absolute (or ./, ../, ~) path is local, http(s) is a URL, `org/name[...]` is a
    Hugging Face repo; anything else is InvalidRequest. Paths are not looked at here."""
    text = source.strip()
    if not text:
        raise InvalidRequest("The model source is empty", field="source")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return URLSource(url=text)
    if "://" in text:
        raise InvalidRequest(f"Unsupported URL scheme in {text!r}; use http or https", field="source")
    if text.startswith(("/", "./", "../", "~")):
        return LocalSource(path=text, inplace=inplace)
    match = _HF_REPO.match(text)
    if match is None:
        raise InvalidRequest(f"{text!r} is not a path, an http(s) URL or a Hugging Face repo id", field="source")
    variant, subfolder = match["variant"], match["subfolder"]
    if variant is not None and variant not in HF_VARIANTS:
        raise InvalidRequest(f"Unsupported variant {variant!r}; use one of fp16, fp32 or none", field="source")
    if subfolder is not None and (".." in subfolder.split("/") or subfolder.startswith("/")):
        raise InvalidRequest(f"Invalid path in repo: {subfolder!r}", field="source")
    return HFSource(
        repo_id=match["repo"],
        variant=_DEFAULT_VARIANT if variant is None else (variant or None),
        subfolder=subfolder,
    )


def source_type(source: ModelSource) -> SourceType:
    if isinstance(source, LocalSource):
        return SourceType.PATH
    if isinstance(source, URLSource):
        return SourceType.URL
    return SourceType.HF_REPO_ID


def wire_source(source: ModelSource) -> dict[str, Any]:
    """The source as InvokeAI dumps it (its fields in its order, `type` last; golden 07)."""
    if isinstance(source, LocalSource):
        return {"path": source.path, "inplace": source.inplace, "type": "local"}
    if isinstance(source, URLSource):
        return {"url": source.url, "access_token": None, "type": "url"}
    return {
        "repo_id": source.repo_id,
        "variant": source.variant,
        "subfolder": source.subfolder,
        "access_token": None,
        "type": "hf",
    }
