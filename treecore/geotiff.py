"""A GeoTIFF upload's georeference, read by GDAL (treecore.raster) from the file's header.

GDAL reads the GeoTIFF tags (ModelPixelScaleTag + ModelTiepointTag, or ModelTransformationTag, and the GeoKeys)
into a CRS and an affine transform from pixel corners to CRS coordinates. Raster coordinates (GeoTIFF 1.0,
section 2.5.2): with PixelIsArea (the default) the integer raster coordinate I is the left edge of pixel column
I; with PixelIsPoint it is that pixel's centre, and GDAL moves the transform half a pixel so that it maps pixel
corners in both cases. treecore's pixel coordinates put pixel column i's centre at i + 0.5, i.e. they are
PixelIsArea raster coordinates. A negative ScaleY is read as north up (GDAL's GTIFF_HONOUR_NEGATIVE_SCALEY=NO).
"""

from __future__ import annotations

from treecore.imageio import sniff_format
from treecore.raster import read_header
from treecore.types import Georeference


def read_geotiff_georeference(data: bytes, *, epsg: int | None = None) -> Georeference | None:
    """The georeference a GeoTIFF's tags give, or None for an image without them (PNG, JPEG, plain TIFF).

    Args:
        data: the image file's bytes.
        epsg: an EPSG code to use instead of the one in the GeoKeys (for files without one, or a wrong one).

    Returns:
        A Georeference with source "geotiff" and the pixel scale, or None.

    Raises:
        InvalidImageError: a TIFF that GDAL cannot open (truncated or corrupt directory).
        InvalidGeoreferenceError: geo tags that cannot be used: rotated or sheared, only ground control points,
            a zero or non-finite scale, or no EPSG code (user-defined CRS) and none given.
    """
    if sniff_format(data) != "tiff":
        return None
    return read_header(data).georeference(epsg=epsg)
