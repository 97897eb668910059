"""Model assembly: OBJ parts formatted in parallel threads, concatenated in order, returned or stored."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from serve_app.catalog import REMOTE_TTL_S, Catalog, RemoteModels
from serve_app.formats import GLB_MEDIA_TYPE, MTL_MEDIA_TYPE, OBJ_MEDIA_TYPE, ZIP_MEDIA_TYPE, InlineModel, ModelFormat
from serve_app.storage import ModelStore, StoredModel
from treecore.basemodels import DEFAULT_MODELS_DIR, check_model_name
from treecore.gltf import write_glb
from treecore.mesh import Mesh
from treecore.objwriter import TREES_PER_PART, format_obj_part, obj_header
from treecore.types import Tree

T = TypeVar("T")
R = TypeVar("R")


class _Collector(io.RawIOBase):
    """An unseekable sink that zipfile writes into; the written bytes are taken out as they come."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def zip_parts(members: list[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """A zip archive of streamed members, produced as byte parts (memory stays at one part).

    Args:
        members: (file name in the archive, its byte parts).

    Yields:
        The archive's bytes, in order.
    """
    sink = _Collector()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for member, parts in members:
            with archive.open(member, "w", force_zip64=True) as entry:
                for part in parts:
                    entry.write(part)
                    yield sink.take()
    yield sink.take()


def ordered_parallel(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """fn over items in `workers` threads, yielded in input order, at most 2 x workers results held.

    Args:
        fn: the work (numpy-heavy work releases the GIL, so threads overlap).
        items: inputs.
        workers: threads.

    Yields:
        fn(item) for each item, in order.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="obj-part") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class ModelBuilder:
    """Makes merged scenes from the base model catalogue and hands large ones to a store."""

    def __init__(
        self,
        store: ModelStore,
        *,
        models_dir: Path = DEFAULT_MODELS_DIR,
        workers: int = 2,
        trees_per_part: int = 0,
        remote_models: RemoteModels | None = None,
        remote_ttl_s: float = REMOTE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A builder.

        Args:
            store: where stored scenes go.
            models_dir: folder of packaged base models (<name>.obj + <name>.mtl).
            workers: threads formatting parts.
            trees_per_part: trees per part (0: treecore's default).
            remote_models: where to look for a base model that is not in models_dir (the tree-models container).
            remote_ttl_s: remote listings and models are read again after this many seconds (see Catalog).
            clock: monotonic seconds (tests move it).
        """
        self.store = store
        self.catalog = Catalog(models_dir, remote_models, remote_ttl_s=remote_ttl_s, clock=clock)
        self.workers = workers
        self.trees_per_part = trees_per_part or TREES_PER_PART

    def parts(self, trees: list[Tree], mesh: Mesh, *, mtl_name: str) -> Iterator[bytes]:
        """The scene as ordered byte parts: header, then ranges of trees formatted in parallel.

        Args:
            trees: the trees, in scene order.
            mesh: the base mesh.
            mtl_name: the MTL file the OBJ names.

        Yields:
            Bytes to concatenate in order.
        """
        yield obj_header(mesh, mtl_name=mtl_name)
        step = self.trees_per_part
        starts = range(0, len(trees), step)
        yield from ordered_parallel(
            lambda s: format_obj_part(trees[s : s + step], mesh, first_index=s), starts, workers=self.workers
        )

    def build(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: ModelFormat = "obj"
    ) -> InlineModel | StoredModel:
        """One scene: inline bytes, or stored as `<name>.obj` + `<name>.mtl` (or `<name>.zip`).

        Args:
            trees: the trees.
            base_model: base model name.
            store: store it instead of returning the bytes (the caller decides: large OBJ and zip scenes, and
                every scene of a job; /generate-model returns a GLB whatever its size, about 40 bytes per tree).
            name: file stem (letters, digits, '_').
            fmt: "obj" (OBJ, MTL separate), "zip" (OBJ and MTL in one archive) or "glb" (binary glTF).

        Returns:
            InlineModel, or the StoredModel of the OBJ (its MTL in `companions`), zip or GLB.
        """
        mesh, mtl_text = self.catalog.lookup(base_model)
        if fmt == "glb":
            glb = write_glb(trees, mesh, mtl_text=mtl_text)
            if not store:
                return InlineModel(f"{name}.glb", glb, "", len(trees), GLB_MEDIA_TYPE)
            return self.store.save(f"{name}.glb", [glb], content_type=GLB_MEDIA_TYPE)
        if fmt == "zip":
            members = [
                (f"{name}.obj", self.parts(trees, mesh, mtl_name=f"{name}.mtl")),
                (f"{name}.mtl", [mtl_text.encode()]),
            ]
            if not store:
                return InlineModel(f"{name}.zip", b"".join(zip_parts(members)), "", len(trees), ZIP_MEDIA_TYPE)
            return self.store.save(f"{name}.zip", zip_parts(members), content_type=ZIP_MEDIA_TYPE)
        if not store:
            mtl_name = f"{check_model_name(base_model)}.mtl"
            data = b"".join(self.parts(trees, mesh, mtl_name=mtl_name))
            return InlineModel(f"{name}.obj", data, mtl_name, len(trees))
        # The OBJ first: it is the large, failure-prone one, and a failure there leaves nothing at all. Should
        # the small MTL then fail, the OBJ is removed again, so no scene is left without its materials.
        stored = self.store.save(
            f"{name}.obj", self.parts(trees, mesh, mtl_name=f"{name}.mtl"), content_type=OBJ_MEDIA_TYPE
        )
        try:
            mtl = self.store.save(f"{name}.mtl", [mtl_text.encode()], content_type=MTL_MEDIA_TYPE)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the MTL's own error is the one to report
                self.store.delete(stored.name)
            raise
        return dataclasses.replace(stored, companions=(mtl,))
