"""The README's examples, run: every block marked `<!-- example: NAME -->` runs (in README order, in one scratch
folder, against the service as `make run` starts it), and the ```json block right after it is what it answers.

A marked block is a ```bash block; `<!-- example: NAME output=FILE -->` shows FILE's content instead of the
block's standard output. In a shown answer:

- a string with "…" matches any text in its place ("trees_130_…​.glb");
- a list ending in "…" may go on (its first items are compared); a "…": "…" member lets an object have more;
- every other key must be there with the same type, and the same value unless its path is VOLATILE (timings).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Where the README's commands send their requests (`make run`).
SHOWN_URL = "http://127.0.0.1:8000"
#: "Any value here".
ANY = "…"
#: Paths (dotted, lists as [i]) whose values vary from run to run: their type is compared, not their value.
VOLATILE = ("timings.*", "*.timings.*", "created_at", "finished_at", "expires_at", "*.expires_at", "version")
#: Each block runs with these first: stop at the first failing command, and curl fails on an HTTP error.
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'

_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+)(?: output=(?P<output>\S+))? -->\s*\n```bash\n(?P<command>.*?)\n```"
    r"(?:\s*\n```json\n(?P<answer>.*?)\n```)?",
    re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    """One marked block of the README and the answer it shows (None: it shows none)."""

    name: str
    command: str
    answer: Any
    output: str | None


def readme_examples(text: str) -> list[Example]:
    """The marked examples of a README, in order."""
    found = []
    for match in _EXAMPLE.finditer(text):
        answer = match["answer"]
        found.append(
            Example(match["name"], match["command"], None if answer is None else json.loads(answer), match["output"])
        )
    return found


def _glob(shown: str, actual: str) -> bool:
    return re.fullmatch(".*?".join(re.escape(part) for part in shown.split(ANY)), actual, re.DOTALL) is not None


def differences(shown: Any, actual: Any, path: str = "") -> list[str]:
    """Where an actual answer differs from the shown one (see the module docstring), as "path: what" lines."""
    where = path or "(answer)"
    if isinstance(shown, str) and ANY in shown:
        return [] if isinstance(actual, str) and _glob(shown, actual) else [f"{where}: {actual!r} is not {shown!r}"]
    if type(shown) is not type(actual):
        return [f"{where}: {type(actual).__name__} {actual!r}, shown as {type(shown).__name__} {shown!r}"]
    if isinstance(shown, dict):
        out = []
        for key, value in shown.items():
            if key == ANY:
                continue
            if key not in actual:
                out.append(f"{where}: no {key!r}")
            else:
                out += differences(value, actual[key], f"{path}.{key}" if path else key)
        if ANY not in shown and set(actual) - set(shown):
            out.append(f"{where}: {sorted(set(actual) - set(shown))} not shown")
        return out
    if isinstance(shown, list):
        more = bool(shown) and shown[-1] == ANY
        items = shown[:-1] if more else shown
        if len(actual) < len(items) or (not more and len(actual) != len(items)):
            return [f"{where}: {len(actual)} items, shown {len(items)}{' or more' if more else ''}"]
        return [d for i, value in enumerate(items) for d in differences(value, actual[i], f"{path}[{i}]")]
    if shown != actual and not any(fnmatch.fnmatchcase(path, pattern) for pattern in VOLATILE):
        return [f"{where}: {actual!r}, shown {shown!r}"]
    return []


EXAMPLES = readme_examples(README.read_text())


def test_the_readme_marks_its_examples() -> None:
    names = [example.name for example in EXAMPLES]
    assert len(names) == len(set(names)) and len(names) >= 8, names
    assert sum(example.answer is not None for example in EXAMPLES) >= 5
    assert differences({"a": [1, ANY], "b": "x…z", ANY: ANY}, {"a": [1, 2], "b": "xyz", "c": 0}) == []
    assert differences({"a": 1, "t": {"s": 0.1}}, {"a": 1.0, "t": {"s": 0.2}, "b": 2}) == [
        "a: float 1.0, shown as int 1",
        "t.s: 0.2, shown 0.1",
        "(answer): ['b'] not shown",
    ]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the examples run in: the repo's .venv and scripts reachable as from the repo's root."""
    folder = tmp_path_factory.mktemp("readme")
    for name in (".venv", "scripts"):
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_readme_example(example: Example, readme_url: str, scratch: Path) -> None:
    if "curl " in example.command:
        assert shutil.which("curl"), "the README's examples need curl (apt-get install curl)"
    command = example.command.replace(SHOWN_URL, readme_url)
    done = subprocess.run(
        ["bash", "-c", PRELUDE + command],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    if example.answer is None:
        return
    text = (scratch / example.output).read_text() if example.output else done.stdout
    actual = json.loads(text.replace(readme_url, SHOWN_URL))
    found = differences(example.answer, actual)
    assert not found, "\n".join([f"README example {example.name!r} differs:", *found, json.dumps(actual)[:3000]])
