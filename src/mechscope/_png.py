"""The one PNG writer: 8-bit grey or RGB pixels to PNG bytes, and PNG bytes to a data URI for self-contained HTML.

A minimal encoder (zlib + the PNG chunk format, filter 0 on every row), so the bytes depend only on the pixels
and no imaging library is needed to write. Every layer may import it (like ``_cache``).
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of ``[h w]`` (grey) or ``[h w 3]`` (RGB) uint8 pixels."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"a PNG needs [h w] or [h w 3] uint8 pixels, got {pixels.dtype} of shape {pixels.shape}")
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if pixels.ndim == 2 else 2, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes, for an ``<img src>`` in a self-contained page."""
    if png[:8] != SIGNATURE:
        raise ValueError("expected PNG bytes (they start with \\x89PNG)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
