"""The answers' contract through a real Ray Serve: the stored answer names every file (the MTL too), the legacy
expires_in words, warnings for ignored fields, jobs in any scene format, and DELETE answering the final state."""

from __future__ import annotations

import httpx
import pytest

from scripts.make_sample import make_scene
from tests.serve_app.conftest import LEGACY_FORM, wait_job

pytestmark = pytest.mark.serve


def test_stored_answer_names_the_obj_and_its_mtl(serve_url: str) -> None:
    trees = [{"x": float(i % 20) * 5, "y": float(i // 20) * 5, "diameter": 3.0} for i in range(150)]  # above 100
    body = httpx.post(f"{serve_url}/generate-model", json={"trees": trees, "colour": "red"}, timeout=60).json()
    assert (body["expires_in"], body["expires_in_s"]) == ("24 hours", 86400)
    assert body["warnings"] == ["ignored field 'colour' (not a field of this route)"]
    obj = httpx.get(body["download_url"], timeout=60)
    stem = body["filename"].removesuffix(".obj")
    assert obj.status_code == 200 and f"mtllib {stem}.mtl".encode() in obj.content
    mtl = httpx.get(body["mtl_url"], timeout=60)
    assert mtl.status_code == 200 and b"newmtl" in mtl.content
    assert [f["url"] for f in body["files"]] == [body["download_url"], body["mtl_url"]]


def test_misspelt_form_field_is_a_warning(serve_url: str) -> None:
    files = {"image": ("tile.png", make_scene(600), "image/png")}
    body = httpx.post(f"{serve_url}/detect-trees", files=files, data={"realwidth": "50"}, timeout=120).json()
    assert body["parameters"]["real_width"] == 100.0
    assert body["warnings"] == [
        "ignored form field 'realwidth' (not a field of this route; did you mean 'real_width'?)"
    ]


def test_job_in_glb_and_cancel_answers_the_final_state(serve_url: str) -> None:
    files = {"image": ("tile.png", make_scene(600), "image/png")}
    form = {**LEGACY_FORM, "kind": "detect-and-generate", "model_format": "glb"}
    created = httpx.post(f"{serve_url}/jobs", files=files, data=form, timeout=60).json()
    job = wait_job(created["status_url"])
    assert job["state"] == "succeeded", job
    model = job["result"]["model"]
    assert model["filename"].endswith(".glb") and model["mtl_url"] is None
    assert httpx.get(model["download_url"], timeout=60).content[:4] == b"glTF"

    files = {"image": ("big.png", make_scene(3000), "image/png")}
    created = httpx.post(f"{serve_url}/jobs", files=files, data=LEGACY_FORM, timeout=60).json()
    cancelled = httpx.delete(f"{serve_url}/jobs/{created['id']}", timeout=60).json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    assert httpx.get(created["status_url"], timeout=10).json()["state"] == "cancelled"
