"""Image sizes from file headers, without decoding a pixel (JPEG and PNG).

A 20 KB JPEG can claim 30000x30000 pixels; decoding it first would allocate
gigabytes. Readers ask :func:`image_header` for the claimed size and refuse a
file over their budget before handing it to a decoder.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers that carry the frame size (not DHT C4, JPG C8, DAC CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD9)}


class HeaderError(ValueError):
    """The bytes are not a JPEG or PNG whose size can be read."""


def image_header(data: bytes | memoryview) -> tuple[int, int, int]:
    """(height, width, bits per sample) claimed by a JPEG or PNG file's header."""
    data = bytes(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    raise HeaderError("is not a JPEG or PNG file (unknown header)" if data else "is empty (zero bytes)")


def _png(data: bytes) -> tuple[int, int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise HeaderError("is a truncated PNG (no IHDR header)")
    width, height, depth = struct.unpack(">IIB", data[16:25])
    if not width or not height:
        raise HeaderError(f"is a PNG claiming {width}x{height} pixels")
    return height, width, depth


def _jpeg(data: bytes) -> tuple[int, int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise HeaderError("is a damaged JPEG (a marker is missing before its size)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            break
        if marker in _SOF:
            if i + 9 > n:
                break
            depth, height, width = struct.unpack(">BHH", data[i + 4 : i + 9])
            if not width or not height:
                raise HeaderError(f"is a JPEG claiming {width}x{height} pixels")
            return height, width, depth
        i += 2 + length
    raise HeaderError("is a truncated or damaged JPEG (no frame header with its size)")
