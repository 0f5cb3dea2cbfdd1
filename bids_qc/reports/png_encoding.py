"""PNG encoding in plain numpy + zlib, and ``data:`` URIs to embed the images in a report."""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a uint8 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA as PNG bytes."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"png_bytes needs uint8, got {img.dtype}")
    if img.ndim == 2:
        colour_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        colour_type, channels = (2 if img.shape[2] == 3 else 6), img.shape[2]
    else:
        raise ValueError(f"png_bytes needs (H, W[, 3|4]), got shape {img.shape}")
    height, width = img.shape[:2]
    rows = img.reshape(height, width * channels)
    raw = np.zeros((height, width * channels + 1), dtype=np.uint8)  # filter byte 0 per row
    raw[:, 1:] = rows

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)) + chunk(b"IEND", b""))


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
