"""GET /download/{filename}: a stored large model (local storage; with Azure the link points at the blob)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve_app.api.context import ServiceDep
from serve_app.api.negotiation import file_response
from treecore.basemodels import check_model_name
from treecore.errors import UnknownModelError

#: The stored files a client may download (the OBJ with its MTL, or the zip).
DOWNLOADABLE = ("obj", "mtl", "zip")

router = APIRouter(tags=["3d"])


@router.get("/download/{filename}", name="download_model", response_class=FileResponse)
async def download_model(filename: str, service: ServiceDep) -> FileResponse:
    """A stored large model (local storage only; with Azure the download_url points at the blob)."""
    settings = service.settings
    if settings.storage_kind != "local":
        raise UnknownModelError("models are stored in Azure Blob Storage here: use the download_url you were given")
    stem = check_model_name(filename.rpartition(".")[0] or filename)
    ext = filename.rpartition(".")[2]
    path = settings.generated_models_dir / f"{stem}.{ext}"
    if ext not in DOWNLOADABLE or not path.is_file():
        raise UnknownModelError(f"no stored model {filename!r} (expired, or never made)")
    return file_response(path)
