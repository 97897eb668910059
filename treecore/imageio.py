"""Image bytes in, RGB pixels out: header-only size checks, then a guarded decode.

PNG and JPEG go through OpenCV; TIFF (and GeoTIFF) through GDAL, treecore.raster, the one raster reader.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from treecore.errors import ImageTooLargeError, InvalidImageError
from treecore.raster import read_header, read_raster

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

FORMATS = ("png", "jpeg", "tiff")


def sniff_format(data: bytes) -> str:
    """Name the container format from the first bytes.

    Args:
        data: the file's bytes.

    Returns:
        "png", "jpeg" or "tiff".

    Raises:
        InvalidImageError: empty bytes or any other format.
    """
    if not data:
        raise InvalidImageError("the image file is empty")
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise InvalidImageError("not a PNG, JPEG or TIFF image (unrecognised file signature)")


def read_image_size(data: bytes) -> tuple[int, int]:
    """Read the pixel size from the header alone, without decoding any pixels.

    Args:
        data: PNG, JPEG or TIFF bytes.

    Returns:
        (width, height) in pixels.

    Raises:
        InvalidImageError: not one of those formats, or a header too short or inconsistent to read.
    """
    fmt = sniff_format(data)
    try:
        if fmt == "png":
            width, height = _png_size(data)
        elif fmt == "jpeg":
            width, height = _jpeg_size(data)
        else:
            header = read_header(data)  # GDAL reads the first directory only, no pixels
            width, height = header.width, header.height
    except (struct.error, IndexError) as exc:
        raise InvalidImageError(f"truncated {fmt.upper()} header") from exc
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"{fmt.upper()} header gives an empty image ({width} x {height} pixels)")
    return width, height


def _png_size(data: bytes) -> tuple[int, int]:
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise InvalidImageError("PNG does not start with an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidImageError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            break
        pos += 2 + length
    raise InvalidImageError("JPEG has no frame header (SOF marker): truncated or not a JPEG")


def check_image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """Refuse an image whose header claims more than `max_pixels`, before anything is decoded.

    Args:
        data: PNG, JPEG or TIFF bytes.
        max_pixels: the largest accepted width * height.

    Returns:
        (width, height) in pixels.

    Raises:
        InvalidImageError: unreadable header.
        ImageTooLargeError: width * height > max_pixels.
    """
    width, height = read_image_size(data)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width} x {height} = {width * height:,} pixels, over the limit of {max_pixels:,} pixels"
        )
    return width, height


def _check_complete(data: bytes, fmt: str) -> None:
    # libjpeg fills a truncated scan with grey and only warns; libpng may too: insist on the end marker.
    if fmt == "png" and b"IEND" not in data[-32:]:
        raise InvalidImageError("PNG is truncated (no IEND chunk at the end)")
    if fmt == "jpeg" and _JPEG_EOI not in data[-64:]:
        raise InvalidImageError("JPEG is truncated (no end-of-image marker)")


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode PNG, JPEG or TIFF bytes to 8-bit RGB, checking the size from the header first.

    Grayscale is replicated to three channels, alpha is dropped, palette images are expanded, and
    16-bit samples are scaled to 8 bits (value / 257, rounded).

    Args:
        data: the file's bytes.
        max_pixels: the largest accepted width * height (checked before decoding).

    Returns:
        image: (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        InvalidImageError: empty, truncated, corrupt or not an image.
        ImageTooLargeError: over `max_pixels`.
    """
    fmt = sniff_format(data)
    width, height = check_image_size(data, max_pixels=max_pixels)
    if fmt == "tiff":
        return read_raster(data, max_pixels=max_pixels)
    _check_complete(data, fmt)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise InvalidImageError(f"{fmt.upper()} image could not be decoded (corrupt or truncated data)")
    if decoded.shape[:2] != (height, width):
        raise InvalidImageError(
            f"{fmt.upper()} header says {width} x {height} pixels but the data decodes to "
            f"{decoded.shape[1]} x {decoded.shape[0]}"
        )
    return to_rgb8(decoded)


def to_rgb8(decoded: np.ndarray) -> np.ndarray:
    """Convert an OpenCV-decoded array (gray, BGR or BGRA; 8, 16-bit or float) to RGB uint8.

    Args:
        decoded: (H, W) or (H, W, C) array as returned by cv2.imdecode(..., IMREAD_UNCHANGED).

    Returns:
        image: (H, W, 3) uint8 RGB, a new C-contiguous array.

    Raises:
        InvalidImageError: an unsupported channel count or sample type.
    """
    if decoded.dtype == np.uint16:
        decoded = ((decoded.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif decoded.dtype in (np.float32, np.float64):
        decoded = np.clip(np.nan_to_num(decoded) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise InvalidImageError(f"unsupported sample type {decoded.dtype}")
    if decoded.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB))
    channels = decoded.shape[2]
    if channels == 1:
        return np.ascontiguousarray(cv2.cvtColor(decoded[:, :, 0], cv2.COLOR_GRAY2RGB))
    if channels == 3:
        return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
    if channels == 4:
        return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB))
    raise InvalidImageError(f"unsupported channel count {channels}")
