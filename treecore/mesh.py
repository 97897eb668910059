"""Base tree meshes: a Wavefront OBJ reader that accepts any valid file and names the bad line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from treecore.errors import InvalidMeshError

_IGNORED = {"o", "g", "s", "l", "p", "vp", "cstype", "deg", "bmat", "step", "curv", "curv2", "surf", "mg"}


@dataclass(frozen=True)
class Mesh:
    """A triangulated mesh with per-corner indices, grouped by material.

    positions: (V, 3) float64; normals: (N, 3) float64; texcoords: (T, 2) float64.
    corners: (F, 3, 3) int64 [v, vt, vn] per triangle corner, 0-based, -1 where the file gave none.
    materials: (F,) index into `material_names` per triangle.
    mtllib: the MTL file the OBJ names (or None).
    """

    name: str
    positions: np.ndarray
    normals: np.ndarray
    texcoords: np.ndarray
    corners: np.ndarray
    materials: np.ndarray
    material_names: tuple[str, ...]
    mtllib: str | None


def _index(token: str, count: int, kind: str, line_no: int, line: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise InvalidMeshError(f"line {line_no}: {kind} index {token!r} is not a whole number: {line!r}") from None
    resolved = value - 1 if value > 0 else count + value
    if value == 0 or not 0 <= resolved < count:
        raise InvalidMeshError(f"line {line_no}: {kind} index {value} out of range (mesh has {count}): {line!r}")
    return resolved


def _floats(parts: list[str], least: int, most: int, line_no: int, line: str) -> list[float]:
    if not least <= len(parts) <= most:
        raise InvalidMeshError(f"line {line_no}: expected {least} to {most} numbers: {line!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidMeshError(f"line {line_no}: not a number: {line!r}") from None
    if not np.isfinite(values).all():
        raise InvalidMeshError(f"line {line_no}: non-finite number: {line!r}")
    return values


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def load_obj(text: str, *, name: str = "mesh") -> Mesh:
    """Parse OBJ text: v, vn, vt, f (v, v/vt, v//vn, v/vt/vn; negative indices), usemtl, mtllib.

    Polygons are triangulated as fans; o/g/s and other statements are accepted and ignored.

    Args:
        text: the OBJ file's text.
        name: a name for messages and the Mesh.

    Returns:
        The Mesh.

    Raises:
        InvalidMeshError: a malformed line (the message names its number), or no faces at all.
    """
    positions: list[list[float]] = []
    normals: list[list[float]] = []
    texcoords: list[list[float]] = []
    corners: list[list[list[int]]] = []
    materials: list[int] = []
    material_names: list[str] = []
    current = -1
    mtllib = None
    for line_no, line in _logical_lines(text):
        parts = line.split()
        if not parts:
            continue
        key, args = parts[0], parts[1:]
        if key == "v":
            positions.append(_floats(args, 3, 7, line_no, line)[:3])  # x y z [w] or x y z r g b
        elif key == "vn":
            normals.append(_floats(args, 3, 3, line_no, line))
        elif key == "vt":
            texcoords.append((_floats(args, 1, 3, line_no, line) + [0.0])[:2])
        elif key == "f":
            if len(args) < 3:
                raise InvalidMeshError(f"line {line_no}: a face needs at least 3 corners: {line!r}")
            polygon = []
            for corner in args:
                fields = corner.split("/")
                if len(fields) > 3 or fields[0] == "":
                    raise InvalidMeshError(f"line {line_no}: bad face corner {corner!r}: {line!r}")
                v = _index(fields[0], len(positions), "vertex", line_no, line)
                vt = (
                    _index(fields[1], len(texcoords), "texture", line_no, line) if len(fields) > 1 and fields[1] else -1
                )
                vn = _index(fields[2], len(normals), "normal", line_no, line) if len(fields) > 2 and fields[2] else -1
                polygon.append([v, vt, vn])
            if current < 0:
                material_names.append("default")
                current = len(material_names) - 1
            for i in range(1, len(polygon) - 1):
                corners.append([polygon[0], polygon[i], polygon[i + 1]])
                materials.append(current)
        elif key == "usemtl":
            if len(args) != 1:
                raise InvalidMeshError(f"line {line_no}: usemtl takes one material name: {line!r}")
            if args[0] not in material_names:
                material_names.append(args[0])
            current = material_names.index(args[0])
        elif key == "mtllib":
            if not args:
                raise InvalidMeshError(f"line {line_no}: mtllib needs a file name: {line!r}")
            mtllib = " ".join(args)
        elif key not in _IGNORED:
            raise InvalidMeshError(f"line {line_no}: unknown statement {key!r}: {line!r}")
    if not corners:
        raise InvalidMeshError(f"{name}: the OBJ has no faces")
    return Mesh(
        name=name,
        positions=np.array(positions, np.float64).reshape(-1, 3),
        normals=np.array(normals, np.float64).reshape(-1, 3),
        texcoords=np.array(texcoords, np.float64).reshape(-1, 2),
        corners=np.array(corners, np.int64).reshape(-1, 3, 3),
        materials=np.array(materials, np.int64),
        material_names=tuple(material_names),
        mtllib=mtllib,
    )


def load_obj_file(path: str | Path) -> Mesh:
    """Read and parse an OBJ file; the mesh is named after the file.

    Args:
        path: the .obj file.

    Returns:
        The Mesh.

    Raises:
        InvalidMeshError: unreadable or malformed.
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidMeshError(f"cannot read {target.name}: {exc}") from exc
    return load_obj(text, name=target.stem)


def normalised(mesh: Mesh) -> Mesh:
    """The mesh scaled to crown diameter 1 (its wider X/Z extent), base at y=0, centred in X/Z.

    Args:
        mesh: any mesh.

    Returns:
        A new Mesh (normals unchanged: uniform scale and translation keep their directions).
    """
    low, high = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    width = max(high[0] - low[0], high[2] - low[2])
    if width <= 0:
        raise InvalidMeshError(f"{mesh.name}: the mesh has no horizontal extent")
    centre = np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
    return Mesh(
        mesh.name,
        (mesh.positions - centre) / width,
        mesh.normals,
        mesh.texcoords,
        mesh.corners,
        mesh.materials,
        mesh.material_names,
        mesh.mtllib,
    )
