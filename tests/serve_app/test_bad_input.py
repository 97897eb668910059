"""Bad input against the running Serve app over HTTP: the right 4xx, a readable detail, nothing written."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.make_sample import make_scene
from tests.serve_app.conftest import LEGACY_FORM, wait_job

pytestmark = pytest.mark.serve


def _png_header(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
        + width.to_bytes(4, "big")
        + height.to_bytes(4, "big")
        + b"\x08\x02\x00\x00\x00"
    )


def _encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _palette_png() -> bytes:
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(make_scene(256), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(out, format="PNG")
    return out.getvalue()


def _serve_rss_mb() -> float:
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
            if b"ServeReplica:tree-detection" in cmdline or b"ProxyActor" in cmdline:
                rss = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
                total += int(rss.split()[1])
        except (OSError, StopIteration):
            continue
    return total / 1024


@pytest.fixture
def unchanged_models(serve_env: dict[str, str]):
    folder = Path(serve_env["GENERATED_MODELS_DIR"])
    before = sorted(p.name for p in folder.iterdir())
    yield
    assert sorted(p.name for p in folder.iterdir()) == before, "bad input wrote a file"


def _detect(url: str, data: bytes | None, **form: str) -> httpx.Response:
    files = {"image": ("tile.png", data, "image/png")} if data is not None else None
    return httpx.post(f"{url}/detect-trees", files=files, data={**LEGACY_FORM, **form}, timeout=60)


SCENE = make_scene(400)
GOOD = _encode(cv2.imdecode(np.frombuffer(SCENE, np.uint8), cv2.IMREAD_COLOR))
TRUNCATED_JPEG = _encode(cv2.imdecode(np.frombuffer(SCENE, np.uint8), cv2.IMREAD_COLOR), ".jpg")[:-2000]

BAD_IMAGES = {
    "empty file": (b"", 400, "empty"),
    "text renamed .png": (b"just some text, not an image", 400, "not"),
    "truncated PNG": (GOOD[: len(GOOD) // 2], 400, "PNG"),
    "truncated JPEG": (TRUNCATED_JPEG, 400, "JPEG"),
    "PNG header only": (_png_header(100, 100), 400, "PNG"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_unreadable_images_are_400(serve_url: str, unchanged_models: None, case: str) -> None:
    data, status, word = BAD_IMAGES[case]
    response = _detect(serve_url, data)
    assert response.status_code == status, response.text
    assert word.lower() in response.json()["detail"].lower()


def test_missing_file_is_422(serve_url: str, unchanged_models: None) -> None:
    response = _detect(serve_url, None)
    assert response.status_code == 422 and "image" in response.json()["detail"]


def test_decompression_bomb_is_refused_without_memory(serve_url: str, unchanged_models: None) -> None:
    bomb = _png_header(100_000, 100_000) + b"\x00" * 1000  # 10 gigapixels claimed in 1 kB
    before = _serve_rss_mb()
    for _ in range(3):
        response = _detect(serve_url, bomb)
        assert response.status_code == 413 and "pixel" in response.json()["detail"]
    assert _serve_rss_mb() - before < 100  # 30 GB of RGB were never allocated


@pytest.mark.parametrize(
    ("kind", "image"),
    [
        ("16-bit", (np.random.default_rng(1).integers(0, 65535, (300, 300, 3))).astype(np.uint16)),
        ("grayscale", np.full((300, 300), 120, np.uint8)),
        ("RGBA", np.dstack([np.full((300, 300, 3), 90, np.uint8), np.full((300, 300), 255, np.uint8)])),
    ],
)
def test_other_pixel_formats_are_converted(serve_url: str, kind: str, image: np.ndarray) -> None:
    response = _detect(serve_url, _encode(image))
    assert response.status_code == 200, f"{kind}: {response.text}"
    assert response.json()["image_width"] == 300


def test_palette_png_is_converted(serve_url: str) -> None:
    response = _detect(serve_url, _palette_png(), real_width="25.6", real_height="25.6")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"hue_min": "-1"}, "hue_min"),
        ({"hue_max": "180"}, "hue_max"),
        ({"sat_max": "256"}, "sat_max"),
        ({"val_min": "200", "val_max": "100"}, "val"),
        ({"hue_min": "90", "hue_max": "30"}, "hue"),
        ({"min_diameter": "16", "max_diameter": "15"}, "diameter"),
        ({"min_diameter": "-1"}, "min_diameter"),
        ({"real_width": "0"}, "real_width"),
        ({"real_height": "-100"}, "real_height"),
        ({"real_width": "nan"}, "real_width"),
        ({"real_height": "inf"}, "real_height"),
        ({"real_width": "1e12"}, "real_width"),
        ({"cluster_threshold": "-3"}, "cluster_threshold"),
        ({"hue_min": "forty"}, "hue_min"),
        ({"real_width": "100m"}, "real_width"),
        ({"method": "magic"}, "method"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    serve_url: str, unchanged_models: None, form: dict[str, str], field: str
) -> None:
    response = _detect(serve_url, GOOD, **form)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and field in detail


TREE = {"x": 1.0, "y": 2.0, "diameter": 3.0}


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        (b"{not json", 422, "JSON"),
        (b'"a string"', 422, "trees"),
        (b'{"total_trees": 3}', 422, "trees"),
        (b'{"trees": [{"x": 1, "y": 2}]}', 422, "diameter"),
        (b'{"trees": [{"x": NaN, "y": 2, "diameter": 3}]}', 422, "x"),
        (b'{"trees": [{"x": 1, "y": 2, "diameter": -3}]}', 422, "diameter"),
        (b'{"trees": [{"x": "1", "y": 2, "diameter": 3}]}', 422, "x"),
        (b'{"trees": [{"id": -4, "x": 1, "y": 2, "diameter": 3}]}', 422, "id"),
    ],
)
def test_bad_tree_lists(serve_url: str, unchanged_models: None, body: bytes, status: int, word: str) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{serve_url}/generate-model", content=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    assert word in response.json()["detail"]


def test_more_trees_than_the_limit(serve_url: str, unchanged_models: None) -> None:
    response = httpx.post(f"{serve_url}/generate-model", json={"trees": [TREE] * 3001}, timeout=60)
    assert response.status_code == 413 and "3,000" in response.json()["detail"]


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..", "tree_lowpoly/../../x", "nope"],
)
def test_unknown_or_path_like_model_names(serve_url: str, unchanged_models: None, name: str) -> None:
    response = httpx.post(f"{serve_url}/generate-model", json={"trees": [TREE], "base_model": name}, timeout=60)
    assert response.status_code == 404, response.text
    response = httpx.post(f"{serve_url}/generate-model", params={"base_model": name}, json={"trees": [TREE]})
    assert response.status_code == 404, response.text
    assert httpx.get(f"{serve_url}/tree-models/{name}.obj").status_code == 404
    assert "root:" not in response.text


def test_unknown_job_and_health_after_all_of_it(serve_url: str) -> None:
    assert httpx.get(f"{serve_url}/jobs/nope").status_code == 404
    assert httpx.delete(f"{serve_url}/jobs/nope").status_code == 404
    assert httpx.get(f"{serve_url}/health").json()["status"] == "ok"
    assert math.isfinite(_serve_rss_mb())


def _ingress_fds() -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ServeReplica:tree-detection:Ingress" in cmdline.read_bytes():
                return len(list((cmdline.parent / "fd").iterdir()))
        except OSError:
            continue
    raise AssertionError("no Ingress replica process found")


def test_clients_that_disconnect_mid_upload_leak_nothing(serve_url: str, unchanged_models: None) -> None:
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(serve_url).hostname, urlsplit(serve_url).port
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    declared = 8 * 1024 * 1024
    before = _ingress_fds()
    for _ in range(5):
        with socket.create_connection((host, port)) as sock:
            request = (
                f"POST /detect-trees HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode()
            sock.sendall(request + head + b"\x89PNG" + b"\x00" * (3 * 1024 * 1024))  # then hang up
    time.sleep(3)
    assert _ingress_fds() <= before + 2  # the spooled uploads were closed, not leaked
    assert httpx.get(f"{serve_url}/health").status_code == 200


def test_a_job_outlives_its_client(serve_url: str) -> None:
    files = {"image": ("t.png", make_scene(800), "image/png")}
    with httpx.Client() as client:  # this client goes away at once
        status_url = client.post(f"{serve_url}/jobs", files=files, data=LEGACY_FORM, timeout=60).json()["status_url"]
    job = wait_job(status_url, 60)
    assert job["state"] == "succeeded" and job["result"]["total_trees"] > 0
