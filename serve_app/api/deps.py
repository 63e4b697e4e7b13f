"""FastAPI dependencies: the collaborators a route may use, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from serve_app.api.auth import is_public, resolve_identity
from serve_app.domain.accounts import Identity
from serve_app.domain.errors import Forbidden, ServiceUnavailable
from serve_app.domain.ports import BusMessage, EventSource, JobChange, ObjectStore
from serve_app.services.accounts import AccountService
from serve_app.services.boards import BoardGateway
from serve_app.services.downloads import DownloadService
from serve_app.services.history import HistoryService
from serve_app.services.images import ImageGateway
from serve_app.services.jobs import JobGateway
from serve_app.services.model_install import InstallService
from serve_app.services.models import ModelService
from serve_app.services.presets import PresetService
from serve_app.services.session_queue import SessionQueueService
from serve_app.services.settings import SettingsService

# Builds the Socket.IO events a job change means (e.g. `queue_item_status_changed`), reading what it needs.
StatusEvents = Callable[[JobChange], Awaitable[list[BusMessage]]]

_T = TypeVar("_T")


@dataclass(frozen=True)
class ApiContext:
    """Everything the routers need, built once by the composition root."""

    jobs: JobGateway
    store: ObjectStore
    version: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Until accounts exist, every request acts as this built-in admin (as both peers do).
    default_owner: str = "admin"
    # The InvokeAI model manager routes (`/api/v2/models`); they answer 503 without it.
    models: ModelService | None = None
    # Job changes and bus messages for the Socket.IO server (`/ws/socket.io`, mounted when set), and the
    # hook that turns a job change into queue events (`/ws/socket.io` then only relays bus messages without it).
    events: EventSource | None = None
    status_events: StatusEvents | None = None
    # InvokeAI's session queue; None where this app instance serves only the Enfugue dialect.
    session_queue: SessionQueueService | None = None
    # InvokeAI's images and boards (`/api/v1/images`, `/boards`, `/board_images`); they answer 503 without them.
    images: ImageGateway | None = None
    boards: BoardGateway | None = None
    # Enfugue's model presets and model listings (`/api/models`, `/api/checkpoints`, ...); 503 without them.
    presets: PresetService | None = None
    # Model installs (`/api/v2/models/install...`) and downloads (`/api/v1/download_queue`, Enfugue's
    # `/api/download`); 503 without them.
    installs: InstallService | None = None
    downloads: DownloadService | None = None
    # Enfugue's `/api/invocation-history`; 503 without it.
    history: HistoryService | None = None
    # Accounts: with auth_enabled every request needs a token (api/auth.py) and `owner` is the caller's
    # username; without it every request is `default_owner`, an admin.
    accounts: AccountService | None = None
    auth_enabled: bool = False
    # Enfugue's `/api/settings` (and the announcement snooze); 503 without it.
    settings: SettingsService | None = None

    async def auth_active(self) -> bool:
        """Whether requests need a token now: `auth` as last posted to `/api/settings` (shared by every replica
        through the database, read through SettingsService's short cache), else `auth_enabled` (SERVE_APP_AUTH)."""
        stored = None if self.settings is None else await self.settings.stored_auth()
        return self.auth_enabled if stored is None else stored


def get_context(request: Request) -> ApiContext:
    context = request.app.state.context
    assert isinstance(context, ApiContext)
    return context


def get_jobs(request: Request) -> JobGateway:
    return get_context(request).jobs


def get_store(request: Request) -> ObjectStore:
    return get_context(request).store


async def get_identity(request: Request) -> Identity:
    """The caller, resolved once per request (kept on request.state for the route's own dependencies)."""
    cached = getattr(request.state, "identity", None)
    if isinstance(cached, Identity):  # The app-wide guard resolved it already.
        return cached
    context = get_context(request)
    auth_enabled = await context.auth_active()
    identity = await resolve_identity(
        request, auth_enabled=auth_enabled, accounts=context.accounts, default_owner=context.default_owner
    )
    request.state.identity = identity
    return identity


async def authenticated(request: Request) -> None:
    """The app-wide guard: every route but the public ones (login, result files) needs a caller."""
    if not is_public(request.url.path):
        await get_identity(request)


async def require_admin(identity: Annotated[Identity, Depends(get_identity)]) -> Identity:
    if not identity.admin:
        raise Forbidden(f"User {identity.username} is not authorized to do this.")
    return identity


async def get_owner(identity: Annotated[Identity, Depends(get_identity)]) -> str:
    return identity.username


async def get_scope(identity: Annotated[Identity, Depends(get_identity)]) -> str | None:
    """Whose records a request may see and change: everyone's (None) for an admin, else the caller's own."""
    return None if identity.admin else identity.username


ContextDep = Annotated[ApiContext, Depends(get_context)]
JobsDep = Annotated[JobGateway, Depends(get_jobs)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
OwnerDep = Annotated[str, Depends(get_owner)]
IdentityDep = Annotated[Identity, Depends(get_identity)]
AdminIdentityDep = Annotated[Identity, Depends(require_admin)]
# The `owner` filter of a listing or bulk change: None for admins (and every request with auth off).
ScopeDep = Annotated[str | None, Depends(get_scope)]
# For `dependencies=[AdminDep]` on routes only admins may call (when auth is on; everyone is admin otherwise).
AdminDep = Depends(require_admin)


def _configured(pick: Callable[[ApiContext], _T | None], what: str) -> Callable[[Request], _T]:
    """A dependency returning an optional collaborator of the context; 503 where this server has none."""

    def get(request: Request) -> _T:
        value = pick(get_context(request))
        if value is None:
            raise ServiceUnavailable(f"{what} not configured on this server.")
        return value

    return get


SessionQueueDep = Annotated[
    SessionQueueService, Depends(_configured(lambda c: c.session_queue, "The session queue is"))
]
ModelsDep = Annotated[ModelService, Depends(_configured(lambda c: c.models, "The model registry is"))]
ImagesDep = Annotated[ImageGateway, Depends(_configured(lambda c: c.images, "Images are"))]
BoardsDep = Annotated[BoardGateway, Depends(_configured(lambda c: c.boards, "Boards are"))]
# Enfugue's model presets and listings, model installs, downloads.
PresetsDep = Annotated[PresetService, Depends(_configured(lambda c: c.presets, "Model presets are"))]
InstallsDep = Annotated[InstallService, Depends(_configured(lambda c: c.installs, "Model installs are"))]
DownloadsDep = Annotated[DownloadService, Depends(_configured(lambda c: c.downloads, "Downloads are"))]
AccountsDep = Annotated[AccountService, Depends(_configured(lambda c: c.accounts, "Accounts are"))]
HistoryDep = Annotated[HistoryService, Depends(_configured(lambda c: c.history, "Invocation history is"))]
SettingsDep = Annotated[SettingsService, Depends(_configured(lambda c: c.settings, "Server settings are"))]
