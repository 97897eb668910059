"""Memory-aware admission: each request's memory need, estimated before its work starts, is reserved against a
memory budget; what does not fit waits in a bounded first-in-first-out queue, or is refused with 503 and
Retry-After.

The estimate (`detect_need_bytes`, `generate_need_bytes`) adds up what one request makes the service hold at
its peak, in bytes, from figures measured with `benchmarks/admission_memory.py` (peak RSS of each stage in a
fresh process, serve_config.yaml's malloc settings; the table is in that script's docstring):

- the upload, held by the HTTP proxy and the Ingress for the whole request, and for the decode also as the
  TileSplitter's call argument (object store) and its copy: UPLOAD_HELD_COPIES + UPLOAD_DECODE_COPIES times;
- the decode (TileSplitter): the RGB image, the decoder's BGR array and the object-store copy, per image pixel;
- the detection: the image in the object store for the request's life, plus every tile's temporaries in the
  Detectors (per tile pixel, by method; heatmap per pixel of its working resolution), halos included;
- a scene (/generate-model): per tree, by format, inline or stored.

The decode and the detection do not overlap (the decoder's arrays are freed before the tiles start), so a
detection's need is the held upload plus the larger of the two. The detection term counts every tile as if all
ran at once: an upper bound (tiles beyond the Detector replicas' slots queue, and a Detector holds one tile's
temporaries per slot: memory per Detector is bounded by the tile, `tile_bytes`, not by the image).
Measured through a real Serve (summed PSS of the Ray processes, sampled every 0.2 s, so brief peaks are
missed), one request added 193 MB (16.8 MP, heatmap, 0.5 m; estimate 526 MB) and 326 MB (36 MP; estimate
1,053 MB); legacy 200 MB (16.8 MP; estimate 371 MB) and 389 MB (36 MP; estimate 722 MB): the estimate errs on
the safe side by 2-3x.

`Flows.detect` and `Flows.generate` (serve_app.orchestration) are wrapped with `admitted(detect_need)` and
`admitted(generate_need)`: the need is known from the image header and the upload size, or from the tree count
of the body, before any work starts, and a bad header is refused (400) before anything waits.

One `MemoryBudget` per admitting process (each Ingress replica; a job runner), built from the Settings: each
admits up to MEMORY_BUDGET_BYTES, so k admitting processes on one machine may hold k budgets at once (give
each the machine's share: total / k). The default is half of the memory of the machine or container the
process runs on (cgroup limit when set): the rest is Ray's and the replicas' own (baseline heaps, the
Detectors' network, the object store's other objects) and a margin under Ray's memory monitor (95 %).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from serve_app.errors import MemoryNeedTooLargeError, ServiceBusyError
from serve_app.formats import ModelFormat
from serve_app.settings import Settings
from treecore.heatmap import resampling
from treecore.imageio import check_image_size
from treecore.types import DetectionParams

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

MB = 1_000_000

#: Copies of the upload held for the whole request: the HTTP proxy's body and the Ingress's bytes.
UPLOAD_HELD_COPIES = 2
#: More copies while it is decoded: the TileSplitter's call argument (object store) and the splitter's own copy.
UPLOAD_DECODE_COPIES = 2
#: TileSplitter peak per image pixel, bytes: RGB image (3), the decoder's BGR array (3), object-store copy (3).
#: Measured: 6.0 B/px before the put (4096², 16.8 MP PNG).
DECODE_BYTES_PER_PIXEL = 9
#: The decoded (H, W, 3) uint8 image in the object store while the tiles run, bytes per pixel.
STORED_BYTES_PER_PIXEL = 3
#: Detector temporaries per tile pixel, bytes, by method (measured, warm replica, 9 MP tiles at 0.5 m:
#: legacy 9.2, watershed 31.8; the same at 0.1 m).
DETECT_BYTES_PER_PIXEL = {"legacy": 10, "watershed": 33}
#: heatmap: temporaries per pixel of its working resolution (treecore.heatmap: 0.1 m input is shrunk 4x, 1 m
#: enlarged 2x), bytes; measured 13.1 at 0.5 m (9 and 36 MP), 16.1 at 1.0 m (64.2 per input pixel).
HEATMAP_BYTES_PER_WORKING_PIXEL = 16
#: heatmap: reading and resampling the input window, bytes per input pixel (measured 1.7 at 0.1 m).
HEATMAP_BYTES_PER_INPUT_PIXEL = 2
#: Tiles overlap by their halos: tile pixels summed over the tiles, per image pixel (a bound for tiles of 1 MP
#: and more: a halo is tens of pixels).
HALO_ALLOWANCE = 1.15
#: Whatever does not grow with the image: the tree lists, the merge, the JSON answer, buffers, bytes.
REQUEST_FIXED_BYTES = 64 * MB
#: A scene per tree, bytes, by format, returned inline: the ModelAssembler's peak (measured on 20,000 trees:
#: OBJ 8.5 kB, zip 4.3 kB, GLB 0.24 kB) plus the answer's bytes in the Ingress and the proxy (OBJ 2.9 kB a tree).
INLINE_SCENE_BYTES_PER_TREE: dict[str, int] = {"obj": 15_000, "zip": 7_000, "glb": 1_000}
#: A stored scene per tree, bytes: parts are formatted and streamed to storage (88,000 trees: 114 MB peak).
STORED_SCENE_BYTES_PER_TREE = 2_000
#: The tree list itself per tree, bytes: treecore Trees in the Ingress, pickled to the assembler, its copy.
TREE_LIST_BYTES_PER_TREE = 1_000
#: The share of the machine's or container's memory that the admitted work may need, all processes together.
DEFAULT_BUDGET_FRACTION = 0.5
#: Processes that admit work, each with a budget of its own: serve_config.yaml runs two Ingress replicas and the
#: JobRunner. The default budget of each is its part of DEFAULT_BUDGET_FRACTION, so together they never promise
#: more than that share (set MEMORY_BUDGET_BYTES when the layout differs).
ADMITTING_PROCESSES = 3


def detect_need_bytes(width: int, height: int, upload_bytes: int, params: DetectionParams) -> int:
    """Memory a detection needs at its peak, summed over the processes it runs in.

    Args:
        width, height: the image's size from its header, pixels.
        upload_bytes: the uploaded file's size, bytes.
        params: the detection parameters (the method, and the real size for heatmap's working resolution).

    Returns:
        Bytes.
    """
    pixels = width * height
    held = UPLOAD_HELD_COPIES * upload_bytes
    decode = UPLOAD_DECODE_COPIES * upload_bytes + DECODE_BYTES_PER_PIXEL * pixels
    detect = STORED_BYTES_PER_PIXEL * pixels + math.ceil(HALO_ALLOWANCE * tile_bytes(pixels, (height, width), params))
    return held + max(decode, detect) + REQUEST_FIXED_BYTES


def tile_bytes(tile_pixels: int, shape: tuple[int, int], params: DetectionParams) -> int:
    """A Detector's temporaries for a tile, bytes: memory per Detector is bounded by the tile, not the image.

    Args:
        tile_pixels: the tile's pixels (halo included).
        shape: (H, W) of the whole image (with params: its metres per pixel).
        params: the method and the real size.

    Returns:
        Bytes.
    """
    if params.method != "heatmap":
        return DETECT_BYTES_PER_PIXEL.get(params.method, max(DETECT_BYTES_PER_PIXEL.values())) * tile_pixels
    rs = resampling(params, shape)
    working = tile_pixels * rs.up * rs.up / (rs.down * rs.down)
    return math.ceil(HEATMAP_BYTES_PER_WORKING_PIXEL * working + HEATMAP_BYTES_PER_INPUT_PIXEL * tile_pixels)


def generate_need_bytes(n_trees: int, fmt: ModelFormat, *, stored: bool) -> int:
    """Memory a scene of `n_trees` needs at its peak, bytes.

    Args:
        n_trees: trees in the scene.
        fmt: obj, zip or glb.
        stored: written to storage (streamed) rather than returned.

    Returns:
        Bytes.
    """
    per_tree = STORED_SCENE_BYTES_PER_TREE if stored else INLINE_SCENE_BYTES_PER_TREE.get(fmt, 15_000)
    return n_trees * (per_tree + TREE_LIST_BYTES_PER_TREE) + REQUEST_FIXED_BYTES


def detect_need(flows: Any, data: bytes, params: DetectionParams, *_: Any, **__: Any) -> tuple[int, str]:
    """The need of `Flows.detect(data, params, ...)`: (bytes, what), from the image header and the upload size.

    Raises:
        InvalidImageError: no readable header (400, before anything waits).
    """
    width, height = check_image_size(data, max_pixels=2**62)  # the pixel limit is checked by the flow itself
    return detect_need_bytes(width, height, len(data), params), f"a {width} x {height} image"


def generate_need(
    flows: Any, payload: Any, base_model: str, *_: Any, fmt: ModelFormat = "obj", store: bool = False, **__: Any
) -> tuple[int, str]:
    """The need of `Flows.generate(payload, ..., fmt=, store=)`: (bytes, what), from the tree count of the body.

    A body that is not a tree list, or has more trees than MAX_TREES_LIMIT, needs only the fixed part: the flow
    refuses it (4xx) at once.
    """
    settings: Settings = flows.settings
    items = payload.get("trees") if isinstance(payload, Mapping) else payload
    n = len(items) if isinstance(items, list) and len(items) <= settings.max_trees_limit else 0
    stored = store or (fmt != "glb" and n > settings.large_model_threshold)
    return generate_need_bytes(n, fmt, stored=stored), f"a scene of {n:,} trees"


def admitted(need: Callable[..., tuple[int, str]]) -> Callable[[F], F]:
    """Run an async method of an object with a `budget` (MemoryBudget) under that budget.

    Args:
        need: called with the method's arguments (self first) before it runs: (bytes, what).

    Returns:
        The decorator: the method first waits for its bytes (MemoryBudget.admit), holds them while it runs,
        and gives them back however it ends.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            needed, what = need(self, *args, **kwargs)
            budget: MemoryBudget = self.budget
            async with budget.admit(needed, what):
                return await method(self, *args, **kwargs)

        return cast(F, run)

    return wrap


def memory_limit_bytes() -> int:
    """The memory of this machine, or of its container when a cgroup limit is lower, bytes."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in _cgroup_limits():
        total = min(total, limit)
    return int(total)


def _cgroup_limits() -> list[int]:
    """The memory limits of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`), bytes."""
    found: list[int] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: the unified hierarchy
            candidates = [Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max", Path("/sys/fs/cgroup/memory.max")]
        elif "memory" in controllers.split(","):
            root = Path("/sys/fs/cgroup/memory")
            candidates = [root / path.lstrip("/") / "memory.limit_in_bytes", root / "memory.limit_in_bytes"]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:  # "max" and v1's 2**63-ish mean "no limit"
                found.append(int(text))
    return found


def default_budget_bytes() -> int:
    """One admitting process's part of DEFAULT_BUDGET_FRACTION of memory_limit_bytes(), bytes."""
    return int(memory_limit_bytes() * DEFAULT_BUDGET_FRACTION / ADMITTING_PROCESSES)


@dataclass
class _Waiter:
    need: int
    granted: asyncio.Future[None] = field(repr=False)


class MemoryBudget:
    """A budget of bytes; `admit(need)` holds `need` of it for a block of work, first come first served.

    A request that fits while nobody waits runs at once. Otherwise it waits its turn in a queue of at most
    `queue_length` requests, for at most `max_wait_s`; the head of the queue is served as soon as it fits, and
    no later request passes it (a large request is not starved by small ones). One event loop only.
    """

    def __init__(
        self,
        total_bytes: int,
        *,
        queue_length: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A budget.

        Args:
            total_bytes: the budget, bytes.
            queue_length: most requests waiting at once (0: no waiting).
            max_wait_s: longest wait, seconds (0: no waiting).
            clock: seconds, monotonic (the hold times behind Retry-After).
        """
        self.total, self.queue_length, self.max_wait_s, self.clock = total_bytes, queue_length, max_wait_s, clock
        self.in_use = 0
        self._queue: deque[_Waiter] = deque()
        self._hold_s = 2.0  # a running average of how long work holds its share, seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryBudget:
        """This process's budget: MEMORY_BUDGET_BYTES (0: default_budget_bytes()), ADMISSION_QUEUE_LENGTH,
        ADMISSION_WAIT_S."""
        total = settings.memory_budget_bytes or default_budget_bytes()
        return cls(total, queue_length=settings.admission_queue_length, max_wait_s=settings.admission_wait_s)

    @property
    def waiting(self) -> int:
        """Requests in the queue now."""
        return len(self._queue)

    def retry_after_s(self) -> int:
        """Seconds until a refused request might fit: about one running hold, at least 1."""
        return max(1, math.ceil(self._hold_s))

    @asynccontextmanager
    async def admit(self, need: int, what: str) -> AsyncIterator[None]:
        """Hold `need` bytes of the budget while the block runs; released however it ends (error, cancel).

        Args:
            need: bytes (an estimate: detect_need_bytes, generate_need_bytes).
            what: the work, for messages ("a 6000 x 6000 image").

        Raises:
            MemoryNeedTooLargeError: need is more than the whole budget (413: it could never run).
            ServiceBusyError: the queue is full or the wait ran out (503 with Retry-After).
        """
        await self.acquire(need, what)
        started = self.clock()
        try:
            yield
        finally:
            self._hold_s = 0.8 * self._hold_s + 0.2 * (self.clock() - started)
            self.release(need)

    async def acquire(self, need: int, what: str) -> None:
        """Take `need` bytes, waiting in turn (see admit); the caller must `release(need)` later."""
        if need > self.total:
            raise MemoryNeedTooLargeError(
                f"{what} needs about {need / MB:,.0f} MB of memory, more than the whole memory budget of "
                f"{self.total / MB:,.0f} MB (MEMORY_BUDGET_BYTES): send a smaller image or fewer trees"
            )
        if not self._queue and self.in_use + need <= self.total:
            self.in_use += need
            return
        if len(self._queue) >= self.queue_length or self.max_wait_s <= 0:
            raise self._busy(what, "and no more requests may wait")
        waiter = _Waiter(need, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            await asyncio.wait([waiter.granted], timeout=self.max_wait_s)
        except asyncio.CancelledError:
            if waiter.granted.done():  # granted just as it was cancelled: give it back
                self.release(need)
            else:
                self._leave(waiter)
            raise
        if not waiter.granted.done():
            self._leave(waiter)
            raise self._busy(what, f"and this request waited {self.max_wait_s:g} s")

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gives up its place; the next ones may fit now (a large head may have been blocking them)."""
        waiter.granted.cancel()
        self._queue.remove(waiter)
        self._grant()

    def release(self, need: int) -> None:
        """Give back `need` bytes and let waiting requests in, in order."""
        self.in_use -= need
        self._grant()

    def _grant(self) -> None:
        while self._queue and self.in_use + self._queue[0].need <= self.total:
            waiter = self._queue.popleft()
            self.in_use += waiter.need
            waiter.granted.set_result(None)

    def _busy(self, what: str, why: str) -> ServiceBusyError:
        return ServiceBusyError(
            f"the service's memory is taken by other requests ({self.in_use / MB:,.0f} of {self.total / MB:,.0f} "
            f"MB, {len(self._queue)} waiting) {why}: {what} did not start; try again in a few seconds",
            retry_after_s=self.retry_after_s(),
        )
