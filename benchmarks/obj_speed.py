"""Scene writing speed, size and peak memory: a plain per-vertex Python OBJ loop against treecore's writers.

Each variant runs in its own subprocess (so peak memory is its own) and writes the same scene of
low-poly trees to a temporary file; MB/s = file size / wall time. The last row is the same scene as
binary glTF (one mesh, instanced with EXT_mesh_gpu_instancing), for its size and time against the OBJ.

    .venv/bin/python benchmarks/obj_speed.py               # 88,000 trees (the legacy's largest scene)
    .venv/bin/python benchmarks/obj_speed.py --trees 5000
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from treecore.basemodels import load_model
from treecore.gltf import write_glb
from treecore.objwriter import iter_obj_parts, write_obj
from treecore.types import Tree


def forest(n: int) -> list[Tree]:
    """n trees on a 6 m grid with diameters 2-7 m."""
    side = math.ceil(math.sqrt(n))
    return [Tree(i + 1, 6.0 * (i % side), 6.0 * (i // side), 2.0 + i % 6, 0, 0, 0) for i in range(n)]


def plain_loop(path: Path, trees: list[Tree]) -> None:
    """The naive writer: per tree, per vertex f-strings, normals and texcoords repeated per tree."""
    mesh, _ = load_model("tree_lowpoly")
    base = mesh.positions.tolist()
    normals = mesh.normals.tolist()
    uvs = mesh.texcoords.tolist()
    faces = mesh.corners.tolist()
    with open(path, "w") as out:
        out.write("mtllib scene.mtl\n")
        for k, tree in enumerate(trees):
            angle = 2 * math.pi * ((tree.id * 0.6180339887) % 1.0)
            c, s = math.cos(angle), math.sin(angle)
            out.write(f"o tree_{tree.id}\n")
            for x, y, z in base:
                px, pz = c * x + s * z, -s * x + c * z
                out.write(
                    f"v {px * tree.diameter + tree.x:.3f} {y * tree.diameter:.3f} {pz * tree.diameter + tree.y:.3f}\n"
                )
            for u, v in uvs:
                out.write(f"vt {u:.4f} {v:.4f}\n")
            for x, y, z in normals:
                out.write(f"vn {c * x + s * z:.4f} {y:.4f} {-s * x + c * z:.4f}\n")
            vo, to, no = k * len(base), k * len(uvs), k * len(normals)
            for face in faces:
                out.write("f " + " ".join(f"{v + vo + 1}/{t + to + 1}/{n + no + 1}" for v, t, n in face) + "\n")


def ours(path: Path, trees: list[Tree]) -> None:
    """treecore.objwriter.write_obj (parts of 2,000 trees, streamed)."""
    mesh, mtl = load_model("tree_lowpoly")
    write_obj(path, trees, mesh, mtl_text=mtl)


def ours_no_fsync(path: Path, trees: list[Tree]) -> None:
    """The same parts as write_obj, written like the plain loop (no temp file, no fsync): formatting alone."""
    mesh, _ = load_model("tree_lowpoly")
    with open(path, "wb") as out:
        for part in iter_obj_parts(trees, mesh, mtl_name="scene.mtl"):
            out.write(part)


def glb(path: Path, trees: list[Tree]) -> None:
    """treecore.gltf.write_glb: the base mesh once, one instance transform per tree."""
    mesh, mtl = load_model("tree_lowpoly")
    path.write_bytes(write_glb(trees, mesh, mtl_text=mtl))


VARIANTS = {"plain": plain_loop, "ours": ours, "ours_no_fsync": ours_no_fsync, "glb": glb}


def _child(variant: str, n: int) -> None:
    trees = forest(n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scene.obj"
        started = time.perf_counter()
        VARIANTS[variant](path, trees)
        seconds = time.perf_counter() - started
        size = path.stat().st_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "bytes": size, "peak_mb": peak_mb}))


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=88_000)
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.trees)
        return 0
    rows = {}
    for variant in VARIANTS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--trees", str(args.trees)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows[variant] = json.loads(done.stdout)
    print(f"{args.trees:,} low-poly trees, one core each, {time.strftime('%Y-%m-%d')}")
    print("| writer | seconds | file MB | MB/s | peak memory MB | speed vs plain loop |")
    print("|---|---|---|---|---|---|")
    plain_rate = rows["plain"]["bytes"] / rows["plain"]["seconds"]
    labels = (
        ("plain", "plain per-vertex Python loop"),
        ("ours", "treecore write_obj (temp file, fsync, rename)"),
        ("ours_no_fsync", "treecore iter_obj_parts written like the plain loop"),
        ("glb", "treecore write_glb (binary glTF, instanced)"),
    )
    for variant, label in labels:
        r = rows[variant]
        rate = r["bytes"] / r["seconds"]
        print(
            f"| {label} | {r['seconds']:.2f} | {r['bytes'] / 1e6:.1f} | {rate / 1e6:.1f} | {r['peak_mb']:.0f} | "
            f"{rate / plain_rate:.1f}x MB/s, {rows['plain']['seconds'] / r['seconds']:.1f}x time |"
        )
    obj, gl = rows["ours"], rows["glb"]
    print(
        f"GLB vs OBJ: {gl['bytes'] / 1e6:.2f} MB vs {obj['bytes'] / 1e6:.0f} MB "
        f"({obj['bytes'] / gl['bytes']:.0f}x smaller), {gl['seconds']:.2f} s vs {obj['seconds']:.2f} s to write"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
