"""treecore: tree detection in aerial images, pure numpy + OpenCV (no serving or cloud imports)."""

from treecore.detect import detect_tile, detect_trees, metres_per_pixel
from treecore.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidMeshError,
    InvalidParametersError,
    InvalidTreesError,
    TooManyTreesError,
    TreecoreError,
)
from treecore.imageio import check_image_size, decode_image, read_image_size
from treecore.merge import merge_trees
from treecore.overlay import draw_overlay
from treecore.report import result_to_dict, tree_to_dict
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import BBox, DetectionParams, DetectionResult, Tile, Tree, Window

__version__ = "0.1.0"

__all__ = [
    "BBox",
    "DetectionParams",
    "DetectionResult",
    "ImageTooLargeError",
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
    "draw_overlay",
    "halo_pixels",
    "merge_trees",
    "metres_per_pixel",
    "plan_tiles",
    "read_image_size",
    "result_to_dict",
    "tree_to_dict",
]
