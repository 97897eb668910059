"""Named value types of treecore, with their units."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from treecore.errors import InvalidGeoreferenceError, InvalidParametersError

BBox = tuple[int, int, int, int]  # (x_min, y_min, x_max, y_max), pixels, half-open

#: Detection methods: "heatmap" finds tree centres with a small learned network (treecore/heatmap.py);
#: "legacy" reproduces the old backend; "watershed" grows crowns from tree tops (brightness maxima).
METHODS = ("heatmap", "legacy", "watershed")
#: The method used when none is named: the best on the NEON benchmark (benchmarks/README.md).
DEFAULT_METHOD = "heatmap"


@dataclass(frozen=True)
class Window:
    """A half-open pixel rectangle of the full image: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.y1 - self.y0

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x, y), in full-image pixels, lies inside (half-open)."""
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


@dataclass(frozen=True)
class Tile:
    """One unit of detection work: it owns `core`, and reads `halo` (core grown by the halo width)."""

    index: int
    core: Window
    halo: Window


@dataclass(frozen=True)
class DetectionParams:
    """Detection parameters, named and defaulted exactly as the legacy HTTP form fields.

    HSV bounds are OpenCV's: hue 0-179, saturation and value 0-255. Diameters and the
    cluster threshold are metres; `real_width`/`real_height` are the metres the image covers.
    """

    hue_min: int = 35
    hue_max: int = 85
    sat_min: int = 40
    sat_max: int = 255
    val_min: int = 40
    val_max: int = 255
    min_diameter: float = 3.0
    max_diameter: float = 15.0
    cluster_threshold: float = 10.0
    real_width: float = 100.0
    real_height: float = 100.0
    method: str = DEFAULT_METHOD

    #: Largest accepted real size, metres: 1,000 km, far beyond any image tile.
    MAX_REAL_SIZE_M = 1_000_000.0

    def __post_init__(self) -> None:
        """Refuse out-of-range or inconsistent values with a message naming the field."""
        for name, top in (("hue", 179), ("sat", 255), ("val", 255)):
            lo, hi = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            for bound, value in ((f"{name}_min", lo), (f"{name}_max", hi)):
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                    raise InvalidParametersError(f"{bound} must be an integer from 0 to {top}, got {value!r}")
            if lo > hi:
                raise InvalidParametersError(f"{name}_min ({lo}) must not exceed {name}_max ({hi})")
        for name in ("min_diameter", "max_diameter", "cluster_threshold", "real_width", "real_height"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidParametersError(f"{name} must be a finite number, got {value!r}")
        if self.min_diameter < 0 or self.cluster_threshold < 0:
            raise InvalidParametersError("min_diameter and cluster_threshold must not be negative")
        if self.max_diameter <= 0:
            raise InvalidParametersError(f"max_diameter must be positive, got {self.max_diameter}")
        if self.min_diameter > self.max_diameter:
            raise InvalidParametersError(
                f"min_diameter ({self.min_diameter}) must not exceed max_diameter ({self.max_diameter})"
            )
        for name in ("real_width", "real_height"):
            value = getattr(self, name)
            if not 0 < value <= self.MAX_REAL_SIZE_M:
                raise InvalidParametersError(
                    f"{name} must be more than 0 and at most {self.MAX_REAL_SIZE_M:.0f} metres, got {value}"
                )
        if self.method not in METHODS:
            raise InvalidParametersError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")


@dataclass(frozen=True)
class Tree:
    """One detected tree crown.

    `x`, `y`, `diameter` are metres from the image's top-left corner (x right, y down);
    `pixel_x`, `pixel_y`, `pixel_diameter` are the same in full-image pixels.
    `id` is 1-based and stable for the same input (assigned after the global merge).
    """

    id: int
    x: float
    y: float
    diameter: float
    pixel_x: float
    pixel_y: float
    pixel_diameter: float


@dataclass(frozen=True)
class DetectionResult:
    """The trees of one image, with what is needed to report them.

    `metres_per_pixel` is (x, y): real_width / width, real_height / height.
    """

    trees: tuple[Tree, ...]
    width: int
    height: int
    metres_per_pixel: tuple[float, float]
    params: DetectionParams
    tile_count: int = 1
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON the HTTP API and the CLI give for this result (`treecore.report.result_to_dict`)."""
        from treecore.report import result_to_dict  # here, not at the top: report imports this module

        return result_to_dict(self)


#: EPSG codes a georeference may name: the EPSG registry's range (32767 means "user-defined" in GeoTIFF).
EPSG_RANGE = (1024, 32766)
#: Largest accepted |coordinate| of an origin, CRS units: beyond this a float has no millimetres left.
MAX_ORIGIN = 1e9
#: GeoTIFF raster types (GTRasterTypeGeoKey): where a raster coordinate's integer values fall.
RASTER_TYPES = ("PixelIsArea", "PixelIsPoint")

#: EPSG codes of common geographic (degree) CRSs, refused with a form origin: metres cannot be added to degrees.
GEOGRAPHIC_EPSG = frozenset(
    {4148, 4149, 4150, 4167, 4171, 4230, 4258, 4267, 4269, 4277, 4283, 4314, 4326, 4490, 4612, 4617, 4674}
    | {4759, 4937, 4979, 6318, 6668, 7844}
)

#: EPSG codes of Web Mercator, whose metres are ground metres only at the equator (1 / cos(latitude) of them).
WEB_MERCATOR_EPSG = frozenset({3857, 3785})
#: Semi-major axis of the sphere Web Mercator projects, metres.
WEB_MERCATOR_RADIUS_M = 6_378_137.0


def check_pixel_scale(scale: tuple[float, float]) -> tuple[float, float]:
    """A pixel size (x, y), CRS units per pixel, checked: both finite and not 0.

    Raises:
        InvalidGeoreferenceError: otherwise.
    """
    if not all(math.isfinite(s) and s != 0 for s in scale):
        raise InvalidGeoreferenceError(f"the pixel size must be finite and not 0, got {scale[0]} x {scale[1]}")
    return scale


def check_epsg(epsg: object) -> int:
    """An EPSG code checked for its type and range.

    Args:
        epsg: the code.

    Returns:
        The code.

    Raises:
        InvalidGeoreferenceError: not a whole number within EPSG_RANGE.
    """
    low, high = EPSG_RANGE
    if not isinstance(epsg, int) or isinstance(epsg, bool) or not low <= epsg <= high:
        raise InvalidGeoreferenceError(f"epsg must be an EPSG code, a whole number from {low} to {high}, got {epsg!r}")
    return epsg


@dataclass(frozen=True)
class Georeference:
    """Where an image lies in a coordinate reference system (CRS), north up.

    `origin_easting`, `origin_northing`: CRS coordinates of the image's top-left corner (the corner of the
    top-left pixel, not its centre). `epsg`: the CRS's EPSG code. `pixel_scale`: (x, y) CRS units per pixel
    column and row (east per column, south per row), known from a GeoTIFF; None when the client gave only the
    origin: the CRS is then in metres and a tree lies at (origin_easting + x, origin_northing - y) with x, y
    its metres from the corner. `geographic`: the CRS is in degrees (longitude, latitude). `source`: "form"
    or "geotiff"; `raster_type` is the GeoTIFF's, kept for the record.
    """

    origin_easting: float
    origin_northing: float
    epsg: int
    pixel_scale: tuple[float, float] | None = None
    geographic: bool = False
    source: str = "form"
    raster_type: str | None = None

    def __post_init__(self) -> None:
        """Refuse an EPSG code outside the registry, a non-finite origin, or a zero or non-finite scale."""
        check_epsg(self.epsg)
        for name in ("origin_easting", "origin_northing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidGeoreferenceError(f"{name} must be a finite number, got {value!r}")
            if abs(value) > MAX_ORIGIN:
                raise InvalidGeoreferenceError(f"{name} must be within +-{MAX_ORIGIN:.0f} CRS units, got {value}")
        if self.pixel_scale is not None:
            check_pixel_scale(self.pixel_scale)
        if self.source not in ("form", "geotiff"):
            raise InvalidGeoreferenceError(f"source must be form or geotiff, got {self.source!r}")
        if self.raster_type is not None and self.raster_type not in RASTER_TYPES:
            raise InvalidGeoreferenceError(f"raster_type must be one of {', '.join(RASTER_TYPES)}")

    @property
    def crs_urn(self) -> str:
        """The CRS as an OGC URN, e.g. "urn:ogc:def:crs:EPSG::32633"."""
        return f"urn:ogc:def:crs:EPSG::{self.epsg}"
