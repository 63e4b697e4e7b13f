"""The named statements of the sql/*.sql files as typed constants: a misspelt name fails mypy, not a request.

Each file gets a frozen dataclass with one attribute per statement; `load` checks the two match.
"""

from __future__ import annotations

import dataclasses
import re
from importlib.resources import files
from typing import LiteralString, TypeVar, cast

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True, slots=True)
class Queries:
    """One attribute per `-- name:` block; the loader insists the two sets are equal."""

    migration_lock: LiteralString
    current_revision: LiteralString
    ping: LiteralString
    enqueue_lock: LiteralString
    count_pending: LiteralString
    insert_jobs: LiteralString
    get_job: LiteralString
    list_jobs: LiteralString
    count_by_status: LiteralString
    claim_jobs: LiteralString
    renew_leases: LiteralString
    report_progress: LiteralString
    complete_job: LiteralString
    upsert_image: LiteralString
    fail_job: LiteralString
    release_job: LiteralString
    requeue_expired: LiteralString
    cancel_job: LiteralString
    delete_job_images: LiteralString
    delete_job: LiteralString
    get_image: LiteralString
    lock_running_attempt: LiteralString
    insert_generated_image: LiteralString


def parse(text: str) -> dict[str, LiteralString]:
    """Split a query file at its `-- name: x` headers; text before the first header is a preamble."""
    parts = _HEADER.split(text)
    names, bodies = parts[1::2], parts[2::2]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"duplicate query names: {sorted(duplicates)}")
    # The file ships inside the package and is never built from input, so it is literal SQL.
    return {name: cast(LiteralString, body.strip()) for name, body in zip(names, bodies, strict=True)}


_Q = TypeVar("_Q")


def load(cls: type[_Q], resource: str) -> _Q:
    """Read `resource` (e.g. "sql/queries.sql") from the package into `cls`, insisting names match fields."""
    parsed = parse(files("serve_app.storage").joinpath(resource).read_text(encoding="utf-8"))
    expected = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if parsed.keys() != expected:
        raise ValueError(
            f"{resource} does not match {cls.__name__}: missing {sorted(expected - parsed.keys())}, "
            f"unknown {sorted(parsed.keys() - expected)}"
        )
    return cls(**parsed)


QUERIES = load(Queries, "sql/queries.sql")
