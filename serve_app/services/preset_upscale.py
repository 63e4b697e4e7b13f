"""A preset's default upscale (enfugue-api.md §10.1: the `upscale*`/`outscale` keys of its default configuration).

The Enfugue dialect turns a request's own upscale keys into passes before the model is known; a preset's keys
can only apply once the preset is resolved, so model_resolution.apply_preset asks here when the request brought no
passes. Values are read as the request's are (one value or a list per pass; pydantic's lax mode, so a stored "2"
is 2), then the same limits apply at submit as for a request's own upscale. Like a request's, `upscale_method`
and `upscale_pipeline` are accepted and ignored (Enfugue's invoke ignores them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import UpscalePass
from serve_app.services.enfugue_upscale import UpscaleKeys


def preset_upscale_passes(name: str, config: Mapping[str, Any]) -> list[UpscalePass]:
    """The passes preset `name`'s default configuration asks for (none without `upscale` and an `outscale` above
    1); InvalidRequest naming the preset for a value no request could use either."""
    if config.get("upscale") in (None, "", []):
        return []
    try:
        keys = UpscaleKeys.model_validate({key: value for key, value in config.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise InvalidRequest(f"Model {name} has unusable defaults: {problems}", field="model") from None
    settings = keys.upscale_settings()
    try:
        return settings.passes()
    except InvalidRequest as exc:
        raise InvalidRequest(f"Model {name} has unusable defaults: {exc.message}", field="model") from None
