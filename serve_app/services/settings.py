"""SettingsService: Enfugue's `/api/settings` keys (enfugue-api.md §9), validated, stored, and read back by the
services that obey them.

Unlike Enfugue 0.2.x (which wrote the queue limits to keys nothing read), the limits take effect: JobService
and DownloadService read them through the SettingsReader port that this class implements. `auth` switches
authentication on every replica (api/deps.py reads `stored_auth`; the deployment's SERVE_APP_AUTH is the default
until it is posted), and `intermediate_steps` is how often the Queue replicas store a preview. The other keys are
stored and returned for clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, TypeAdapter, ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.ports import SettingsStore

# Enfugue's controlnet defaults (§5.2): SD 1.5 repos, and SDXL repos for canny and depth only.
CONTROLNETS: dict[str, str] = {
    "canny": "lllyasviel/sd-controlnet-canny",
    "mlsd": "lllyasviel/control_v11p_sd15_mlsd",
    "hed": "lllyasviel/sd-controlnet-hed",
    "scribble": "lllyasviel/control_v11p_sd15_scribble",
    "tile": "lllyasviel/control_v11f1e_sd15_tile",
    "inpaint": "lllyasviel/control_v11p_sd15_inpaint",
    "depth": "lllyasviel/sd-controlnet-depth",
    "normal": "lllyasviel/sd-controlnet-normal",
    "pose": "lllyasviel/control_v11p_sd15_openpose",
    "pidi": "lllyasviel/control_v11p_sd15_softedge",
    "line": "ControlNet-1-1-preview/control_v11p_sd15_lineart",
    "anime": "lllyasviel/control_v11p_sd15s2_lineart_anime",
}
CONTROLNETS_XL: dict[str, str | None] = dict.fromkeys(CONTROLNETS) | {
    "canny": "diffusers/controlnet-canny-sdxl-1.0",
    "depth": "diffusers/controlnet-depth-sdxl-1.0",
}

# Every key GET returns, with Enfugue 0.2.2's default.
DEFAULTS: dict[str, Any] = {
    "safe": True,
    "auth": False,
    "max_queued_invocations": 2,
    "max_queued_downloads": 10,
    "max_concurrent_downloads": 2,
    "switch_mode": "offload",
    "cache_mode": "xl",
    "precision": None,
    "inpainting": None,
    "intermediate_steps": 10,
    **CONTROLNETS,
    **{f"{name}_xl": repo for name, repo in CONTROLNETS_XL.items()},
}

_Count = Annotated[int, Field(ge=0, le=1_000_000)]
_Repo = Annotated[str, Field(min_length=1, max_length=1000)] | None
# What POST accepts per key (pydantic's lax mode: a form's "4" or "true" is fine, "lots" is not).
_TYPES: dict[str, TypeAdapter[Any]] = {
    "safe": TypeAdapter(bool),
    "auth": TypeAdapter(bool),
    "max_queued_invocations": TypeAdapter(_Count),
    "max_queued_downloads": TypeAdapter(_Count),
    "max_concurrent_downloads": TypeAdapter(Annotated[int, Field(ge=1, le=64)]),
    "switch_mode": TypeAdapter(Literal["offload", "unload"] | None),
    "cache_mode": TypeAdapter(Literal["xl", "always"] | None),
    "precision": TypeAdapter(Literal["full", "float32", "float", "half", "float16"] | None),
    "inpainting": TypeAdapter(Literal["never", False] | None),
    "intermediate_steps": TypeAdapter(_Count),
    **{key: TypeAdapter(_Repo) for key in (*CONTROLNETS, *(f"{name}_xl" for name in CONTROLNETS))},
}

# Announcement state written by `POST /api/announcements/snooze` (Enfugue's config keys).
SNOOZE_KEYS = ("initialized", "snooze.time", "snooze.version")


def validate(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The known keys of `changes`, converted; InvalidRequest naming the first bad one. Unknown keys are
    ignored, as Enfugue ignores them."""
    valid: dict[str, Any] = {}
    for key, value in changes.items():
        adapter = _TYPES.get(key)
        if adapter is None:
            continue
        try:
            converted = adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise InvalidRequest(f"Invalid value for setting `{key}`: {reason}", field=key) from None
        # Enfugue stores "never" as false (never build an inpainting checkpoint automatically).
        valid[key] = False if key == "inpainting" and converted == "never" else converted
    return valid


class AuthAccounts(Protocol):
    """What posting `auth` needs from the accounts (services/accounts.py AccountService)."""

    async def check_can_enable_auth(self) -> None:
        """InvalidRequest when nobody could log in once authentication is on."""
        ...

    async def revoke_sessions(self) -> int: ...


class SettingsService:
    """Server settings shared by every replica through `store`; reads are cached for `cache_s` seconds, so a
    change made on another replica applies within that time (at once on this one)."""

    def __init__(
        self,
        store: SettingsStore,
        *,
        defaults: Mapping[str, Any] | None = None,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        accounts: AuthAccounts | None = None,
    ) -> None:
        """`defaults` replaces Enfugue's default of some keys (the limits this deployment was configured with).
        Without `accounts`, posting `auth: true` is refused (nobody could log in)."""
        self._store = store
        self._accounts = accounts
        self._defaults = {**DEFAULTS, **(defaults or {})}
        self._cache_s = cache_s
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def get(self) -> dict[str, Any]:
        """Every setting: the stored value, else the default (also for a controlnet repo reset to null)."""
        stored = await self._stored()
        settings = {key: stored.get(key, default) for key, default in self._defaults.items()}
        for key, default in self._defaults.items():
            if settings[key] is None and _is_controlnet(key):
                settings[key] = default
        return settings

    async def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store the known keys of `changes` (all or none); every setting back."""
        valid = validate(changes)
        if valid.get("auth"):
            if self._accounts is None:
                raise InvalidRequest("Authentication needs accounts, which this server has none of.", field="auth")
            await self._accounts.check_can_enable_auth()
        await self._store.set_many(valid)
        self._cached = None
        if "auth" in valid and self._accounts is not None:
            # As Enfugue: any POST naming `auth` (even unchanged) logs everyone out.
            await self._accounts.revoke_sessions()
        return await self.get()

    async def snooze(self, version: str) -> None:
        """Remember that announcements were dismissed now, for this server version."""
        await self._store.set_many(
            {"initialized": True, "snooze.time": datetime.now(UTC).isoformat(), "snooze.version": version}
        )
        self._cached = None

    async def snoozed(self) -> dict[str, Any]:
        """The stored announcement state (SNOOZE_KEYS that were set)."""
        stored = await self._stored()
        return {key: stored[key] for key in SNOOZE_KEYS if key in stored}

    async def auth_enabled(self) -> bool:
        """Whether authentication is on: as posted to `/api/settings`, else this service's default."""
        return bool((await self.get())["auth"])

    async def stored_auth(self) -> bool | None:
        """`auth` as posted to `/api/settings`; None when never posted (the deployment's setting applies)."""
        value = (await self._stored()).get("auth")
        return value if isinstance(value, bool) else None

    async def intermediate_steps(self) -> int:
        """Store a preview every this many steps (0: never); read by the Queue replicas for each job."""
        value = (await self._stored()).get("intermediate_steps")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return int(self._defaults["intermediate_steps"])

    # SettingsReader: None unless set through `/api/settings`, so the configured limit applies.

    async def max_waiting_jobs(self) -> int | None:
        return await self._stored_int("max_queued_invocations")

    async def max_concurrent_downloads(self) -> int | None:
        return await self._stored_int("max_concurrent_downloads")

    async def max_queued_downloads(self) -> int | None:
        return await self._stored_int("max_queued_downloads")

    async def _stored_int(self, key: str) -> int | None:
        value = (await self._stored()).get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    async def _stored(self) -> dict[str, Any]:
        moment = self._clock()
        if self._cached is not None and moment - self._cached[0] < self._cache_s:
            return self._cached[1]
        stored = await self._store.get_all()
        self._cached = (moment, stored)
        return stored


def _is_controlnet(key: str) -> bool:
    return key.removesuffix("_xl") in CONTROLNETS
