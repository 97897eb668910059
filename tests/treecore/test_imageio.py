import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import tifffile

from tests.treecore.conftest import encode
from treecore.errors import ImageTooLargeError, InvalidImageError
from treecore.imageio import check_image_size, decode_image, read_image_size

LIMIT = 50_000_000


def _rgb(h=20, w=30):
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width=100_000, height=100_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def bomb_jpeg(width=60_000, height=60_000) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def bomb_tiff(width=100_000, height=100_000) -> bytes:
    # A complete directory (GDAL opens it): 8-bit grey, DEFLATE, one strip whose bytes would follow.
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1)]
    entries += [(273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 10)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_round_trip_and_header_size(ext):
    image = _rgb()
    data = encode(image, ext)
    assert read_image_size(data) == (30, 20)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8
    if ext != ".jpg":
        np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_big_endian_tiff_header(bigtiff):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _rgb(5, 7), photometric="rgb", byteorder=">", bigtiff=bigtiff)
    assert read_image_size(buffer.getvalue()) == (7, 5)
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), max_pixels=LIMIT), _rgb(5, 7))


def test_grayscale_rgba_16bit_and_palette_are_converted(tmp_path):
    gray = np.full((4, 5), 77, np.uint8)
    out = decode_image(cv2.imencode(".png", gray)[1].tobytes(), max_pixels=LIMIT)
    assert out.shape == (4, 5, 3) and (out == 77).all()
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 128
    out = decode_image(cv2.imencode(".png", bgra)[1].tobytes(), max_pixels=LIMIT)
    assert tuple(out[0, 0]) == (30, 20, 10)
    deep = np.full((4, 5, 3), 65535, np.uint16)
    deep[..., 0] = 257 * 40
    out = decode_image(cv2.imencode(".png", deep)[1].tobytes(), max_pixels=LIMIT)
    assert tuple(out[0, 0]) == (255, 255, 40)
    deep_tif = decode_image(cv2.imencode(".tif", deep)[1].tobytes(), max_pixels=LIMIT)
    assert tuple(deep_tif[0, 0]) == (255, 255, 40)
    # A palette PNG (colour type 3), written by hand: OpenCV expands the palette.
    ihdr = struct.pack(">IIBBBBB", 2, 1, 8, 3, 0, 0, 0)
    plte = bytes([255, 0, 0, 0, 0, 255])
    raw = b"\x00\x00\x01"  # filter byte, index 0, index 1
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"PLTE", plte)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    out = decode_image(png, max_pixels=LIMIT)
    assert out.tolist() == [[[255, 0, 0], [0, 0, 255]]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text renamed .png", "not a PNG, JPEG or TIFF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG header"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no frame header"),
    ],
)
def test_bad_bytes_raise_invalid_image(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_images_are_refused(ext):
    data = encode(_rgb(64, 64), ext)
    with pytest.raises(InvalidImageError, match="truncated|could not be decoded"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_corrupt_png_body_is_refused():
    data = bytearray(encode(_rgb(64, 64), ".png"))
    data[60:200] = b"\x00" * 140  # damage the compressed pixels, keep IEND
    with pytest.raises(InvalidImageError):
        decode_image(bytes(data), max_pixels=LIMIT)


@pytest.mark.parametrize("bomb", [bomb_png, bomb_jpeg, bomb_tiff])
def test_decompression_bomb_refused_from_header_without_allocating(bomb):
    data = bomb()
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match="over the limit"):
            decode_image(data, max_pixels=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_limit_is_an_argument():
    data = encode(_rgb(20, 30))
    assert check_image_size(data, max_pixels=600) == (30, 20)
    with pytest.raises(ImageTooLargeError):
        check_image_size(data, max_pixels=599)


def test_header_lies_about_size():
    data = bytearray(encode(_rgb(20, 30)))
    data[16:24] = struct.pack(">II", 31, 20)  # IHDR width changed (CRC now wrong too)
    with pytest.raises(InvalidImageError):
        decode_image(bytes(data), max_pixels=LIMIT)
