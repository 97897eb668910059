"""The tuning page's serving (TestClient): mount, redirect, headers, the API key exemption; its HSV code under Node."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.middleware import ApiKeyMiddleware
from serve_app.api.ui import CONTENT_SECURITY_POLICY, UI_DIR
from tests.serve_app.conftest import API_KEY, local_client
from treecore.imageio import decode_image

ROOT = Path(__file__).resolve().parents[2]
#: The bounds tests/tools/hsv_all_colours.js gives inRange.
LOW, HIGH = (35, 40, 40), (85, 255, 255)
#: Every file of the page; the .js ones are ES modules, which browsers refuse unless served as JavaScript.
PAGE_FILES = {
    "index.html": "text/html",
    "main.js": "javascript",
    "api.js": "javascript",
    "jobs.js": "javascript",
    "render.js": "javascript",
    "model.js": "javascript",
    "hsv.js": "javascript",
    "orientation.js": "javascript",
    "style.css": "text/css",
}
ORIENTATION = 0x0112


@pytest.fixture
def secured(tmp_path: Path):
    with local_client(tmp_path, api_key=API_KEY) as client:
        yield client


def test_page_files_are_served_with_their_types_and_policy(client: TestClient) -> None:
    for name, kind in PAGE_FILES.items():
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], name
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
    index = client.get("/ui/")
    assert index.status_code == 200 and index.text == (UI_DIR / "index.html").read_text()


def test_ui_redirects_to_ui_slash_relatively(client: TestClient) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "ui/"
    assert client.get("/ui").url.path == "/ui/"  # followed: resolved against /ui (the browser test: /secured/ui)


def test_page_files_are_all_listed() -> None:
    # A module the list misses would go untested for its media type (and a stale name would 404 above).
    assert {p.name for p in UI_DIR.iterdir()} == set(PAGE_FILES)


def test_page_loads_its_modules_from_main_js() -> None:
    index = (UI_DIR / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", index) == ['<script type="module" src="main.js">']
    imported = set()
    for path in UI_DIR.glob("*.js"):
        imported |= set(re.findall(r'^import .* from "\./([\w.]+)";$', path.read_text(), re.M))
    assert imported | {"main.js"} == {n for n in PAGE_FILES if n.endswith(".js")}


def test_page_urls_are_relative(client: TestClient) -> None:
    # A leading "/" would escape a route prefix (Serve's route_prefix, an ingress path).
    for name in PAGE_FILES:
        text = client.get(f"/ui/{name}").text
        for needle in ('href="/', 'src="/', 'fetch("/', 'url("/', 'post("/', 'from "/', "import("):
            assert needle not in text, (name, needle)


def test_missing_page_file_is_a_json_404(client: TestClient) -> None:
    response = client.get("/ui/nothing-here.js")
    assert response.status_code == 404 and "detail" in response.json()


def test_page_is_open_but_the_api_is_not_with_a_key(secured: TestClient) -> None:
    assert secured.get("/ui/").status_code == 200
    assert secured.get("/ui/main.js").status_code == 200
    assert secured.get("/ui", follow_redirects=False).status_code == 307
    assert secured.get("/").status_code == 401
    assert secured.get("/", headers={"X-API-Key": API_KEY}).status_code == 200
    assert secured.get("/tree-models").status_code == 401
    assert secured.post("/detect-trees").status_code == 401


def test_only_the_exact_prefix_is_open(secured: TestClient) -> None:
    for path in ("/uiX", "/ui-admin", "/uix/main.js", "/u", "/UI/"):
        assert secured.get(path).status_code == 401, path
    # Dot segments stay inside the /ui mount (StaticFiles will not leave its folder): never the info route.
    response = secured.get("/ui/%2e%2e/")
    assert response.status_code == 404 and "totals" not in response.text
    response = secured.post("/ui/%2e%2e/detect-trees")
    assert response.status_code in (404, 405)


async def _status(app: ApiKeyMiddleware, path: str, root_path: str = "") -> int:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path, "headers": []}
    await app(scope, receive, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize(
    ("path", "root_path", "status"),
    [
        ("/ui", "", 200),
        ("/ui/", "", 200),
        ("/ui/main.js", "", 200),
        ("/uiX", "", 401),
        ("/secured/ui/", "/secured", 200),
        ("/secured/ui", "/secured", 200),
        ("/secured/uiX", "/secured", 401),
        ("/secured/detect-trees", "/secured", 401),
        ("/securedui/", "/secured", 401),
        ("/ui/", "/secured", 200),  # a server that strips the prefix from path
    ],
)
def test_exemption_is_root_path_aware(path: str, root_path: str, status: int) -> None:
    import asyncio

    async def inner(scope: dict, receive: object, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ApiKeyMiddleware(inner, api_key=API_KEY)
    assert asyncio.run(_status(middleware, path, root_path)) == status


def test_hsv_js_equals_opencv_for_every_colour(tmp_path: Path) -> None:
    """The page's mask (hsv.js) converts all 2**24 RGB colours exactly as cv2.COLOR_RGB2HSV does."""
    node = _node()
    out = tmp_path / "hsv.bin"
    done = subprocess.run(
        [node, str(ROOT / "tests/tools/hsv_all_colours.js"), str(UI_DIR / "hsv.js"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    codes = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).reshape(-1, 3)
    got = np.fromfile(out, np.uint8).reshape(-1, 5)
    wrong = np.nonzero((got[:, :3] != expected).any(axis=1))[0]
    assert wrong.size == 0, f"{wrong.size} colours differ, e.g. RGB {rgb.reshape(-1, 3)[wrong[:3]].tolist()}"
    mask = cv2.inRange(expected.reshape(4096, 4096, 3), np.array(LOW, np.uint8), np.array(HIGH, np.uint8))
    assert np.array_equal(got[:, 3], mask.reshape(-1) // 255)
    assert (got[:, 4] == 1).all()  # rgbToHsv (one colour) agrees with hsvPlanes


def test_readme_screenshot_is_there_and_small() -> None:
    # README and docs/ui.md show it; check-added-large-files would refuse a big one, 300 kB keeps clones light.
    shot = ROOT / "docs" / "ui-screenshot.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 300_000


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed (make test installs the npm tools with it)")
    return node


def _tagged(rgb: np.ndarray, fmt: str, orientation: int | None, *, big_endian: bool = False) -> bytes:
    """The pixels as `fmt` (JPEG or PNG) with an EXIF orientation tag (none: no EXIF at all)."""
    out = io.BytesIO()
    if orientation is None:
        Image.fromarray(rgb).save(out, fmt)
        return out.getvalue()
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif_bytes = exif.tobytes()  # big-endian ("MM") as Pillow writes it
    if not big_endian:  # the same IFD in little-endian ("II"), as cameras write it
        exif_bytes = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00"
        exif_bytes += bytes([orientation, 0, 0, 0]) + b"\x00\x00\x00\x00"
    Image.fromarray(rgb).save(out, fmt, exif=exif_bytes)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "orientation", "big_endian", "found"),
    [
        ("JPEG", 6, True, 6),
        ("JPEG", 6, False, 6),
        ("JPEG", 8, False, 8),
        ("JPEG", 3, True, 3),
        ("JPEG", 1, True, None),
        ("JPEG", None, False, None),
        ("PNG", 6, True, 6),
        ("PNG", 5, False, 5),
        ("PNG", None, False, None),
    ],
)
def test_orientation_js_drops_the_exif_rotation_the_service_ignores(
    tmp_path: Path, fmt: str, orientation: int | None, big_endian: bool, found: int | None
) -> None:
    """The page decodes a copy without the EXIF orientation (orientation.js): the pixels the service decodes."""
    rgb = np.zeros((100, 300, 3), np.uint8)
    rgb[:, :50] = (200, 30, 30)
    rgb[:20, :] = (30, 200, 30)
    data = _tagged(rgb, fmt, orientation, big_endian=big_endian)
    if orientation is not None:
        assert Image.open(io.BytesIO(data)).getexif().get(ORIENTATION) == orientation
    source, copy = tmp_path / "in", tmp_path / "out"
    source.write_bytes(data)
    done = subprocess.run(
        [_node(), str(ROOT / "tests/tools/orientation_check.js"), str(UI_DIR / "orientation.js"), source, copy],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["orientation"] == found
    out = copy.read_bytes()
    if found is None:
        assert out == data  # nothing to drop: the file as it is
        return
    # The copy has no rotation left (Pillow, like a browser, reads the tag), and the same pixels for the service.
    assert Image.open(io.BytesIO(out)).getexif().get(ORIENTATION, 1) == 1
    assert np.array_equal(decode_image(out, max_pixels=10**6), decode_image(data, max_pixels=10**6))
    assert decode_image(data, max_pixels=10**6).shape == (100, 300, 3)  # the service ignores the tag
    if fmt == "PNG":
        assert b"eXIf" not in out and len(out) < len(data)
    else:
        assert len(out) == len(data)  # one value rewritten in place


def test_orientation_js_leaves_other_files_alone(tmp_path: Path) -> None:
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiff, "TIFF")
    truncated = _tagged(np.zeros((8, 8, 3), np.uint8), "JPEG", 6)[:30]
    cases = {"tiff": tiff.getvalue(), "truncated": truncated, "empty": b"", "junk": b"\xff\xd8\xff" + b"\xff" * 10}
    args: list[str | Path] = [_node(), ROOT / "tests/tools/orientation_check.js", UI_DIR / "orientation.js"]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        args += [tmp_path / name, tmp_path / f"{name}.out"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["orientation"] for r in json.loads(done.stdout)] == [None] * len(cases)
    for name, data in cases.items():
        assert (tmp_path / f"{name}.out").read_bytes() == data, name
