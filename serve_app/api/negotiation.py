"""Content negotiation, in one place: JSON or GeoJSON for detections (format field, query or Accept header), and
OBJ, zip or GLB bodies, or a stored model's link, for scenes and model files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import Form, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from serve_app.bounds import MAX_ORIGIN_M
from serve_app.formats import FORMATS, MEDIA_TYPES, InlineModel, ModelFormat
from serve_app.orchestration import StoredFile, StoredScene
from treecore.errors import InvalidGeoreferenceError, InvalidParametersError, InvalidTreesError
from treecore.geo import detection_geojson, resolve_georeference

GEOJSON_MEDIA_TYPE = "application/geo+json"
#: /detect-trees answers JSON or GeoJSON by the Accept header: caches must keep the two apart.
VARY_ACCEPT = {"Vary": "Accept"}
OutputFormat = Literal["json", "geojson"]
Shaper = Callable[[dict[str, Any]], dict[str, Any]]


class FastJSONResponse(JSONResponse):
    """A JSONResponse encoded by orjson: about 5 times faster than the standard encoder for a detection's tree list
    (the same JSON text for the values an answer holds; it never holds NaN or infinities)."""

    def render(self, content: Any) -> bytes:
        """The body's bytes."""
        return orjson.dumps(content)


def prefers_geojson(accept: str | None) -> bool:
    """Whether an Accept header ranks application/geo+json above application/json (q values; ties: JSON).

    Args:
        accept: the header, e.g. "application/geo+json" or "application/json, text/plain, */*".

    Returns:
        True for GeoJSON.
    """
    quality = {"application/json": 0.0, GEOJSON_MEDIA_TYPE: 0.0}
    for item in (accept or "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media in quality:
            quality[media] = max(quality[media], _q(params))
    return quality[GEOJSON_MEDIA_TYPE] > quality["application/json"]


def _q(params: list[str]) -> float:
    """The q value among a media range's parameters (1 without one; 0 when malformed or out of [0, 1])."""
    q = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
    return q if 0 <= q <= 1 else 0.0


@dataclass(frozen=True)
class OutputOptions:
    """How a detection is answered: the output format asked for, and the georeference fields of GeoJSON."""

    format: OutputFormat | None
    origin_easting: float | None
    origin_northing: float | None
    epsg: int | None

    def geojson(self, accept: str | None) -> bool:
        """GeoJSON when format says so, else when the Accept header prefers application/geo+json to JSON."""
        return self.format == "geojson" if self.format is not None else prefers_geojson(accept)

    def georeferenced(self) -> bool:
        """Whether any georeference field was given."""
        return any(v is not None for v in (self.origin_easting, self.origin_northing, self.epsg))

    def shaper(self, data: bytes, accept: str | None) -> Shaper | None:
        """How the detection is answered: None for the legacy JSON, else its GeoJSON maker (georeference checked
        now, from the fields or the upload's GeoTIFF tags, before any detection runs).

        Args:
            data: the uploaded image's bytes.
            accept: the request's Accept header (None where only `format` chooses, as for jobs).

        Raises:
            InvalidGeoreferenceError: georeference fields with a JSON answer, or an invalid georeference.
        """
        if not self.geojson(accept):
            if self.georeferenced():
                raise InvalidGeoreferenceError(
                    "origin_easting, origin_northing and epsg place the GeoJSON output: "
                    "add format=geojson (or, on /detect-trees, send Accept: application/geo+json)"
                )
            return None
        georef = resolve_georeference(
            data, origin_easting=self.origin_easting, origin_northing=self.origin_northing, epsg=self.epsg
        )
        return lambda detection: _keep_warnings(detection, detection_geojson(detection, georef))


def _keep_warnings(detection: dict[str, Any], geojson: dict[str, Any]) -> dict[str, Any]:
    """The GeoJSON with the detection's warnings (ignored fields) before its own (georeference)."""
    return {**geojson, "warnings": [*detection.get("warnings", ()), *geojson.get("warnings", ())]}


def _origin(axis: str) -> Any:
    return Form(
        ge=-MAX_ORIGIN_M,
        le=MAX_ORIGIN_M,
        allow_inf_nan=False,
        description=f"GeoJSON: CRS {axis} of the image's top-left corner, metres (needs epsg)",
    )


def output_options(
    origin_easting: Annotated[float | None, _origin("easting")] = None,
    origin_northing: Annotated[float | None, _origin("northing")] = None,
    epsg: Annotated[
        int | None,
        Form(description="GeoJSON: EPSG code of a projected CRS in metres; alone, names a GeoTIFF's CRS"),
    ] = None,
    format_form: Annotated[
        OutputFormat | None, Form(alias="format", description="json (default) or geojson; or as a query parameter")
    ] = None,
    format_query: Annotated[
        OutputFormat | None, Query(alias="format", description="json (default) or geojson; or as a form field")
    ] = None,
) -> OutputOptions:
    """The output fields of /detect-trees and /jobs (all optional: without them the legacy JSON is unchanged)."""
    if format_form is not None and format_query is not None and format_form != format_query:
        raise InvalidParametersError(
            f"format is given twice and differs: {format_query!r} (query) and {format_form!r} (form field)"
        )
    return OutputOptions(format_query or format_form, origin_easting, origin_northing, epsg)


def detection_response(detection: dict[str, Any], shape: Shaper | None) -> JSONResponse:
    """A detection as the legacy JSON (shape None) or as GeoJSON, varying by Accept."""
    if shape is None:
        return FastJSONResponse(detection, headers=VARY_ACCEPT)
    return FastJSONResponse(shape(detection), media_type=GEOJSON_MEDIA_TYPE, headers=VARY_ACCEPT)


def model_format(query: str | None, payload: Any) -> ModelFormat:
    """The scene format: the query parameter, else the body's `format` field, else OBJ.

    Raises:
        InvalidTreesError: not one of FORMATS.
    """
    chosen = query or (payload.get("format") if isinstance(payload, dict) else None) or FORMATS[0]
    for fmt in FORMATS:
        if chosen == fmt:
            return fmt
    raise InvalidTreesError(f"format must be one of {', '.join(FORMATS)}, got {chosen!r}")


def expiry_text(seconds: int | None) -> str:
    """The legacy `expires_in`: a duration in words, e.g. "1 hour", "24 hours", "90 seconds"; "never" for None.

    Args:
        seconds: the URL's lifetime.

    Returns:
        The words.
    """
    if seconds is None:
        return "never"
    # Hours at most (the legacy answer says "1 hour"; a day of local retention is "24 hours").
    whole = ((u, n) for u, n in (("hour", 3600), ("minute", 60)) if seconds >= n and seconds % n == 0)
    unit, size = next(whole, ("second", 1))
    count = seconds // size
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _file_body(request: Request, stored: StoredFile, now: float) -> dict[str, Any]:
    """One stored file: name, URL, size, media type, and when its URL expires (seconds, and UTC time)."""
    url = stored.url if "://" in stored.url else str(request.url_for("download_model", filename=stored.name))
    expires = stored.expires_in_s
    return {
        "name": stored.name,
        "url": url,
        "size_bytes": stored.size_bytes,
        "media_type": MEDIA_TYPES[stored.name.rpartition(".")[2]],
        "expires_in_s": expires,
        "expires_at": None if expires is None else _utc(now + expires),
    }


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_body(
    request: Request, scene: StoredScene, warnings: list[str] | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """The legacy large-model answer ({download_url, filename, filesize_mb, total_trees, message, expires_in}),
    plus expires_in_s, expires_at, mtl_url, every file of the scene, and the request's warnings.

    A store's URL with a scheme (a SAS URL) is given as it is; a local one is this service's /download route.
    Each file has its own URL (with Azure: its own SAS) and expiry, counted from `now` (epoch seconds; default:
    this moment; a job's scene: when it was stored).
    """
    files = [_file_body(request, stored, time.time() if now is None else now) for stored in scene.files]
    main = files[0]
    mtl = next((f["url"] for f in files[1:] if f["name"].endswith(".mtl")), None)
    return {
        "download_url": main["url"],
        "filename": main["name"],
        "filesize_mb": round(main["size_bytes"] / 1e6, 2),
        "total_trees": scene.total_trees,
        "message": scene.message,
        "expires_in": expiry_text(main["expires_in_s"]),
        "expires_in_s": main["expires_in_s"],
        "expires_at": main["expires_at"],
        "mtl_url": mtl,
        "files": files,
        "warnings": list(warnings or ()),
    }


def model_response(request: Request, built: InlineModel | StoredScene, warnings: list[str] | None = None) -> Response:
    """A scene as its body (OBJ with the MTL's URL in X-Mtl-Url, zip or GLB), or a stored scene's link (JSON).

    A body's warnings (ignored fields) go in the X-Warnings header, joined by " | ".
    """
    if isinstance(built, StoredScene):
        return JSONResponse(stored_body(request, built, warnings))
    headers = {
        "Content-Disposition": f'attachment; filename="{built.filename}"',
        "X-Total-Trees": str(built.total_trees),
    }
    if built.mtl_name:
        headers["X-Mtl-Url"] = str(request.url_for("tree_model_file", filename=built.mtl_name))
    if warnings:
        headers["X-Warnings"] = " | ".join(warnings).encode("ascii", "replace").decode()
    return Response(built.data, media_type=built.media_type, headers=headers)


def file_response(path: Path) -> FileResponse:
    """A model file from disk (OBJ, MTL, zip, GLB) as a download, with its media type."""
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")], filename=path.name)


def bytes_response(data: bytes, filename: str) -> Response:
    """A model file's bytes as a download, with its media type."""
    media = MEDIA_TYPES[filename.rpartition(".")[2]]
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
