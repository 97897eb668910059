"""treecore: tree detection in aerial images, pure numpy + OpenCV (no serving or cloud imports)."""

from treecore.detect import detect_tile, detect_trees, metres_per_pixel
from treecore.errors import (
    ImageTooLargeError,
    InvalidGeoreferenceError,
    InvalidImageError,
    InvalidMeshError,
    InvalidParametersError,
    InvalidTreesError,
    TooManyTreesError,
    TreecoreError,
)
from treecore.geo import detection_geojson, resolve_georeference
from treecore.geotiff import read_geotiff_georeference
from treecore.imageio import check_image_size, decode_image, read_image_size
from treecore.merge import merge_trees
from treecore.overlay import draw_overlay
from treecore.report import result_to_dict, tree_to_dict
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import BBox, DetectionParams, DetectionResult, Georeference, Tile, Tree, Window

__version__ = "0.1.0"

__all__ = [
    "BBox",
    "DetectionParams",
    "DetectionResult",
    "Georeference",
    "ImageTooLargeError",
    "InvalidGeoreferenceError",
    "InvalidImageError",
    "InvalidMeshError",
    "InvalidParametersError",
    "InvalidTreesError",
    "Tile",
    "TooManyTreesError",
    "Tree",
    "TreecoreError",
    "Window",
    "check_image_size",
    "decode_image",
    "detect_tile",
    "detect_trees",
    "detection_geojson",
    "draw_overlay",
    "halo_pixels",
    "merge_trees",
    "metres_per_pixel",
    "plan_tiles",
    "read_geotiff_georeference",
    "read_image_size",
    "resolve_georeference",
    "result_to_dict",
    "tree_to_dict",
]
