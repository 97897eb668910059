"""scripts/render_serve_config.py embeds serve_config.yaml text unchanged as RayService serveConfigV2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts import render_serve_config as rsc

pytestmark = pytest.mark.k8s

TRICKY = (
    "# comment kept\n"
    "applications:\n"
    "  - name: a  # trailing comment\n"
    "    import_path: serve_app.builder:build_app\n"
    "\n"
    "    args: {quote: \"it's: |\", empty: ''}\n"
    "\n\n"
)


def test_patch_carries_exact_text() -> None:
    doc = yaml.safe_load(rsc.render_patch(TRICKY))
    assert doc["kind"] == "RayService" and doc["metadata"]["name"] == rsc.RAYSERVICE_NAME
    assert doc["spec"]["serveConfigV2"] == TRICKY.rstrip("\n") + "\n" == rsc.expected_serve_config_v2(TRICKY)


def test_leading_whitespace_is_refused() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        rsc.render_patch("  applications: []\n")


def test_check_mode_detects_stale_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve_config.yaml"
    config.write_text("applications:\n  - import_path: a.b:c\n", encoding="utf-8")
    monkeypatch.setattr(rsc, "PATCH", tmp_path / "patch.yaml")
    monkeypatch.setattr(rsc, "ROOT", tmp_path)
    assert rsc.main(["--config", str(config), "--check"]) == 1
    assert rsc.main(["--config", str(config)]) == 0
    assert rsc.main(["--config", str(config), "--check"]) == 0
    config.write_text("applications:\n  - import_path: a.b:d\n", encoding="utf-8")
    assert rsc.main(["--config", str(config), "--check"]) == 1
