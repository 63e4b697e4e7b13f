"""img_resize and the image -> tensor conversion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serve_app.domain.errors import InvalidRequest
from serve_app.inference.nodes import RESAMPLE_MODES, resize
from serve_app.inference.nodes.images import image_to_tensor


def _checker() -> Image.Image:
    array = ((np.indices((16, 16)).sum(axis=0) % 2) * 255).astype(np.uint8)
    return Image.fromarray(array, mode="L").convert("RGB")


@pytest.mark.parametrize("mode", sorted(RESAMPLE_MODES))
def test_every_invokeai_mode_resizes(mode: str) -> None:
    assert resize(_checker(), 40, 24, mode).size == (40, 24)


def test_modes_differ_and_bad_names_are_rejected() -> None:
    nearest = np.asarray(resize(_checker(), 24, 24, "nearest"))
    bilinear = np.asarray(resize(_checker(), 24, 24, "bilinear"))

    assert set(np.unique(nearest)) <= {0, 255}
    assert not np.array_equal(nearest, bilinear)
    with pytest.raises(InvalidRequest):
        resize(_checker(), 8, 8, "cubic")
    with pytest.raises(InvalidRequest):
        resize(_checker(), 0, 8)


def test_image_to_tensor_ranges_and_grid() -> None:
    image = Image.new("RGB", (20, 17), (255, 0, 128))

    tensor = image_to_tensor(image)
    raw = image_to_tensor(image.convert("L"), normalize=False)

    assert tensor.shape == (1, 3, 16, 16)
    assert tensor.min() >= -1 and tensor.max() <= 1 and tensor[0, 0].mean() > 0.99
    assert raw.shape == (1, 1, 16, 16) and 0 <= float(raw.min()) <= float(raw.max()) <= 1
