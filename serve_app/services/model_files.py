"""Model files on disk for ModelService: fingerprints, copies and moves that never replace anything, and removals;
ModelsFolder, the rules for which paths may be read and written. Blocking; the service runs them in threads.

Files are touched only inside the models folder, except that registering and scanning may read from the
configured import roots; every path is resolved (symlinks followed) and checked before anything is read."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from serve_app.domain.errors import Conflict, Forbidden, InvalidRequest
from serve_app.domain.models import ModelFamily, ModelRecord, ModelType

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


class ModelsFolder:
    """The models folder (`<base>/<type>/<name>` for what is installed into it) and the import roots."""

    def __init__(self, models_dir: Path, allowed_roots: Sequence[Path] = ()) -> None:
        self.path = models_dir.absolute()
        self._root = models_dir.resolve()
        self._roots = [self._root, *(root.resolve() for root in allowed_roots)]

    def checked(self, path: str) -> Path:
        """`path` resolved (relative to the models folder, symlinks followed); Forbidden unless inside the models
        folder or an import root. Nothing is read."""
        if "\x00" in path or not path.strip():
            raise InvalidRequest(f"Invalid path {path!r}")
        resolved = (self.path / path).resolve()  # an absolute `path` replaces the models folder
        if not any(resolved.is_relative_to(root) for root in self._roots):
            raise Forbidden(f"{path} is outside the folders models may be read from")
        return resolved

    def contains(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self._root and resolved.is_relative_to(self._root)

    def is_staging(self, path: Path) -> bool:
        """Inside a hidden folder of the models folder (where installs download to), never a registered model."""
        if not self.contains(path):
            return False
        return path.resolve().relative_to(self._root).parts[0].startswith(".")

    def install_path(self, base: ModelFamily, type_: ModelType, name: str, origin: Path) -> Path:
        stored_name = file_name(name)
        if origin.is_file() and origin.suffix and not stored_name.endswith(origin.suffix):
            stored_name += origin.suffix
        return self.path / base / type_ / stored_name

    def renames_for(self, record: ModelRecord, merged: ModelRecord) -> list[tuple[Path, Path]]:
        """The renames that keep a model's files named after it: [(file or folder), (its config folder)]."""
        old = Path(record.path)
        if not self.contains(old) or not old.exists():
            return []
        installed_in = self.path / record.base / record.type
        parent = self.path / merged.base / merged.type if old.parent == installed_in else old.parent
        name = file_name(merged.name)
        if old.is_file() and old.suffix and not name.endswith(old.suffix):
            name += old.suffix
        new = parent / name
        if new == old:
            return []
        moves = [(old, new)]
        if record.config_path is not None and Path(record.config_path) == companion(old) and companion(old).is_dir():
            moves.append((companion(old), companion(new)))
        return moves

    def remove_files(self, record: ModelRecord) -> None:
        """A model's file or folder and its config folder, where they are inside the models folder."""
        path = Path(record.path)
        config_dir = companion(path)
        if record.config_path is not None and Path(record.config_path) == config_dir:
            self.remove_inside(config_dir)
        self.remove_inside(path)

    def remove_inside(self, path: Path) -> None:
        """Remove a file or folder if it is inside the models folder, then the folders it leaves empty
        (`<base>/<type>/`)."""
        if not self.contains(path):
            return
        remove(path)
        self._prune_empty_parents(path)

    def put_back(self, placed: Path, moved_from: Path) -> None:
        """Undo a move into the models folder (a registration that failed gives a download back)."""
        os.rename(placed, moved_from)
        self._prune_empty_parents(placed)

    def _prune_empty_parents(self, path: Path) -> None:
        parent = path.parent
        while parent != self.path and self.contains(parent):
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone)
                break
            parent = parent.parent
