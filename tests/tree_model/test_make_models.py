import importlib.util
import sys
from pathlib import Path

from treecore.mesh import load_obj_file

ROOT = Path(__file__).parents[2] / "tree_model"
spec = importlib.util.spec_from_file_location("make_models", ROOT / "make_models.py")
make_models = importlib.util.module_from_spec(spec)
sys.modules["make_models"] = make_models
spec.loader.exec_module(make_models)


def test_committed_models_are_what_the_script_makes():
    for name, text in make_models.models().items():
        assert (ROOT / "models" / f"{name}.obj").read_text() == text, f"run tree_model/make_models.py ({name})"
        assert (ROOT / "models" / f"{name}.mtl").read_text() == make_models.MTL


def test_models_are_unit_trees_with_normals_uv_and_materials():
    counts = {}
    for name in ("tree_lowpoly", "tree_detailed"):
        mesh = load_obj_file(ROOT / "models" / f"{name}.obj")
        low, high = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
        assert abs(max(high[0] - low[0], high[2] - low[2]) - 1.0) < 0.01  # crown diameter 1
        assert low[1] == 0.0  # base at the origin, Y up
        assert mesh.material_names == ("bark", "foliage") and mesh.mtllib == f"{name}.mtl"
        assert (mesh.corners >= 0).all()  # every corner has a texcoord and a normal
        counts[name] = len(mesh.positions)
    assert 10 <= counts["tree_lowpoly"] < 100 and 100 <= counts["tree_detailed"] < 1000
