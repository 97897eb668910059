"""3D routes: POST /generate-model (a scene from a tree list), GET /tree-models and their files."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from serve_app.api.context import ServiceDep
from serve_app.api.forms import ignored_warnings, log_warnings
from serve_app.api.negotiation import bytes_response, file_response, model_format, model_response
from serve_app.catalog import package_path
from serve_app.formats import binary_content
from serve_app.progress import Progress
from serve_app.schemas import (
    DetectResponse,
    GenerateModelRequest,
    ModelList,
    StoredModelResponse,
    TreeIn,
    inline_schema,
)
from treecore.basemodels import DEFAULT_MODEL, split_model_file_name
from treecore.errors import InvalidTreesError, UnknownModelError
from treecore.report import TREE_FIELDS

router = APIRouter(tags=["3d"])


def parse_json_body(body: bytes) -> Any:
    """A JSON body, decoded by orjson (about twice as fast as the standard decoder on a 60,000-tree list); one
    it refuses (NaN or Infinity, which the standard decoder accepts, and the tree checks then name) is decoded
    again by the standard decoder, so the answer stays what it was.

    Raises:
        InvalidTreesError: not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTreesError(f"the body is not valid JSON: {exc}") from None


def _base_model(query: str | None, payload: Any) -> str:
    """The base model: the query parameter, else the body's `base_model` field, else the default."""
    chosen = query or (payload.get("base_model") if isinstance(payload, dict) else None) or DEFAULT_MODEL
    if not isinstance(chosen, str):
        raise UnknownModelError("base_model must be a model name (a string)")
    return chosen


#: The top-level fields of a /generate-model body the service knows: the /detect-trees response's and its options.
BODY_FIELDS = frozenset(DetectResponse.model_fields) | {"base_model", "format"}


def body_warnings(request: Request, payload: Any) -> list[str]:
    """Warnings naming the body's fields the service does not know (top level, and of the trees), logged once."""
    warnings = ignored_warnings(payload, BODY_FIELDS, "field") if isinstance(payload, dict) else []
    trees = payload.get("trees") if isinstance(payload, dict) else payload
    if isinstance(trees, list):
        keys = {key for tree in trees if isinstance(tree, dict) for key in tree}
        warnings += ignored_warnings(keys, TREE_FIELDS, "tree field")
    return log_warnings(request, warnings)


def _request_body() -> dict[str, Any]:
    """The documented body: a /detect-trees response (or {"trees": [...]}), or a bare list of trees."""
    tree = inline_schema(TreeIn)
    return {
        "required": True,
        "description": 'the /detect-trees response as it is, or {"trees": [...]}, or a bare list of trees; '
        "each tree needs x, y, diameter (id optional)",
        "content": {
            "application/json": {
                "schema": {"anyOf": [inline_schema(GenerateModelRequest), {"type": "array", "items": tree}]},
                "example": {"trees": [{"id": 1, "x": 12.5, "y": 30.0, "diameter": 6.2}], "format": "obj"},
            }
        },
    }


@router.post(
    "/generate-model",
    openapi_extra={"requestBody": _request_body()},
    responses={
        200: {
            "content": {
                **binary_content("obj", "zip", "glb"),
                "application/json": {"schema": inline_schema(StoredModelResponse)},
            },
            "description": "the scene (OBJ or zip up to LARGE_MODEL_THRESHOLD trees, GLB always) or, above "
            "the threshold, {download_url, ...}; a body's ignored fields are named in its X-Warnings header",
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
    """One 3D scene from a /detect-trees response (JSON body; its other fields ignored), or a bare tree list."""
    payload = parse_json_body(await request.body())
    fmt = model_format(format, payload)
    built = await service.flows.generate(payload, _base_model(base_model, payload), Progress(), fmt=fmt)
    return model_response(request, built, body_warnings(request, payload))


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


@router.get(
    "/tree-models/{filename}",
    name="tree_model_file",
    response_class=FileResponse,
    responses={200: {"content": binary_content("obj", "mtl"), "description": "the base model's OBJ or MTL"}},
)
async def tree_model_file(filename: str, service: ServiceDep) -> Response:
    """A base tree model's OBJ or MTL file by name, e.g. tree_lowpoly.obj (packaged or blob model)."""
    stem, ext = split_model_file_name(filename)
    path = package_path(service.models_dir, f"{stem}.{ext}")
    if path is not None:  # packaged: straight from disk, no hop to the model stage
        return file_response(path)
    return bytes_response(await service.catalog.model_file(f"{stem}.{ext}"), f"{stem}.{ext}")
