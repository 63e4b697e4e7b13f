"""Files of a download: where they may go, what they are called, and the blocking work done on them in threads."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from serve_app.domain.errors import Forbidden, InvalidRequest

DEFAULT_NAME = "download"
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".json", ".yaml", ".txt")
_HASH_CHUNK = 8 * 1024 * 1024


def check_url(url: str) -> str:
    """The URL if it is http(s) with a host; InvalidRequest otherwise (no file://, no ftp://...)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"Only http and https URLs can be downloaded, not {url!r}", field="source")
    return url


def check_dest(dest: Path | str, allowed_roots: Sequence[Path]) -> Path:
    """`dest` resolved (symlinks followed; relative paths against the first root); Forbidden outside the roots."""
    if not allowed_roots:
        raise Forbidden("Downloads are not allowed on this server")
    path = Path(dest)
    if not path.is_absolute():
        path = allowed_roots[0] / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in allowed_roots):
        raise Forbidden(f"Downloads may not write to {dest}")
    return resolved


def looks_like_file(path: Path) -> bool:
    """A path named like a model or config file that is not an existing folder."""
    return path.suffix.lower() in FILE_SUFFIXES and not path.is_dir()


def safe_name(name: str | None) -> str | None:
    """A file name that stays in its folder: last path segment, no control characters, no leading dots."""
    if not name:
        return None
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(char for char in last if unicodedata.category(char)[0] != "C").strip().lstrip(".").strip()
    return cleaned[:255] or None


def url_name(url: str) -> str:
    """The (sanitised) last segment of the URL's path, or a fixed name when it has none."""
    return safe_name(unquote(urlsplit(url).path)) or DEFAULT_NAME


def part_path(dest: Path, name: str) -> Path:
    """Where a file is written until it is complete: hidden, next to its final place."""
    return dest / f".{name}.part"


def size_of(path: Path) -> int:
    """Bytes of a file, 0 when missing."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def open_part(path: Path, *, append: bool) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab" if append else "wb")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (models are many GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def finish(part: Path, target: Path, *, overwrite: bool) -> None:
    """Move the complete part into place (atomic on one file system)."""
    if target.exists() and (not overwrite or target.is_dir()):
        raise FileExistsError(f"File exists: {target.name}")
    os.replace(part, target)


def remove(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)
