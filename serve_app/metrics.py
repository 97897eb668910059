"""Service metrics: requests by route and status, trees, tiles, per-stage latency.

On Ray Serve they are Ray custom metrics (exported with Ray's Prometheus metrics, prefixed `ray_`);
`Metrics` without Ray only counts in memory (unit tests, and GET / shows the totals either way).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

#: Latency buckets, seconds: from a small tile to an 88,000-tree scene.
LATENCY_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class Metrics:
    """In-memory counters; `RayMetrics` also exports them."""

    def __init__(self) -> None:
        """Empty counters."""
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.trees_total = 0
        self.tiles_total = 0
        self.retries_total = 0

    def request(self, route: str, status: int) -> None:
        """Count one HTTP request.

        Args:
            route: the route template, e.g. "/jobs/{job_id}" (not the raw path: bounded label values).
            status: the response status.
        """
        with self._lock:
            self.requests[(route, status)] += 1

    def detected(self, tiles: int, trees: int) -> None:
        """Count one finished detection.

        Args:
            tiles: tiles it was cut into.
            trees: trees found after the merge.
        """
        with self._lock:
            self.tiles_total += tiles
            self.trees_total += trees

    def retried(self, what: str) -> None:
        """Count one call retried because its replica stopped.

        Args:
            what: the stage, e.g. "detect".
        """
        with self._lock:
            self.retries_total += 1

    def stage(self, stage: str, seconds: float) -> None:
        """Record one stage's latency.

        Args:
            stage: e.g. "decode", "detect", "merge", "total", "generate".
            seconds: wall time.
        """

    def snapshot(self) -> dict[str, Any]:
        """Totals, JSON-ready."""
        with self._lock:
            return {
                "requests": sum(self.requests.values()),
                "trees_detected": self.trees_total,
                "tiles": self.tiles_total,
                "replica_retries": self.retries_total,
            }


class RayMetrics(Metrics):
    """Counters exported through `ray.serve.metrics` (only inside a Serve replica)."""

    def __init__(self) -> None:
        """Create the Ray metrics."""
        super().__init__()
        from ray.serve import metrics as serve_metrics

        self._requests = serve_metrics.Counter(
            "tree_http_requests",
            description="HTTP requests by route and status.",
            tag_keys=("route", "status"),  # type: ignore[arg-type]  # Ray's stub says tuple[str]
        )
        self._trees = serve_metrics.Counter("tree_trees_detected", description="Trees detected (after the merge).")
        self._tiles = serve_metrics.Counter("tree_tiles", description="Tiles sent to Detector replicas.")
        self._retries = serve_metrics.Counter(
            "tree_replica_retries", description="Calls retried because their replica stopped.", tag_keys=("stage",)
        )
        self._latency = serve_metrics.Histogram(
            "tree_stage_latency_s",
            description="Wall time per pipeline stage, seconds.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("stage",),
        )

    def request(self, route: str, status: int) -> None:
        """Count one HTTP request (see Metrics.request)."""
        super().request(route, status)
        self._requests.inc(tags={"route": route, "status": str(status)})

    def detected(self, tiles: int, trees: int) -> None:
        """Count one detection (see Metrics.detected)."""
        super().detected(tiles, trees)
        self._tiles.inc(tiles)
        if trees:
            self._trees.inc(trees)

    def retried(self, what: str) -> None:
        """Count one retry (see Metrics.retried)."""
        super().retried(what)
        self._retries.inc(tags={"stage": what})

    def stage(self, stage: str, seconds: float) -> None:
        """Record one stage's latency (see Metrics.stage)."""
        self._latency.observe(seconds, tags={"stage": stage})
