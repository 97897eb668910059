"""The architecture as docs/architecture.md states it: the import rules, no import cycle, short functions, and every
module and name the page lists exists."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("treecore", "serve_app")
#: The storage adapters: one row of the page, whatever their modules (serve_app.storage and its submodules).
STORAGE = "serve_app.storage"
#: Longest function in serve_app, lines (docstring included).
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, classes or `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])
    return found


def imports_of(module: str) -> set[str]:
    """What `module` imports at import time: our modules by full name, other packages by top-level name."""
    names: set[str] = set()
    for node in _module_level_imports(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.module and node.level == 0 and node.module != "__future__":
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            names.update(submodules or {node.module})
            if len(submodules) < len(node.names):
                names.add(node.module)  # names other than submodules come from the module itself
    return {name if name.split(".")[0] in PACKAGES else name.split(".")[0] for name in names}


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


#: (modules the rule is about, the imports they must not have), as the table of docs/architecture.md says.
FORBIDDEN = [
    (("treecore",), ("serve_app", "ray", "fastapi", "starlette", "pydantic", "pydantic_settings", "azure")),
    (
        ("serve_app.api",),
        (
            "ray",
            "azure",
            "serve_app.deployments",
            "serve_app.serve_stages",
            "serve_app.builder",
            "serve_app.assembly",
            "serve_app.storage",
        ),
    ),
    (("serve_app.orchestration",), ("fastapi", "starlette", "ray", "serve_app.api", "serve_app.deployments")),
    (
        (
            "serve_app.stages",
            "serve_app.catalog",
            "serve_app.assembly",
            "serve_app.bounds",
            "serve_app.formats",
            "serve_app.progress",
            "serve_app.settings",
            "serve_app.jobs",
        ),
        ("fastapi", "starlette", "ray", "serve_app.api", "serve_app.deployments", "serve_app.serve_stages"),
    ),
    (("serve_app.serve_stages",), ("serve_app.api", "serve_app.deployments", "serve_app.builder")),
]
#: Only these modules import ray at import time (serve_app.metrics does, lazily, inside RayMetrics).
RAY_IMPORTERS = {"serve_app.deployments", "serve_app.serve_stages", "serve_app.builder", "serve_app.job_runner"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_import_rules(module: str) -> None:
    imported = imports_of(module)
    for owners, forbidden in FORBIDDEN:
        if _matches(module, owners):
            bad = sorted(name for name in imported if _matches(name, forbidden))
            assert not bad, f"{module} imports {bad}"
    if module not in RAY_IMPORTERS:
        assert "ray" not in imported, f"{module} imports ray"
    if module != "serve_app.builder":
        assert "serve_app.deployments" not in imported, f"{module} imports serve_app.deployments"


def test_no_import_cycle() -> None:
    graph = {module: sorted(imports_of(module) & MODULES.keys()) for module in MODULES}
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        state[module] = "open"
        for imported in graph[module]:
            visit(imported, [*path, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_the_rules_see_real_imports() -> None:
    # The walker itself: it finds what these modules really import (else every rule above passes vacuously).
    assert {"serve_app.api", "serve_app.serve_stages", "ray"} <= imports_of("serve_app.deployments")
    assert "serve_app.orchestration" in imports_of("serve_app.api.context")
    assert {"serve_app.api.detect", "serve_app.api.jobs"} <= imports_of("serve_app.api.app")
    assert {"serve_app.storage.local", "serve_app.storage.azure"} <= imports_of("serve_app.storage")
    assert "serve_app.storage" not in imports_of("serve_app.storage.azure")  # the adapters import only the types


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("serve_app")))
def test_no_long_functions(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: {long}"


def _documented_names() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return sorted(set(re.findall(r"`((?:serve_app|treecore)(?:\.\w+)*)`", text)))


def test_the_architecture_page_names_real_modules_and_functions() -> None:
    names = _documented_names()
    assert len(names) > 40  # the page lists the hops; the regex finds them
    missing = []
    for name in names:
        parts = name.split(".")
        # The longest prefix that is a module, then attributes (class, function, method) below it.
        for cut in range(len(parts), 0, -1):
            if ".".join(parts[:cut]) in MODULES:
                break
        target: object = importlib.import_module(".".join(parts[:cut]))
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                missing.append(name)
                break
            target = getattr(target, attribute)
            target = getattr(target, "func_or_class", target)  # a Serve deployment: the class it wraps
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"


def test_every_serve_app_module_is_on_the_architecture_page() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    unlisted = [
        m
        for m in MODULES
        if m.startswith("serve_app.")
        and not m.startswith(STORAGE)
        and f"`{m}" not in text
        and f"`{m.rpartition('.')[2]}`" not in text
    ]
    assert not unlisted, f"modules docs/architecture.md does not mention: {unlisted}"


def test_settings_are_read_in_build_app_only() -> None:
    # Settings read once, bound into every deployment: no other module reads the environment.
    readers = sorted(
        module
        for module, path in MODULES.items()
        if module.startswith("serve_app")
        and module not in ("serve_app.settings", "serve_app.builder")
        and any(word in path.read_text() for word in ("from_env(", "os.environ", "os.getenv"))
    )
    assert readers == []
    assert "Settings.from_env()" in MODULES["serve_app.builder"].read_text()
