"""Opening images with a bound on their pixels, and pixel-format conversion, shared by training, inference, the
image cache and `prepare --check-images` (no torch import)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from pumlc_cli.errors import PumlcError

# At most 64 megapixels are decoded (192 MB as RGB): a camera's full resolution fits; a decompression bomb (a tiny
# PNG that claims 144 megapixels) is refused from its header, before any pixel is decoded.
MAX_PIXELS = 64_000_000


def too_many_pixels(path: Path | str, size: str) -> PumlcError:
    limit = f"pumlc decodes at most {MAX_PIXELS // 10**6} megapixels"
    return PumlcError(f"{path}: refused, too many pixels ({size + '; ' if size else ''}{limit})")


@contextmanager
def open_image(path: Path | str) -> Iterator[Image.Image]:
    """`Image.open(path)` (only the header is read) that refuses an image of more than MAX_PIXELS pixels with a
    `PumlcError`, and never lets Pillow print its raw DecompressionBombWarning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own, larger limit: refused while reading the header
        raise too_many_pixels(path, "") from None
    with img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise too_many_pixels(path, f"{width}×{height} = {width * height / 1e6:.0f} megapixels")
        yield img


def rgb8(img: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel. Pillow's convert clips 16-bit and float grey levels at 255 (a white image):
    rescale them instead (16-bit: to 0..255; float: from [0, 1])."""
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img)
        if img.mode == "F":
            grey = np.clip(arr, 0.0, 1.0) * 255.0 + 0.5
        else:
            grey = np.clip(arr.astype(np.int64), 0, 65535) / 257.0 + 0.5
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")
