"""3D routes: POST /generate-model (a scene from a tree list), GET /tree-models and their files."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from serve_app.api.context import ServiceDep
from serve_app.api.negotiation import bytes_response, file_response, model_format, model_response
from serve_app.catalog import package_path
from serve_app.formats import GLB_MEDIA_TYPE, OBJ_MEDIA_TYPE, ZIP_MEDIA_TYPE
from serve_app.progress import Progress
from serve_app.schemas import ModelList, StoredModelResponse
from treecore.basemodels import DEFAULT_MODEL, split_model_file_name
from treecore.errors import InvalidTreesError, UnknownModelError

router = APIRouter(tags=["3d"])


def _base_model(query: str | None, payload: Any) -> str:
    """The base model: the query parameter, else the body's `base_model` field, else the default."""
    chosen = query or (payload.get("base_model") if isinstance(payload, dict) else None) or DEFAULT_MODEL
    if not isinstance(chosen, str):
        raise UnknownModelError("base_model must be a model name (a string)")
    return chosen


@router.post(
    "/generate-model",
    responses={
        200: {
            "content": {
                OBJ_MEDIA_TYPE: {},
                ZIP_MEDIA_TYPE: {},
                GLB_MEDIA_TYPE: {},
                "application/json": {"schema": StoredModelResponse.model_json_schema()},
            },
            "description": "the scene (OBJ or zip up to LARGE_MODEL_THRESHOLD trees, GLB always) or, above "
            "the threshold, {download_url, ...}",
        }
    },
)
async def generate_model(
    request: Request,
    service: ServiceDep,
    base_model: Annotated[str | None, Query(description="base tree model (default tree_lowpoly)")] = None,
    format: Annotated[  # noqa: A002
        Literal["obj", "zip", "glb"] | None,
        Query(description="obj (default; MTL at X-Mtl-Url), zip (OBJ + MTL), glb (binary glTF, instanced)"),
    ] = None,
) -> Response:
    """One 3D scene from a /detect-trees response (JSON body; extra fields ignored)."""
    try:
        payload = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTreesError(f"the body is not valid JSON: {exc}") from None
    fmt = model_format(format, payload)
    built = await service.flows.generate(payload, _base_model(base_model, payload), Progress(), fmt=fmt)
    return model_response(request, built)


@router.get("/tree-models", response_model=ModelList)
async def tree_models(request: Request, service: ServiceDep) -> dict[str, Any]:
    """The base tree models (packaged, then from the tree-models container), with their files' URLs."""
    return {
        "default": DEFAULT_MODEL,
        "models": [
            {
                "name": model.name,
                "obj_url": str(request.url_for("tree_model_file", filename=f"{model.name}.obj")),
                "mtl_url": str(request.url_for("tree_model_file", filename=f"{model.name}.mtl")),
                "source": model.source,
            }
            for model in await service.catalog.list_models()
        ],
    }


@router.get("/tree-models/{filename}", name="tree_model_file", response_class=FileResponse)
async def tree_model_file(filename: str, service: ServiceDep) -> Response:
    """A base tree model's OBJ or MTL file by name, e.g. tree_lowpoly.obj (packaged or blob model)."""
    stem, ext = split_model_file_name(filename)
    path = package_path(service.models_dir, f"{stem}.{ext}")
    if path is not None:  # packaged: straight from disk, no hop to the model stage
        return file_response(path)
    return bytes_response(await service.catalog.model_file(f"{stem}.{ext}"), f"{stem}.{ext}")
