"""The /ui tuning page in a real browser (Debian's chromium, driven by playwright-core) against the real Ray Serve.

tests/tools/ui_check.mjs does what a planner does (upload, sliders, mask, copy, an error, 3D downloads, a job, a
TIFF, an API key under a route prefix) and reports what the page showed; this test checks it against the API.
Screenshots and the measured round trips go to test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from scripts.make_sample import make_scene
from tests.serve_app.conftest import API_KEY
from tests.treecore.conftest import Disc, draw_scene, encode

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PLAYWRIGHT = ROOT / "node_modules" / "playwright-core"
SIZE = 2048  # pixels a side, the size the issue names
GSD_M = 0.05
REAL_M = SIZE * GSD_M
#: Crown radii in pixels (diameters 4, 6.5, 8 and 11 m), cycled over a 7 x 7 grid 292 px (14.6 m) apart: no two
#: crowns touch or lie within the default cluster threshold (10 m).
RADII_PX = (40, 65, 80, 110)
GRID = 7


def _discs() -> list[Disc]:
    step = SIZE // GRID
    return [
        Disc(col=step // 2 + i * step, row=step // 2 + j * step, radius=RADII_PX[(i + j) % len(RADII_PX)])
        for i in range(GRID)
        for j in range(GRID)
    ]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed by scripts/system-deps.sh when missing."""
    done = subprocess.run(
        ["bash", "scripts/system-deps.sh", "chromium"], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path = shutil.which("chromium")
    assert path, "chromium is not on PATH after scripts/system-deps.sh chromium"
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with playwright-core in node_modules (`npm ci` when it is missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed (make test installs the npm tools with them)")
    if not PLAYWRIGHT.exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
    return node


def _form(params: dict[str, Any]) -> dict[str, str]:
    # As the page sends them: String(number) in JavaScript, which prints whole numbers without ".0".
    return {name: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for name, v in params.items()}


def _detect(url: str, png: bytes, params: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    files = {"image": ("tile.png", png, "image/png")}
    return httpx.post(f"{url}/detect-trees", files=files, data=_form(params), headers=headers, timeout=300)


def _count(url: str, png: bytes, params: dict[str, Any], key: str | None = None) -> int:
    response = _detect(url, png, params, key)
    assert response.status_code == 200, response.text
    return int(response.json()["total_trees"])


def _mask_pixels(png: bytes, params: dict[str, Any]) -> int:
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    low = np.array([params["hue_min"], params["sat_min"], params["val_min"]], np.uint8)
    high = np.array([params["hue_max"], params["sat_max"], params["val_max"]], np.uint8)
    return int(np.count_nonzero(cv2.inRange(hsv, low, high)))


def test_tuning_page_in_a_real_browser(serve_url: str, chromium: str, node: str, tmp_path: Path) -> None:
    discs = _discs()
    disc_rgb = draw_scene(SIZE, SIZE, discs, shade=True)
    disc_png, disc_tiff = encode(disc_rgb), encode(disc_rgb, ".tiff")
    scene_png = make_scene(SIZE)
    (tmp_path / "trees.png").write_bytes(disc_png)
    (tmp_path / "trees.tiff").write_bytes(disc_tiff)
    (tmp_path / "scene.png").write_bytes(scene_png)
    ARTIFACTS.mkdir(exist_ok=True)
    config = {
        "base": serve_url,
        "secured_base": f"{serve_url}/secured",
        "api_key": API_KEY,
        "chromium": chromium,
        "disc_png": str(tmp_path / "trees.png"),
        "disc_tiff": str(tmp_path / "trees.tiff"),
        "scene_png": str(tmp_path / "scene.png"),
        "real_size_m": REAL_M,
        "scene_real_size_m": SIZE * 0.1,  # make_scene draws at 10 cm per pixel
        "out_dir": str(ARTIFACTS),
        "download_dir": str(tmp_path),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = ROOT / "tests" / "tools" / "ui_check.mjs"
    run = subprocess.run(
        [node, str(script), str(tmp_path / "config.json"), str(tmp_path / "report.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=800,
    )
    report_path = tmp_path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    (ARTIFACTS / "ui-report.json").write_text(json.dumps(report, indent=2))
    print(run.stderr)  # the round trips, for -s / -rP
    assert run.returncode == 0, f"{run.stderr[-4000:]}\n{json.dumps(report)[:4000]}"

    # Every tree drawn is found, and the page shows the count the API gives for the same parameters.
    initial = report["initial"]
    assert initial["params"]["real_width"] == REAL_M and initial["params"]["min_diameter"] == 3
    assert int(initial["count"]) == _count(serve_url, disc_png, initial["params"]) == len(discs)
    assert initial["countText"] == initial["count"]

    # The slider moved min_diameter from 3 to 5 m: the 4 m crowns are gone, in the page as in the API.
    moved = report["after_slider"]
    assert moved["params"]["min_diameter"] == 5
    expected = sum(1 for d in discs if 2 * d.radius * GSD_M >= 5)
    assert int(moved["count"]) == _count(serve_url, disc_png, moved["params"]) == expected

    # The page's own vegetation mask is OpenCV's (cv2.inRange on cv2.COLOR_RGB2HSV), pixel for pixel.
    assert report["mask"]["pixels"] == _mask_pixels(disc_png, moved["params"]) > 0

    # Copy as JSON gives the parameters shown; copy as curl names every field and the service's own URL.
    assert report["copied_json"] == moved["params"]
    curl = report["copied_curl"]
    assert curl.startswith(f"curl -s '{serve_url}/detect-trees'") and "-F image=@'trees.png'" in curl
    for name, value in _form(moved["params"]).items():
        assert f"-F {name}={value}" in curl, name
    assert "copied" in report["copy_message"] or "select and copy" in report["copy_message"]

    # An error the API gives is shown with its status and its detail.
    error = report["error"]
    assert error["params"]["min_diameter"] == 20
    api_error = _detect(serve_url, disc_png, error["params"])
    assert api_error.status_code == 422
    assert "Error 422" in error["error"] and api_error.json()["detail"] in error["error"]
    assert error["marked"] == ["min_diameter", "max_diameter"]  # the fields the detail names are marked
    assert error["count"] == "" and int(report["recovered"]["count"]) == expected

    # Both 3D downloads arrive: a binary glTF and a zip with the OBJ and its MTL.
    glb = Path(report["glb"]["path"]).read_bytes()
    assert glb[:4] == b"glTF" and report["glb"]["suggested"].endswith(".glb")
    with zipfile.ZipFile(report["zip"]["path"]) as archive:
        names = archive.namelist()
    assert any(n.endswith(".obj") for n in names) and any(n.endswith(".mtl") for n in names), names

    # The background job gives the same trees as the direct call.
    assert report["job"]["requests"] >= 1 and int(report["job"]["count"]) == expected

    # A 2048 x 2048 aerial-like scene: the page's count is the API's.
    scene = report["scene"]
    assert int(scene["count"]) == _count(serve_url, scene_png, scene["params"]) > 20

    # A TIFF: the browser cannot show it, the service reads it; the crowns are drawn on a blank canvas.
    tiff = report["tiff"]
    assert int(tiff["count"]) == _count(serve_url, disc_png, tiff["params"]) > 0
    assert "cannot show" in tiff["info"] and min(tiff["canvas"]) > 100

    # With an API key, under the route prefix /secured: the page loads without it, the API refuses, then answers.
    secured = report["secured"]
    assert secured["url"] == f"{serve_url}/secured/ui/"
    assert "API key" in secured["note"]
    assert "Error 401" in secured["without_key"]["error"]
    assert int(secured["with_key"]["count"]) == _count(f"{serve_url}/secured", disc_png, initial["params"], API_KEY)

    # No script error, no refused resource (Content-Security-Policy), only the API's deliberate 4xx answers.
    unexpected = [e for e in report["console_errors"] if "Failed to load resource" not in e]
    assert not unexpected, unexpected
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000
    timings = {"median_round_trip_ms": report["median_round_trip_ms"], "round_trips_ms": report["round_trips_ms"]}
    (ARTIFACTS / "ui-timings.json").write_text(json.dumps(timings, indent=2))
