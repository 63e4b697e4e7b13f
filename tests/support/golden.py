"""Bodies of responses recorded from a real InvokeAI 6.8.1 (tests/golden/invokeai), for shape comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "invokeai"


def golden_body(name: str) -> Any:
    """The recorded response body of `name`; a missing file is an error, never a skip."""
    return json.loads((GOLDEN / name).read_text())["body"]
