"""The output formats of /generate-model, the media types of every model file the service sends or stores, and
the value of a scene returned in the response body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: OBJ media type (registered 2022); browsers and the legacy front end treat it as a download.
OBJ_MEDIA_TYPE = "model/obj"
MTL_MEDIA_TYPE = "model/mtl"
GLB_MEDIA_TYPE = "model/gltf-binary"
ZIP_MEDIA_TYPE = "application/zip"

#: A scene's format: OBJ (MTL separate), zip (OBJ and MTL in one archive), GLB (binary glTF, instanced).
ModelFormat = Literal["obj", "zip", "glb"]
#: Output formats of /generate-model; the first is the default.
FORMATS: tuple[ModelFormat, ...] = ("obj", "zip", "glb")
#: Media type by file extension, for the files /tree-models and /download serve.
MEDIA_TYPES = {"obj": OBJ_MEDIA_TYPE, "mtl": MTL_MEDIA_TYPE, "zip": ZIP_MEDIA_TYPE, "glb": GLB_MEDIA_TYPE}


def binary_content(*extensions: str) -> dict[str, dict[str, object]]:
    """The OpenAPI `content` of a response that is one of these files' bytes, by media type.

    Args:
        extensions: file extensions, keys of MEDIA_TYPES.

    Returns:
        {media type: {"schema": {"type": "string", "format": "binary"}}}.
    """
    return {MEDIA_TYPES[ext]: {"schema": {"type": "string", "format": "binary"}} for ext in extensions}


@dataclass(frozen=True)
class InlineModel:
    """A scene returned in the response body (an OBJ's `mtllib` names `mtl_name`)."""

    filename: str
    data: bytes
    mtl_name: str
    total_trees: int
    media_type: str = OBJ_MEDIA_TYPE
