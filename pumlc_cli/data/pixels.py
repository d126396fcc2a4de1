"""Pixel-format conversion shared by training, inference and the image cache (no torch import)."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
