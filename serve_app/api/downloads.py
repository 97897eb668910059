"""GET /download/{filename}: a stored large model, read back through the store (any file the store holds)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from serve_app.api.context import ServiceDep
from serve_app.formats import MEDIA_TYPES, binary_content
from treecore.errors import UnknownModelError

#: The stored files a client may download (the OBJ with its MTL, the zip, or a job's GLB).
DOWNLOADABLE = ("obj", "mtl", "zip", "glb")

router = APIRouter(tags=["3d"])


@router.get(
    "/download/{filename}",
    name="download_model",
    response_class=StreamingResponse,
    responses={200: {"content": binary_content(*DOWNLOADABLE), "description": "the stored file (an attachment)"}},
)
async def download_model(filename: str, service: ServiceDep) -> StreamingResponse:
    """A stored large model, read through the store (local storage; with Azure the download_url is a SAS URL)."""
    ext = filename.rpartition(".")[2]
    if ext not in DOWNLOADABLE:
        raise UnknownModelError(f"no stored model {filename!r} (expired, or never made)")
    download = service.flows.open_download(filename)
    headers = {
        "Content-Length": str(download.size_bytes),
        "Content-Disposition": f'attachment; filename="{download.name}"',
    }
    return StreamingResponse(download.chunks, media_type=MEDIA_TYPES[ext], headers=headers)
