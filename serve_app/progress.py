"""How far one request or job has come: written by the orchestration, read by GET /jobs/{id}."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Progress:
    """Stage, tiles done of tiles total, and trees found so far."""

    stage: str = "queued"
    tiles_done: int = 0
    tiles_total: int = 0
    trees_so_far: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)
