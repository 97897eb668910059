"""The storage package: its public names, and imports that point one way (no cycle, no lazy __getattr__)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import serve_app.storage as storage

PACKAGE = Path(storage.__file__).parent
ROOT = PACKAGE.parents[1]
#: Each module of the package, and the package modules it may import.
ALLOWED = {
    "__init__": {"serve_app.storage.types", "serve_app.storage.local", "serve_app.storage.azure"},
    "local": {"serve_app.storage.types"},
    "azure": {"serve_app.storage.types"},
    "types": set(),
}


def test_public_names() -> None:
    assert sorted(storage.__all__) == storage.__all__
    assert set(storage.__all__) == {
        "CLOCK_SKEW_S", "DELEGATION_KEY_LIFETIME_S", "DOWNLOAD_ROUTE", "MAX_BASE_MODEL_BYTES", "MAX_BLOCK_BYTES",
        "MAX_LISTED_BLOBS", "MIN_BLOCK_BYTES", "RENEW_BEFORE_S", "SAS_LIFETIME_S", "STALE_TEMP_S", "AzureModelStore",
        "BlobModels", "Download", "LocalModelStore", "ModelStore", "ModelTooLargeError", "NotStoredError",
        "StorageError", "StorageSettings", "StoredModel", "blob_models", "check_name", "make_store", "storage_error",
    }  # fmt: skip
    for name in storage.__all__:
        assert getattr(storage, name) is not None, name


def _package_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names] if module == "serve_app" else [module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n == "serve_app.storage" or n.startswith("serve_app.storage.")}
    return found


def test_imports_point_one_way() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(ALLOWED)
    for stem, allowed in ALLOWED.items():
        path = PACKAGE / f"{stem}.py"
        assert _package_imports(path) <= allowed, stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert "__getattr__" not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, stem
    assert not (ROOT / "serve_app" / "storage.py").exists() and not (ROOT / "serve_app" / "storage_azure.py").exists()


@pytest.mark.parametrize("module", ["serve_app.storage.azure", "serve_app.storage.local", "serve_app.storage.types"])
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    code = f"import {module}, serve_app.storage as s; assert s.make_store and s.AzureModelStore and s.LocalModelStore"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    from serve_app.settings import Settings

    local: storage.ModelStore = storage.LocalModelStore(tmp_path, "/download")
    azure: storage.ModelStore = storage.make_store(Settings(azure_account_url="https://account.blob.core.example"))
    for store in (local, azure):
        for method in ("save", "delete", "open_download", "describe"):
            assert callable(getattr(store, method)), (store, method)
