"""The named statements of sql/images.sql (images and boards) as typed constants."""

from __future__ import annotations

import dataclasses
from typing import LiteralString

from serve_app.storage.queries import load


@dataclasses.dataclass(frozen=True, slots=True)
class ImageQueries:
    """One attribute per `-- name:` block of sql/images.sql."""

    insert_images: LiteralString
    get_image: LiteralString
    get_images: LiteralString
    list_images: LiteralString
    count_images: LiteralString
    image_names: LiteralString
    update_image: LiteralString
    set_starred: LiteralString
    delete_images: LiteralString
    count_intermediates: LiteralString
    delete_intermediates: LiteralString
    delete_uncategorized: LiteralString
    insert_board: LiteralString
    get_board: LiteralString
    list_boards: LiteralString
    count_boards: LiteralString
    update_board: LiteralString
    lock_board: LiteralString
    unboard_images: LiteralString
    delete_board_images: LiteralString
    delete_board: LiteralString
    move_images: LiteralString


IMAGE_QUERIES = load(ImageQueries, "sql/images.sql")
