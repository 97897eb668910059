"""CORS with the API key, and the offline API docs (the clean Ctrl-C of `make run`: tests/test_run_local.py).

In-process (TestClient): preflights from an allowed and a refused origin, with and without a key; the headers a
cross-origin page may read; the docs pages, which reference only their own files. Against the real Serve (marked
serve): Chromium loads a page from another origin that calls the `/secured` app with fetch(), and the docs render
with every other origin blocked.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.api.app import CORS_EXPOSE_HEADERS
from serve_app.api.docs import CONTENT_SECURITY_POLICY, SECURITY_SCHEMES
from tests.serve_app.conftest import API_KEY, LEGACY_FORM, local_client
from tests.serve_app.test_ui_browser import ARTIFACTS, ROOT
from tests.serve_app.test_ui_browser import chromium as chromium  # the browser fixtures, shared
from tests.serve_app.test_ui_browser import node as node

PLANNER = "https://planner.example"
OTHER = "https://evil.example"


def _preflight(origin: str, headers: str = "x-api-key", method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


@pytest.fixture
def cors_secured(tmp_path: Path) -> Iterator[TestClient]:
    """The app with an API key and CORS for PLANNER, as with API_KEY=... CORS_ORIGINS=https://planner.example."""
    with local_client(tmp_path, api_key=API_KEY, cors_origins=(PLANNER,), large_model_threshold=50) as client:
        yield client


@pytest.mark.parametrize("headers", ["x-api-key", "authorization", "content-type", "x-api-key, content-type"])
def test_preflight_passes_before_the_key(cors_secured: TestClient, headers: str) -> None:
    response = cors_secured.options("/detect-trees", headers=_preflight(PLANNER, headers))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == PLANNER
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in headers.split(",")} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers  # the key is a header, never a cookie


def test_preflight_without_a_key_too(tmp_path: Path) -> None:
    # CORS_ORIGINS alone: the key header is allowed all the same (a proxy in front may want it).
    with local_client(tmp_path, cors_origins=(PLANNER,)) as client:
        response = client.options("/detect-trees", headers=_preflight(PLANNER, "x-api-key"))
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == PLANNER


def test_refused_origin_gets_no_allow_origin(cors_secured: TestClient) -> None:
    preflight = cors_secured.options("/detect-trees", headers=_preflight(OTHER))
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    simple = cors_secured.get("/", headers={"Origin": OTHER, "X-API-Key": API_KEY})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_cors_is_off_without_origins(tmp_path: Path) -> None:
    with local_client(tmp_path, api_key=API_KEY) as client:
        response = client.options("/detect-trees", headers=_preflight(PLANNER))
    assert response.status_code == 401 and "access-control-allow-origin" not in response.headers


def test_a_401_is_readable_by_the_allowed_origin(cors_secured: TestClient) -> None:
    response = cors_secured.get("/", headers={"Origin": PLANNER})
    assert response.status_code == 401 and response.headers["access-control-allow-origin"] == PLANNER
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("auth", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}])
def test_actual_request_exposes_the_documented_headers(
    cors_secured: TestClient, scene_png: bytes, auth: dict[str, str]
) -> None:
    detection = cors_secured.post(
        "/detect-trees",
        files={"image": ("t.png", scene_png, "image/png")},
        data={**LEGACY_FORM, "real_width": "50", "real_height": "50"},
        headers={"Origin": PLANNER, **auth},
    )
    assert detection.status_code == 200, detection.text
    assert detection.headers["access-control-allow-origin"] == PLANNER
    trees = {**detection.json(), "trees": detection.json()["trees"][:3]}
    model = cors_secured.post("/generate-model", json=trees, headers={"Origin": PLANNER, **auth})
    assert model.status_code == 200 and "x-mtl-url" in model.headers
    exposed = {h.strip().lower() for h in model.headers["access-control-expose-headers"].split(",")}
    assert {h.lower() for h in CORS_EXPOSE_HEADERS} <= exposed
    assert {"x-mtl-url", "content-disposition", "retry-after", "x-total-trees"} <= exposed


#: A URL in an HTML attribute or a script string (src, href, url: "..."); the docs pages must name only their own.
_URL = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")


@pytest.mark.parametrize("root", ["", "/secured"])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_only_their_own_files(tmp_path: Path, page: str, root: str) -> None:
    with local_client(tmp_path, api_key=API_KEY) as client:
        client.app.root_path = root  # type: ignore[attr-defined]  # as under Serve's route_prefix
        html = client.get(root + page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert html.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page == "/redoc" or '"validatorUrl": null' in html.text  # no badge from the online validator
        urls = _URL.findall(html.text)
        assert urls and all(u.startswith(f"{root}/") and "//" not in u for u in urls), urls
        for url in urls:
            response = client.get(url)  # the path carries the root_path, as Serve sends it
            assert response.status_code == 200, url
            if url.endswith(".js"):
                assert "javascript" in response.headers["content-type"] and len(response.content) > 100_000
            elif url.endswith(".css"):
                assert response.headers["content-type"].startswith("text/css")
        assert any(u.endswith("/openapi.json") for u in urls)


def test_docs_are_open_with_a_key_and_declare_it(tmp_path: Path) -> None:
    with local_client(tmp_path, api_key=API_KEY) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/docs-assets/swagger-ui.css"):
            assert client.get(path).status_code == 200, path
        assert client.get("/docs-assets/../tree-models").status_code != 200
        assert client.get("/tree-models").status_code == 401
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == SECURITY_SCHEMES
    assert SECURITY_SCHEMES["ApiKey"] == {**SECURITY_SCHEMES["ApiKey"], "in": "header", "name": "X-API-Key"}
    assert schema["paths"]["/detect-trees"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_schema_declares_no_key_without_one(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert client.get("/docs").status_code == client.get("/redoc").status_code == 200


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        """Log nothing (the test reports what the browser saw)."""


@contextmanager
def _site(directory: Path, port: int = 0) -> Iterator[str]:
    """A static HTTP server of `directory` on 127.0.0.1 (another origin than the service's); its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.serve
def test_another_origin_calls_the_secured_api_in_a_real_browser(
    serve_url: str, cross_origin: str, chromium: str, node: str, tmp_path: Path, scene_png: bytes
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>planner</title><p>another origin</p>")
    (site / "tile.png").write_bytes(scene_png)
    port = int(cross_origin.rsplit(":", 1)[1])
    with _site(site, port) as allowed, _site(site) as refused:
        assert allowed == cross_origin and refused != allowed
        config = {
            "chromium": chromium,
            "api": f"{serve_url}/secured",
            "api_key": API_KEY,
            "allowed_page": f"{allowed}/index.html",
            "refused_page": f"{refused}/index.html",
            "real_size_m": 102.4,  # make_scene draws at 10 cm per pixel
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        run = subprocess.run(
            [
                node,
                str(ROOT / "tests" / "tools" / "cors_check.mjs"),
                str(tmp_path / "config.json"),
                str(tmp_path / "r.json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    report = json.loads((tmp_path / "r.json").read_text()) if (tmp_path / "r.json").exists() else {}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cors-report.json").write_text(json.dumps(report, indent=2))
    assert run.returncode == 0, f"{run.stderr[-4000:]}\n{json.dumps(report)[:4000]}"

    # With the key (either header) the page reads the detection and the model's exposed headers.
    for name in ("allowed_with_key", "allowed_with_bearer"):
        called = report[name]
        assert "error" not in called, called
        assert called["detect"]["status"] == 200 and called["detect"]["body"]["total_trees"] > 20, name
        model = called["model"]
        assert model["status"] == 200 and model["bytes"] > 0, model
        assert model["mtl"] == f"{serve_url}/secured/tree-models/tree_lowpoly.mtl", model
        assert model["disposition"].startswith("attachment") and model["total"] == "3", model
    # Without it the 401 itself is readable (Access-Control-Allow-Origin on the error too), with its detail.
    refused_key = report["allowed_without_key"]
    assert refused_key["detect"]["status"] == 401 and "API key" in refused_key["detect"]["body"]["detail"]
    assert "model" not in refused_key
    # From an origin not in CORS_ORIGINS the browser blocks the call, key or not: fetch() throws.
    blocked = report["refused_with_key"]
    assert blocked.get("error", "").startswith("TypeError") and "detect" not in blocked, blocked

    # The docs render with every request outside this machine refused, and Swagger's "Try it out" sends the key.
    assert report["outside_requests"] == []
    assert report["swagger"]["title"].startswith("Tree detection")
    assert report["swagger"]["try_it_out_status"] == "200", report["swagger"]
    assert f"X-API-Key: {API_KEY}" in report["swagger"]["sent_key"], report["swagger"]
    assert "Tree detection" in report["redoc"]["title"]
