"""`python -m serve_app.inference.demo MODELS_DIR`: build the tiny demo models there unless present."""

from __future__ import annotations

import sys
from pathlib import Path

from serve_app.inference.tiny import ensure_demo_models


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints each model folder, one a line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m serve_app.inference.demo MODELS_DIR\n")
        return 2
    for path in ensure_demo_models(Path(args[0])):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
