"""Make the project's base tree meshes (OBJ + MTL): deterministic, numpy only.

    python tree_model/make_models.py            # writes tree_model/models/*.obj and *.mtl

Each model: crown diameter 1, base at the origin, Y up; a trunk (material `bark`) and a crown
(material `foliage`), with vertex normals and texture coordinates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MODELS = Path(__file__).parent / "models"
MTL = """# Base tree materials (Wavefront MTL). Kd: diffuse colour, linear RGB.
newmtl bark
Ka 0.000 0.000 0.000
Kd 0.400 0.260 0.130
Ks 0.000 0.000 0.000
d 1.0
illum 1

newmtl foliage
Ka 0.000 0.000 0.000
Kd 0.180 0.450 0.150
Ks 0.000 0.000 0.000
d 1.0
illum 1
"""


def _ring(radius: float, y: float, sides: int) -> np.ndarray:
    angle = 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(angle), np.full(sides, y), radius * np.sin(angle)], axis=1)


def _surface(profile: list[tuple[float, float]], sides: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """A surface of revolution: rings at (radius, y); returns positions, texcoords, quads/triangles."""
    rings = [_ring(r, y, sides) for r, y in profile]
    positions = np.concatenate(rings)
    uv = np.array([[s / sides, i / (len(profile) - 1)] for i in range(len(profile)) for s in range(sides)])
    faces = []
    for i in range(len(profile) - 1):
        for s in range(sides):
            a, b = i * sides + s, i * sides + (s + 1) % sides
            c, d = b + sides, a + sides
            if profile[i + 1][0] == 0:  # apex: one triangle
                faces.append([a, d, b])
            else:
                faces.append([a, d, c, b])
    return positions, uv, faces


def _normals(positions: np.ndarray, faces: list[list[int]]) -> np.ndarray:
    normals = np.zeros_like(positions)
    for face in faces:
        p = positions[face]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        normals[face] += n
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])
    return normals


def make_obj(name: str, sides: int, trunk: list[tuple[float, float]], crown: list[tuple[float, float]]) -> str:
    """The OBJ text of one tree: trunk and crown as surfaces of revolution."""
    lines = [
        f"# {name}: base tree for tree-detection scenes. Crown diameter 1, base at origin, Y up.",
        "# Made by tree_model/make_models.py; do not edit by hand.",
        f"mtllib {name}.mtl",
        f"o {name}",
    ]
    offset = 0
    parts = []
    for material, profile in (("bark", trunk), ("foliage", crown)):
        positions, uv, faces = _surface(profile, sides)
        normals = _normals(positions, faces)
        parts.append((material, positions, uv, normals, [[i + offset for i in f] for f in faces]))
        offset += len(positions)
    for _, positions, _, _, _ in parts:
        lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in positions.tolist()]
    for _, _, uv, _, _ in parts:
        lines += [f"vt {u:.4f} {v:.4f}" for u, v in uv.tolist()]
    for _, _, _, normals, _ in parts:
        lines += [f"vn {x:.4f} {y:.4f} {z:.4f}" for x, y, z in normals.tolist()]
    for material, _, _, _, faces in parts:
        lines += [f"usemtl {material}", "s 1"]
        lines += ["f " + " ".join(f"{i + 1}/{i + 1}/{i + 1}" for i in face) for face in faces]
    return "\n".join(lines) + "\n"


def models() -> dict[str, str]:
    """Every base model's OBJ text by name."""
    low_trunk = [(0.06, 0.0), (0.05, 0.45)]
    low_crown = [(0.0, 0.35), (0.5, 0.55), (0.35, 1.05), (0.0, 1.5)]
    detailed_trunk = [(0.07, 0.0), (0.06, 0.2), (0.05, 0.45), (0.04, 0.6)]
    heights = np.linspace(0.3, 1.6, 12)
    radii = 0.5 * np.sin(np.pi * (heights - 0.3) / 1.3) ** 0.8
    detailed_crown = [(0.0, 0.3)] + [(float(r), float(h)) for r, h in zip(radii[1:-1], heights[1:-1], strict=True)]
    detailed_crown += [(0.0, 1.6)]
    return {
        "tree_lowpoly": make_obj("tree_lowpoly", 6, low_trunk, low_crown),
        "tree_detailed": make_obj("tree_detailed", 24, detailed_trunk, detailed_crown),
    }


def main() -> int:
    """Write every model and its MTL into tree_model/models."""
    MODELS.mkdir(parents=True, exist_ok=True)
    for name, text in models().items():
        (MODELS / f"{name}.obj").write_text(text)
        (MODELS / f"{name}.mtl").write_text(MTL)
        print(f"wrote {name}.obj ({text.count(chr(10) + 'v ')} vertices) and {name}.mtl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
