import ast
from pathlib import Path

import treecore

FORBIDDEN = {"ray", "fastapi", "starlette", "azure", "pydantic", "pydantic_settings", "uvicorn"}


def test_exported_members_are_pinned():
    assert sorted(treecore.__all__) == treecore.__all__
    assert set(treecore.__all__) == {
        "BBox", "DetectionParams", "DetectionResult", "Georeference", "ImageTooLargeError",
        "InvalidGeoreferenceError", "InvalidImageError", "InvalidMeshError", "InvalidParametersError",
        "InvalidTreesError", "Tile", "TooManyTreesError", "Tree", "TreecoreError", "Window", "check_image_size",
        "decode_image", "detect_tile", "detect_trees", "detection_geojson", "draw_overlay", "halo_pixels",
        "merge_trees", "metres_per_pixel", "plan_tiles", "read_geotiff_georeference", "read_image_size",
        "resolve_georeference", "result_to_dict", "tree_to_dict",
    }  # fmt: skip
    for name in treecore.__all__:
        assert hasattr(treecore, name), name


def test_treecore_imports_no_serving_or_cloud_package():
    root = Path(treecore.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_treecore_reads_no_environment():
    root = Path(treecore.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "os.environ" not in text and "getenv" not in text, path
