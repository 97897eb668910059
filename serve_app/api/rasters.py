"""A raster in storage as a request's image (`image_ref`): its detection parameters and its GeoJSON georeference
from its header, the same for POST /jobs and POST /detect-trees."""

from __future__ import annotations

import dataclasses

from serve_app.api.negotiation import OutputOptions
from serve_app.stages import RasterSource
from treecore.errors import InvalidGeoreferenceError
from treecore.geo import resolve_georeference
from treecore.types import DetectionParams, Georeference


def form_georeference(data: bytes, output: OutputOptions) -> Georeference | None:
    """The GeoJSON georeference of an upload: the form's origin and EPSG, else its GeoTIFF tags (checked now)."""
    return resolve_georeference(
        data, origin_easting=output.origin_easting, origin_northing=output.origin_northing, epsg=output.epsg
    )


def raster_params(
    params: DetectionParams, source: RasterSource, given: set[str]
) -> tuple[DetectionParams, tuple[str, ...]]:
    """The detection parameters of a referenced raster: its georeference's metres per pixel give real_width and
    real_height (the raster wins over the form's fields: a warning says so when they were given); a raster
    without one keeps the form's (or their defaults), and a warning says that too.

    Returns:
        (the parameters, the warnings).
    """
    header, sizes = source.header, [name for name in ("real_width", "real_height") if name in given]
    if header.metres_per_pixel is None:
        return params, (
            f"the raster has no georeference: real_width {params.real_width:g} m and real_height "
            f"{params.real_height:g} m ({'as given' if sizes else 'the defaults'}) set its scale",
        )
    mx, my = header.metres_per_pixel
    width_m, height_m = header.width * mx, header.height * my
    notes: tuple[str, ...] = ()
    if sizes and not (
        abs(params.real_width - width_m) <= 1e-6 * width_m and abs(params.real_height - height_m) <= 1e-6 * height_m
    ):
        notes = (
            f"{' and '.join(sizes)} ignored: the raster's georeference gives {width_m:g} m x {height_m:g} m "
            f"({mx:g} x {my:g} m per pixel), which wins",
        )
    return dataclasses.replace(params, real_width=width_m, real_height=height_m), notes


def raster_georeference(
    source: RasterSource, output: OutputOptions, *, geojson: bool | None = None
) -> Georeference | None:
    """A referenced raster's GeoJSON georeference: the form's origin and EPSG when given, else the raster's own
    (epsg alone names or corrects its CRS), checked now; None for a JSON answer, or a raster without one.

    Args:
        source: the raster.
        output: the output fields.
        geojson: whether the answer is GeoJSON (default: `format=geojson`, as for jobs).

    Raises:
        InvalidGeoreferenceError: georeference fields with a JSON answer, or an invalid georeference.
    """
    if not (output.format == "geojson" if geojson is None else geojson):
        if output.georeferenced():
            raise InvalidGeoreferenceError(
                "origin_easting, origin_northing and epsg place the GeoJSON output: add format=geojson"
            )
        return None
    if output.origin_easting is not None or output.origin_northing is not None:
        return form_georeference(b"", output)
    return source.header.georeference(epsg=output.epsg)
