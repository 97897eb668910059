"""One JSON for one detection: the HTTP API, the CLI and the Python API (DetectionResult.to_dict) agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.serve_app.conftest import LEGACY_FORM
from treecore import DetectionParams, decode_image, detect_trees
from treecore.__main__ import main

#: Seconds per stage differ from run to run: their names are compared, not their values.
VOLATILE = "timings"


def _steady(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, VOLATILE: sorted(body[VOLATILE])}


def test_http_cli_and_python_give_the_same_json(client: TestClient, scene_png: bytes, tmp_path: Path) -> None:
    http = client.post("/detect-trees", files={"image": ("t.png", scene_png, "image/png")}, data=LEGACY_FORM).json()
    src, out = tmp_path / "t.png", tmp_path / "trees.json"
    src.write_bytes(scene_png)
    args = [f"--{name.replace('_', '-')}={value}" for name, value in LEGACY_FORM.items()]
    assert main(["detect", str(src), *args, f"--tiles={http['tile_count']}", "-o", str(out)]) == 0
    cli = json.loads(out.read_text())
    defaults = DetectionParams()
    params = DetectionParams(**{name: type(getattr(defaults, name))(value) for name, value in LEGACY_FORM.items()})
    python = detect_trees(decode_image(scene_png, max_pixels=10**8), params, n_tiles=http["tile_count"]).to_dict()
    assert _steady(cli) == _steady(http)  # the CLI's timings are the HTTP API's: decode, detect, merge, total
    assert {**python, VOLATILE: None} == {**http, VOLATILE: None}
    assert set(python[VOLATILE]) <= set(http[VOLATILE])  # detect_trees times what it does: detect and merge
    assert http["total_trees"] > 50 and http["warnings"] == []
