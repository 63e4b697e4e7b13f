"""Model files on disk for ModelService: fingerprints, copies and moves that never replace anything, and removals.
Blocking; the service runs them in threads."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from serve_app.domain.errors import Conflict

FINGERPRINT_PREFIX = "fingerprint:"


def fingerprint(path: Path) -> tuple[int, str]:
    """Total bytes and a cheap fingerprint of a model's files (blocking): sha256 of relative names, sizes and
    modification times, not contents. Stable while the files are untouched, not comparable across hosts; used for
    models found in the models folder, which may hold many gigabytes (installs get a real content hash)."""
    digest = hashlib.sha256()
    total = 0
    for relative, size, mtime_ns in _files(path):
        total += size
        digest.update(f"{relative}\0{size}\0{mtime_ns}\n".encode())
    return total, FINGERPRINT_PREFIX + digest.hexdigest()


def _files(root: Path) -> list[tuple[str, int, int]]:
    if root.is_file():
        stat = root.stat()
        return [(root.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished meanwhile
            found.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def file_name(name: str) -> str:
    """A model name as one visible path component."""
    cleaned = "".join("_" if char in "/\\\x00" else char for char in name).lstrip(".").strip()
    return cleaned or "model"


def companion(path: Path) -> Path:
    """The `<stem>.config/` diffusers folder a single-file checkpoint may carry next to it."""
    return path.with_name(path.stem + ".config")


def remove(path: Path) -> None:
    """Delete a file, link or folder; a missing one is not an error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def place(source: Path, target: Path, *, move: bool = False) -> None:
    """Copy (or with `move`, rename) `source`, a file or folder, to `target` through a hidden temporary sibling,
    then move it into place without replacing anything: a failure or a clash leaves no trace, and a moved
    source is put back (Conflict when `target` exists)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        if move:
            os.rename(source, staging)
        elif source.is_dir():
            shutil.copytree(source, staging, symlinks=False)
        else:
            shutil.copyfile(source, staging)
        if staging.is_dir():
            # rename(2) refuses a non-empty target directory; an existing file target fails too.
            if target.exists():
                raise FileExistsError(target)
            os.rename(staging, target)
        else:
            _link_into_place(staging, target)
    except OSError as error:
        if move and staging.exists():
            os.rename(staging, source)
        if isinstance(error, FileExistsError) or error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise Conflict(f"{target} already exists") from None
        raise
    finally:
        remove(staging)


def _link_into_place(staging: Path, target: Path) -> None:
    # A hard link fails when `target` exists, so it never replaces another install's file; where the filesystem
    # has no hard links, check and rename (a race there is decided by the registry's unique path).
    try:
        os.link(staging, target)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists():
            raise FileExistsError(target) from None
        os.rename(staging, target)
    else:
        staging.unlink()


def move(source: Path, target: Path) -> None:
    """Rename without replacing (Conflict when `target` exists)."""
    if target.exists():
        raise Conflict(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)


def visible_entries(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
