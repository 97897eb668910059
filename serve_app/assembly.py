"""Model assembly: OBJ parts formatted in parallel threads, concatenated in order, returned or stored."""

from __future__ import annotations

import io
import threading
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from serve_app.storage import ModelStore, StoredModel
from treecore.basemodels import DEFAULT_MODELS_DIR, check_model_name, load_model
from treecore.errors import UnknownModelError
from treecore.gltf import write_glb
from treecore.mesh import Mesh, load_obj, normalised
from treecore.objwriter import TREES_PER_PART, default_mtl, format_obj_part, obj_header
from treecore.types import Tree

T = TypeVar("T")
R = TypeVar("R")
#: name -> (OBJ text, MTL text or None), or None: base models kept outside the image (tree-models container).
RemoteModels = Callable[[str], tuple[str, str | None] | None]

#: OBJ media type (registered 2022); browsers and the legacy front end treat it as a download.
OBJ_MEDIA_TYPE = "model/obj"
MTL_MEDIA_TYPE = "model/mtl"
GLB_MEDIA_TYPE = "model/gltf-binary"
ZIP_MEDIA_TYPE = "application/zip"
#: Output formats of /generate-model.
FORMATS = ("obj", "zip", "glb")


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


@dataclass(frozen=True)
class InlineModel:
    """A scene returned in the response body (an OBJ's `mtllib` names `mtl_name`)."""

    filename: str
    data: bytes
    mtl_name: str
    total_trees: int
    media_type: str = "model/obj"


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
    """Makes merged OBJ scenes from a base model folder and hands large ones to a store."""

    def __init__(
        self,
        store: ModelStore,
        *,
        models_dir: Path = DEFAULT_MODELS_DIR,
        workers: int = 2,
        trees_per_part: int = 0,
        remote_models: RemoteModels | None = None,
    ) -> None:
        """A builder.

        Args:
            store: where stored scenes go.
            models_dir: folder of base models (<name>.obj + <name>.mtl).
            workers: threads formatting parts.
            trees_per_part: trees per part (0: treecore's default).
            remote_models: where to look for a base model that is not in models_dir (the tree-models
                container): name -> (OBJ text, MTL text or None), or None when it has no such model.
        """
        self.store = store
        self.remote_models = remote_models
        self.models_dir = models_dir
        self.workers = workers
        self.trees_per_part = trees_per_part or TREES_PER_PART
        self._models: dict[str, tuple[Mesh, str]] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> tuple[Mesh, str]:
        """A base model (mesh normalised to crown diameter 1, MTL text), loaded once.

        Args:
            name: model name.

        Returns:
            (mesh, mtl text).
        """
        stem = check_model_name(name)
        with self._lock:
            if stem not in self._models:
                self._models[stem] = self._load(stem)
            return self._models[stem]

    def _load(self, stem: str) -> tuple[Mesh, str]:
        try:
            return load_model(stem, self.models_dir)
        except UnknownModelError:
            found = self.remote_models(stem) if self.remote_models is not None else None
            if found is None:
                raise
        obj_text, mtl_text = found
        mesh = normalised(load_obj(obj_text, name=stem))
        return mesh, mtl_text if mtl_text is not None else default_mtl(mesh)

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
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: str = "obj"
    ) -> InlineModel | StoredModel:
        """One scene: inline bytes, or stored as `<name>.obj` + `<name>.mtl` (or `<name>.zip`).

        Args:
            trees: the trees.
            base_model: base model name.
            store: store it (large scenes) instead of returning the bytes (a GLB is always returned: with the
                mesh stored once it is small, about 40 bytes per tree).
            name: file stem (letters, digits, '_').
            fmt: "obj" (OBJ, MTL separate), "zip" (OBJ and MTL in one archive) or "glb" (binary glTF).

        Returns:
            InlineModel, or the StoredModel of the OBJ or zip.
        """
        mesh, mtl_text = self.model(base_model)
        if fmt == "glb":
            return InlineModel(f"{name}.glb", write_glb(trees, mesh, mtl_text=mtl_text), "", len(trees), GLB_MEDIA_TYPE)
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
        self.store.save(f"{name}.mtl", [mtl_text.encode()], content_type=MTL_MEDIA_TYPE)
        return self.store.save(
            f"{name}.obj", self.parts(trees, mesh, mtl_name=f"{name}.mtl"), content_type=OBJ_MEDIA_TYPE
        )
