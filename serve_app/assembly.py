"""Model assembly: OBJ parts formatted in parallel threads, concatenated in order, returned or stored."""

from __future__ import annotations

import contextlib
import io
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from serve_app.storage import ModelStore, StorageError, StoredModel
from treecore.basemodels import DEFAULT_MODELS_DIR, check_model_name, list_models, load_model, split_model_file_name
from treecore.errors import InvalidMeshError, UnknownModelError
from treecore.gltf import write_glb
from treecore.mesh import Mesh, load_obj, normalised
from treecore.objwriter import TREES_PER_PART, default_mtl, format_obj_part, obj_header
from treecore.types import Tree

T = TypeVar("T")
R = TypeVar("R")


class RemoteModels(Protocol):
    """Base models kept outside the image (the tree-models container; serve_app.storage.BlobModels)."""

    def __call__(self, stem: str) -> tuple[str, str | None] | None:
        """(OBJ text, MTL text or None) of the model `stem`, or None when there is no such model."""
        ...

    def names(self) -> list[str]:
        """The file names there (e.g. "custom.obj", "custom.mtl", "notes.txt")."""
        ...

    def read(self, filename: str) -> bytes | None:
        """One file's bytes as stored, or None when absent."""
        ...


#: Where a base model comes from: the package's models_dir, or the tree-models blob container.
ModelSource = Literal["package", "blob"]
#: Blob listings and models loaded from blobs are read again after this many seconds.
REMOTE_TTL_S = 30.0

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


@dataclass(frozen=True)
class TreeModelEntry:
    """A base tree model on offer: its name and where it comes from (a package model wins a name clash)."""

    name: str
    source: ModelSource


def _is_model_name(stem: str) -> bool:
    try:
        return check_model_name(stem) == stem  # "x.obj.obj" would be "x": not a name of its own
    except UnknownModelError:
        return False


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
        remote_ttl_s: float = REMOTE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A builder.

        Args:
            store: where stored scenes go.
            models_dir: folder of base models (<name>.obj + <name>.mtl).
            workers: threads formatting parts.
            trees_per_part: trees per part (0: treecore's default).
            remote_models: where to look for a base model that is not in models_dir (the tree-models
                container): name -> (OBJ text, MTL text or None), or None when it has no such model.
            remote_ttl_s: the remote listing, and each model loaded from there, is read again after this many
                seconds (so a model uploaded, replaced or deleted shows in listing and scenes alike).
            clock: monotonic seconds (tests move it).
        """
        self.store = store
        self.remote_models = remote_models
        self.remote_ttl_s, self.clock = remote_ttl_s, clock
        self._remote_loaded: dict[str, float] = {}  # stem -> when a model from remote_models was read
        self._listing: tuple[float, list[str]] | None = None  # (when, remote model names)
        self._listing_lock = threading.Lock()
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
            cached = self._models.get(stem)
            read_at = self._remote_loaded.get(stem)
            now = self.clock()
            if cached is not None and (read_at is None or now - read_at < self.remote_ttl_s):
                return cached
            try:
                loaded, remote = self._load(stem)
            except StorageError:
                if cached is None:
                    raise
                self._remote_loaded[stem] = now  # storage down: keep the copy we have, try again later
                return cached
            except Exception:
                self._models.pop(stem, None)  # deleted or replaced by a broken file: not offered any more
                self._remote_loaded.pop(stem, None)
                raise
            self._models[stem] = loaded
            if remote:
                self._remote_loaded[stem] = now
            return loaded

    def _load(self, stem: str) -> tuple[tuple[Mesh, str], bool]:
        try:
            return load_model(stem, self.models_dir), False
        except UnknownModelError:
            found = self.remote_models(stem) if self.remote_models is not None else None
            if found is None:
                raise
        obj_text, mtl_text = found
        try:
            mesh = normalised(load_obj(obj_text, name=stem))
        except InvalidMeshError as exc:
            raise InvalidMeshError(f"the blob tree model {stem}.obj cannot be used: {exc}") from None
        return (mesh, mtl_text if mtl_text is not None else default_mtl(mesh)), True

    def _remote_names(self) -> list[str]:
        if self.remote_models is None:
            return []
        with self._listing_lock:
            if self._listing is not None and self.clock() - self._listing[0] < self.remote_ttl_s:
                return self._listing[1]
        # Not under the lock: a slow or failing storage must not queue every listing behind it.
        listed_at = self.clock()
        files = self.remote_models.names()
        names = sorted({f[: -len(".obj")] for f in files if f.endswith(".obj") and _is_model_name(f[: -len(".obj")])})
        with self._listing_lock:
            self._listing = (listed_at, names)
        return names

    def list_models(self) -> list[TreeModelEntry]:
        """The base models on offer: the package's, then the remote ones (listing cached remote_ttl_s).

        A remote model is a `<name>.obj` with a valid model name (its `.mtl` is optional). A name in both
        places is listed once, as "package": that is the one model() loads.

        Returns:
            The models, each source sorted by name.

        Raises:
            StorageError: the remote listing failed.
        """
        package = list_models(self.models_dir)
        known = set(package)
        remote = [name for name in self._remote_names() if name not in known]
        return [TreeModelEntry(n, "package") for n in package] + [TreeModelEntry(n, "blob") for n in remote]

    def model_file(self, filename: str) -> bytes:
        """A base model's OBJ or MTL file as stored, from the same place model() loads the model from.

        A remote model without an MTL gets the plain materials its scenes use (default_mtl).

        Args:
            filename: "<name>.obj" or "<name>.mtl".

        Returns:
            The file's bytes.

        Raises:
            UnknownModelError: not such a file name, or no such model or file.
            ModelTooLargeError: a remote file over the size limit.
            StorageError: the remote storage failed.
        """
        stem, ext = split_model_file_name(filename)
        missing = UnknownModelError(f"no tree model file {stem}.{ext} (see GET /tree-models)")
        if (self.models_dir / f"{stem}.obj").is_file():  # a package model wins a name clash, as in model()
            path = self.models_dir / f"{stem}.{ext}"
            if not path.is_file():
                raise missing
            return path.read_bytes()
        if self.remote_models is None:
            raise missing
        data = self.remote_models.read(f"{stem}.{ext}")
        if data is not None:
            return data
        if ext == "obj":
            raise missing
        try:
            return self.model(stem)[1].encode()
        except UnknownModelError:
            raise missing from None

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
        # The OBJ first: it is the large, failure-prone one, and a failure there leaves nothing at all. Should
        # the small MTL then fail, the OBJ is removed again, so no scene is left without its materials.
        stored = self.store.save(
            f"{name}.obj", self.parts(trees, mesh, mtl_name=f"{name}.mtl"), content_type=OBJ_MEDIA_TYPE
        )
        try:
            self.store.save(f"{name}.mtl", [mtl_text.encode()], content_type=MTL_MEDIA_TYPE)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the MTL's own error is the one to report
                self.store.delete(stored.name)
            raise
        return stored
