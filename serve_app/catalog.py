"""The base tree model catalogue: list the models, read their files, look one up (a package model wins, here only).

Models come from the package's models folder and, with Azure storage, from the tree-models container
(`RemoteModels`). `Catalog` is the catalogue itself (synchronous: it runs where the storage is, in the
ModelAssembler); `CatalogView` is how the HTTP API asks it (async: a deployment call on Ray Serve,
`LocalCatalogView` in one process).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from serve_app.storage import StorageError
from treecore.basemodels import DEFAULT_MODELS_DIR, check_model_name, list_models, load_model, split_model_file_name
from treecore.errors import InvalidMeshError, UnknownModelError
from treecore.mesh import Mesh, load_obj, normalised
from treecore.objwriter import default_mtl

#: Where a base model comes from: the package's models_dir, or the tree-models blob container.
ModelSource = Literal["package", "blob"]
#: Blob listings and models loaded from blobs are read again after this many seconds.
REMOTE_TTL_S = 30.0


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


def in_package(models_dir: Path, stem: str) -> bool:
    """Whether the package has the model `stem` (its OBJ): then that model wins a name clash, everywhere."""
    return (models_dir / f"{stem}.obj").is_file()


def package_path(models_dir: Path, filename: str) -> Path | None:
    """The packaged file of a model file name, when the package has that model (see in_package).

    Args:
        models_dir: the package's models folder.
        filename: "<name>.obj" or "<name>.mtl".

    Returns:
        The file's path when the package has the model `<name>` (its OBJ), else None (look elsewhere).

    Raises:
        UnknownModelError: not a model file name, or a packaged model without that file.
    """
    stem, ext = split_model_file_name(filename)
    if not in_package(models_dir, stem):
        return None
    path = models_dir / f"{stem}.{ext}"
    if not path.is_file():
        raise UnknownModelError(f"no tree model file {stem}.{ext} (see GET /tree-models)")
    return path


class Catalog:
    """The base models of a package folder and of an optional remote store, with their meshes loaded once."""

    def __init__(
        self,
        models_dir: Path = DEFAULT_MODELS_DIR,
        remote: RemoteModels | None = None,
        *,
        remote_ttl_s: float = REMOTE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A catalogue.

        Args:
            models_dir: folder of packaged base models (<name>.obj + <name>.mtl).
            remote: where to look for a model the package lacks (the tree-models container), or None.
            remote_ttl_s: the remote listing, and each model loaded from there, is read again after this many
                seconds (so a model uploaded, replaced or deleted shows in listing and scenes alike).
            clock: monotonic seconds (tests move it).
        """
        self.models_dir, self.remote = models_dir, remote
        self.remote_ttl_s, self.clock = remote_ttl_s, clock
        self._models: dict[str, tuple[Mesh, str]] = {}
        self._remote_loaded: dict[str, float] = {}  # stem -> when a model from `remote` was read
        self._lock = threading.Lock()
        self._listing: tuple[float, list[str]] | None = None  # (when, remote model names)
        self._listing_lock = threading.Lock()

    def lookup(self, name: str) -> tuple[Mesh, str]:
        """A base model (mesh normalised to crown diameter 1, MTL text), loaded once (remote ones: per TTL).

        Args:
            name: model name.

        Returns:
            (mesh, mtl text).

        Raises:
            UnknownModelError: no such model, or not a model name.
            InvalidMeshError: a remote OBJ that cannot be read.
            StorageError: the remote storage failed and no copy is cached.
        """
        stem = check_model_name(name)
        with self._lock:
            cached, read_at, now = self._models.get(stem), self._remote_loaded.get(stem), self.clock()
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
        if in_package(self.models_dir, stem) or self.remote is None:
            return load_model(stem, self.models_dir), False  # UnknownModelError names the packaged models
        found = self.remote(stem)
        if found is None:
            raise UnknownModelError(f"no tree model named {stem!r} (see GET /tree-models)")
        obj_text, mtl_text = found
        try:
            mesh = normalised(load_obj(obj_text, name=stem))
        except InvalidMeshError as exc:
            raise InvalidMeshError(f"the blob tree model {stem}.obj cannot be used: {exc}") from None
        return (mesh, mtl_text if mtl_text is not None else default_mtl(mesh)), True

    def _remote_names(self) -> list[str]:
        if self.remote is None:
            return []
        with self._listing_lock:
            if self._listing is not None and self.clock() - self._listing[0] < self.remote_ttl_s:
                return self._listing[1]
        # Not under the lock: a slow or failing storage must not queue every listing behind it.
        listed_at = self.clock()
        files = self.remote.names()
        names = sorted({f[: -len(".obj")] for f in files if f.endswith(".obj") and _is_model_name(f[: -len(".obj")])})
        with self._listing_lock:
            self._listing = (listed_at, names)
        return names

    def entries(self) -> list[TreeModelEntry]:
        """The base models on offer: the package's, then the remote ones (listing cached remote_ttl_s).

        A remote model is a `<name>.obj` with a valid model name (its `.mtl` is optional). A name in both
        places is listed once, as "package": that is the one lookup() loads.

        Returns:
            The models, each source sorted by name.

        Raises:
            StorageError: the remote listing failed.
        """
        package = list_models(self.models_dir)
        remote = [name for name in self._remote_names() if not in_package(self.models_dir, name)]
        return [TreeModelEntry(n, "package") for n in package] + [TreeModelEntry(n, "blob") for n in remote]

    def file(self, filename: str) -> bytes:
        """A base model's OBJ or MTL file as stored, from the same place lookup() loads the model from.

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
        path = package_path(self.models_dir, filename)
        if path is not None:
            return path.read_bytes()
        stem, ext = split_model_file_name(filename)
        missing = UnknownModelError(f"no tree model file {stem}.{ext} (see GET /tree-models)")
        data = self.remote.read(f"{stem}.{ext}") if self.remote is not None else None
        if data is not None:
            return data
        if ext == "obj" or self.remote is None:
            raise missing
        try:
            return self.lookup(stem)[1].encode()
        except UnknownModelError:
            raise missing from None


class CatalogView(Protocol):
    """The catalogue as the HTTP API reaches it (it lives where the storage is)."""

    async def list_models(self) -> list[TreeModelEntry]:
        """The base models on offer, with their source (package or blob)."""
        ...

    async def model_file(self, filename: str) -> bytes:
        """A base model's `<name>.obj` or `<name>.mtl`, from where generation loads that model."""
        ...


class LocalCatalogView:
    """A catalogue in this process, asked in worker threads (the blob listing is a network call)."""

    def __init__(self, catalog: Catalog) -> None:
        """A view of `catalog`."""
        self.catalog = catalog

    async def list_models(self) -> list[TreeModelEntry]:
        """Catalog.entries in a thread."""
        return await asyncio.to_thread(self.catalog.entries)

    async def model_file(self, filename: str) -> bytes:
        """Catalog.file in a thread."""
        return await asyncio.to_thread(self.catalog.file, filename)
