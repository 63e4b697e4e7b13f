"""Content hashes and sizes of model files and folders, read in chunks so a 7 GB checkpoint never sits in memory.

A file's hash is `"<algorithm>:<hex digest of its bytes>"`. A folder's hash is the same algorithm over the lines
`"<relative/posix/path>\\0<hex digest of that file>\\n"` of its non-hidden files, sorted by path: it changes when a
file is added, removed, renamed or edited, and not with the order the filesystem lists them in, nor with hidden
files (`.cache/`, `.DS_Store`, a download's `.tmp*` parts). InvokeAI hashes folders the same way (per-file hashes
combined in path order), though its exact digests differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import blake3

from serve_app.domain.errors import InvalidRequest

ALGORITHMS = ("blake3", "sha256")
_CHUNK = 8 * 1024 * 1024


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


def hash_model(path: Path, algorithm: str = "blake3") -> str:
    """`"<algorithm>:<hex>"` of a file, or of a folder's non-hidden files (see the module docstring)."""
    if algorithm not in ALGORITHMS:
        raise InvalidRequest(f"Unknown hash algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist")
    if path.is_dir():
        digest = _new(algorithm)
        for file in _files(path):
            digest.update(f"{file.relative_to(path).as_posix()}\0{_file_digest(file, algorithm)}\n".encode())
        return f"{algorithm}:{digest.hexdigest()}"
    return f"{algorithm}:{_file_digest(path, algorithm)}"


def model_size(path: Path) -> int:
    """Bytes of a file, or of a folder's non-hidden files."""
    if path.is_dir():
        return sum(file.stat().st_size for file in _files(path))
    return path.stat().st_size


def _new(algorithm: str) -> _Hasher:
    # One thread: the machine's cores belong to the inference replicas, and a model hash is not urgent.
    return blake3.blake3(max_threads=1) if algorithm == "blake3" else hashlib.sha256()


def _file_digest(path: Path, algorithm: str) -> str:
    digest = _new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """The regular files under `folder` sorted by relative path, skipping anything hidden at any depth. Linked
    files count (a Hugging Face snapshot links to its blobs); linked folders do not, so a link loop cannot hang."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [Path(root, name) for name in files if not name.startswith(".")]
    return sorted((file for file in found if file.is_file()), key=lambda file: file.relative_to(folder).as_posix())
