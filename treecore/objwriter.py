"""Merged OBJ scenes: one base mesh placed, scaled and turned per tree, written in independent parts.

Every tree has the same vertex count, so the vertex offset of any range of trees is known before it is
written: parts are formatted independently (in parallel, if the caller likes) and concatenated in order.
Texture coordinates are written once and shared; normals once per rotation step, so only a face's vertex
numbers vary from tree to tree (absolute indices: some readers, trimesh among them, resolve negative ones
against the end of the file instead of the current position).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from treecore.files import atomic_writer
from treecore.mesh import Mesh
from treecore.types import Tree

#: Trees are turned about Y by one of this many angles, picked from the tree id.
ROTATION_STEPS = 64
#: Trees formatted per part by default.
TREES_PER_PART = 2000


def rotation_step(tree_id: int) -> int:
    """The rotation step of a tree: a fixed hash of its id (same input, same file).

    Args:
        tree_id: the tree's id.

    Returns:
        An integer in [0, ROTATION_STEPS).
    """
    return ((tree_id * 2654435761) & 0xFFFFFFFF) * ROTATION_STEPS >> 32


def rotation_steps(tree_ids: np.ndarray) -> np.ndarray:
    """`rotation_step` of many ids at once.

    Args:
        tree_ids: (K,) int64 ids (below 2**53).

    Returns:
        (K,) int64 steps in [0, ROTATION_STEPS).
    """
    hashed = (tree_ids.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return ((hashed * np.uint64(ROTATION_STEPS)) >> np.uint64(32)).astype(np.int64)


def _rotations() -> np.ndarray:
    angles = 2 * math.pi * np.arange(ROTATION_STEPS) / ROTATION_STEPS
    c, s = np.cos(angles), np.sin(angles)
    zero, one = np.zeros_like(c), np.ones_like(c)
    # Rotation about Y: x' = c x + s z, z' = -s x + c z.
    return np.stack([np.stack([c, zero, s], 1), np.stack([zero, one, zero], 1), np.stack([-s, zero, c], 1)], 1)


def obj_header(mesh: Mesh, *, mtl_name: str) -> bytes:
    """The scene's first lines: comment, `mtllib`, the shared texcoords and the rotated normals.

    Args:
        mesh: the normalised base mesh.
        mtl_name: the MTL file name written next to the OBJ.

    Returns:
        UTF-8 bytes.
    """
    parts = [
        f"# Tree scene: base mesh {mesh.name}, one object per tree. X east, Y up, Z south; metres.\n",
        f"mtllib {mtl_name}\n",
    ]
    if len(mesh.texcoords):
        parts.append(("vt %.4f %.4f\n" * len(mesh.texcoords)) % tuple(mesh.texcoords.ravel().tolist()))
    if len(mesh.normals):
        turned = np.einsum("kij,nj->kni", _rotations(), mesh.normals).reshape(-1)
        parts.append(("vn %.4f %.4f %.4f\n" * (len(mesh.normals) * ROTATION_STEPS)) % tuple(turned.tolist()))
    return "".join(parts).encode()


def _tree_table(trees: Sequence[Tree]) -> tuple[np.ndarray, np.ndarray]:
    # (K,) int64 ids and (K, 3) float64 x, y, diameter of the trees.
    ids = np.array([t.id for t in trees], np.int64)
    xyd = np.array([(t.x, t.y, t.diameter) for t in trees], np.float64).reshape(-1, 3)
    return ids, xyd


def _placed(ids: np.ndarray, xyd: np.ndarray, mesh: Mesh) -> np.ndarray:
    # placed_positions from the tree table: the base mesh turned once per rotation step, then per tree a
    # lookup, a scale and a shift (cheaper than a 3 x 3 product per vertex).
    turned = np.einsum("sij,vj->svi", _rotations(), mesh.positions)  # (ROTATION_STEPS, V, 3)
    shift = np.zeros((len(ids), 1, 3))
    shift[:, 0, 0], shift[:, 0, 2] = xyd[:, 0], xyd[:, 1]
    placed: np.ndarray = turned[rotation_steps(ids)] * xyd[:, 2, None, None] + shift
    return placed


def placed_positions(trees: Sequence[Tree], mesh: Mesh) -> np.ndarray:
    """World positions of every tree's vertices: scaled to its crown, turned, moved to (x, 0, y).

    The base mesh has crown diameter 1, so a uniform scale by the crown diameter gives the crown its
    width and the tree a height of (base mesh height) x diameter. X = x (east), Z = y (south), Y up.

    Args:
        trees: the trees (metres).
        mesh: the normalised base mesh.

    Returns:
        (K, V, 3) float64 metres.
    """
    return _placed(*_tree_table(trees), mesh)


# Fast text formatting. Every number is written into a fixed-width byte field, right-aligned and padded on the
# left with NUL bytes; a part's text is one (trees, bytes) matrix of such fields and fixed text, and a single
# bytes.translate pass deletes the NULs at the end (faster than numpy's boolean compaction here). Digits come
# four at a time from a lookup table of 4-byte words (gathering uint32 is much faster than one division per
# digit); the tables are little-endian uint32 whose bytes in memory are the text.

#: Rows 0-9999: the number right-aligned, NUL-padded (a number's leading word); rows 10000-19999: zero-padded
#: (the words after it); row 20000: empty (the words before it).
_DIGIT_WORDS = np.frombuffer(
    b"".join([b"%4d" % i for i in range(10_000)]).replace(b" ", b"\0")
    + b"".join(b"%04d" % i for i in range(10_000))
    + b"\0" * 4,
    "<u4",
)
#: The decimals of a value with 3 decimals: ".000" to ".999".
_DECIMAL_WORDS = np.frombuffer(b"".join(b".%03d" % i for i in range(1000)), "<u4")


def _words_needed(largest: int) -> int:
    # Four-digit words needed to write the non-negative integer `largest` (0 needs one).
    return max(1, math.ceil(len(str(largest)) / 4))


def _digit_words(numbers: np.ndarray, words: int) -> np.ndarray:
    """Decimal text of non-negative integers, right-aligned in `words` 4-byte words, NUL-padded on the left.

    Args:
        numbers: any shape, int64, each below 10000**words.
        words: words per number.

    Returns:
        numbers.shape + (words,) little-endian uint32 whose bytes are the text, the most significant word first.
    """
    out = np.empty((*numbers.shape, words), "<u4")
    leading = np.zeros(numbers.shape, np.int64)  # the word holding each number's first digit (0: the last word)
    for j in range(1, words):
        leading += numbers >= 10_000**j
    rest = numbers
    for j in range(words):  # j = 0 is the least significant word
        digits = rest
        if j < words - 1:
            rest, digits = np.divmod(rest, 10_000)
        if words > 1:
            digits = np.where(leading == j, digits, np.where(leading > j, digits + 10_000, 20_000))
        out[..., words - 1 - j] = _DIGIT_WORDS[digits]
    return out


def _thousandths(values: np.ndarray) -> np.ndarray:
    """|value| in thousandths, rounded exactly as "%.3f" rounds (to nearest, ties to even, on the exact value).

    Args:
        values: float64 metres, any shape, finite and below 1e15 in size.

    Returns:
        int64 array of the same shape, non-negative.

    Raises:
        ValueError: a value is not finite or too large.
    """
    scaled = values * 1000.0
    largest = float(np.abs(scaled).max(initial=0.0))
    if not largest < 1e18:  # also catches NaN
        raise ValueError(f"cannot write positions that are not finite or not below 1e15 m (got {largest / 1000:g})")
    rounded = np.rint(scaled)
    # np.rint rounds the product, which is already rounded to a double; "%.3f" rounds the exact value. They can
    # disagree only where the product is within its rounding error of a half: redo those few with "%.3f" itself.
    near_half = np.abs(scaled - rounded) >= 0.5 - 2 * np.spacing(largest)
    thousandths = np.abs(rounded).astype(np.int64)
    if near_half.any():
        exact = [abs(int(("%.3f" % v).replace(".", ""))) for v in values[near_half].tolist()]  # noqa: UP031
        thousandths[near_half] = exact
    return thousandths


def _vertex_records(positions: np.ndarray) -> np.ndarray:
    """One fixed-width record per `v x y z` line, numbers as "%.3f" writes them, NUL-padded.

    Args:
        positions: (N, 3) float64 metres (see `_thousandths` for the limits).

    Returns:
        (N,) structured array; its bytes with the NULs deleted are the lines.
    """
    whole, decimals = np.divmod(_thousandths(positions), 1000)
    words = _words_needed(int(whole.max(initial=0)))
    number = np.dtype([("space", "u1"), ("sign", "u1"), ("whole", "<u4", (words,)), ("decimals", "<u4")])
    records = np.empty(len(positions), [("v", "u1"), ("numbers", number, (3,)), ("newline", "u1")])
    records["v"] = ord("v")
    records["newline"] = ord("\n")
    numbers = records["numbers"]  # (N, 3) view
    numbers["space"] = ord(" ")
    numbers["sign"] = np.where(np.signbit(positions), ord("-"), 0)  # like "%.3f": -0.0001 is "-0.000"
    numbers["whole"] = _digit_words(whole, words)
    numbers["decimals"] = _DECIMAL_WORDS[decimals]
    return records


def vertex_lines(positions: np.ndarray) -> tuple[bytes, np.ndarray]:
    """`v x y z` lines with the same text as "v %.3f %.3f %.3f", formatted with numpy.

    Args:
        positions: (N, 3) float64 metres, finite and below 1e15 m in size.

    Returns:
        (ASCII text of N lines, (N,) int64 byte offset of each line).

    Raises:
        ValueError: a position is not finite or too large.
    """
    matrix = _vertex_records(positions).view(np.uint8).reshape(len(positions), -1)
    starts = np.zeros(len(positions), np.int64)
    np.cumsum(np.count_nonzero(matrix, axis=1)[:-1], out=starts[1:])
    return matrix.tobytes().translate(None, b"\0"), starts


_FACE_CACHE: dict[tuple[int, int], tuple[Mesh, tuple[np.ndarray, np.dtype[np.void], np.ndarray]]] = {}


def _cached_face_templates(mesh: Mesh, words: int) -> tuple[np.ndarray, np.dtype[np.void], np.ndarray]:
    # Parts of one scene share the mesh object: make its templates once (a few ms each time otherwise).
    key = (id(mesh), words)
    cached = _FACE_CACHE.get(key)
    if cached is None or cached[0] is not mesh:
        if len(_FACE_CACHE) > 16:
            _FACE_CACHE.clear()
        cached = _FACE_CACHE[key] = (mesh, _face_templates(mesh, words))
    return cached[1]


def _face_templates(mesh: Mesh, words: int) -> tuple[np.ndarray, np.dtype[np.void], np.ndarray]:
    """One tree's `usemtl` and face lines as byte templates, one per rotation step, with open vertex numbers.

    Normals are all in the header, so a rotation step's normal numbers are fixed and baked into its template
    (NUL-padded to one width, so that every template has the same layout); texture coordinates are shared and
    baked too. Only the vertex numbers (absolute, 1-based) are left open: a slot of `words` 4-byte words each.

    Args:
        mesh: the base mesh.
        words: 4-byte words per vertex number.

    Returns:
        (templates, slots, corners): (S, L) uint8, S = ROTATION_STEPS (one when the mesh has no normals); a
        structured dtype of itemsize L with one (words,) "<u4" field per slot at its byte offset, in order;
        (C,) int64 0-based base-mesh vertex of each slot.
    """
    has_vt = bool((mesh.corners[:, :, 1] >= 0).all())
    has_vn = bool((mesh.corners[:, :, 2] >= 0).all())
    n_normals = len(mesh.normals)
    steps = ROTATION_STEPS if has_vn else 1
    normal_width = len(str(steps * n_normals))
    open_slot = b"\0" * (4 * words)
    texts = [bytearray() for _ in range(steps)]
    offsets: list[int] = []
    corners: list[int] = []
    for material in range(len(mesh.material_names)):
        chosen = np.nonzero(mesh.materials == material)[0]
        if chosen.size == 0:
            continue
        for step in range(steps):
            texts[step] += f"usemtl {mesh.material_names[material]}\n".encode()
        for face in chosen:
            for step in range(steps):
                text = texts[step]
                text += b"f"
                for _, vt, vn in mesh.corners[face]:
                    text += b" "
                    if step == 0:
                        offsets.append(len(text))
                    text += open_slot
                    if has_vt or has_vn:
                        text += b"/%d" % (vt + 1) if has_vt else b"/"
                    if has_vn:
                        text += b"/" + str(int(vn) + step * n_normals + 1).rjust(normal_width, "\0").encode()
                text += b"\n"
            corners.extend(int(v) for v in mesh.corners[face, :, 0])
    templates = np.array([np.frombuffer(bytes(text), np.uint8) for text in texts]).reshape(steps, -1)
    names = [f"slot{i}" for i in range(len(offsets))]
    field = (np.dtype("<u4"), (words,))
    slots = np.dtype(
        {"names": names, "formats": [field] * len(names), "offsets": offsets, "itemsize": templates.shape[1]}
    )
    return templates, slots, np.array(corners, np.int64)


def format_obj_part(trees: Sequence[Tree], mesh: Mesh, *, first_index: int) -> bytes:
    """The OBJ lines of a range of trees, independent of every other range.

    All numbers are formatted by numpy: each tree is one row of a byte matrix (its `o` line, its vertex lines
    and its faces, numbers NUL-padded at fixed columns), and one pass deletes the NULs.

    Args:
        trees: the trees of this part, in scene order.
        mesh: the normalised base mesh.
        first_index: the scene position of trees[0] (0-based): its vertices are numbered from
            first_index * V + 1 (absolute indices, which every OBJ reader resolves the same way).

    Returns:
        UTF-8 bytes: per tree an `o tree_<id>` object, its vertices and its faces.

    Raises:
        ValueError: a placed vertex is not finite or not below 1e15 m in size.
    """
    if not trees:
        return b""
    ids, xyd = _tree_table(trees)
    count, n_vertices = len(trees), len(mesh.positions)
    vertices = _vertex_records(_placed(ids, xyd, mesh).reshape(-1, 3)).view(np.uint8).reshape(count, -1)
    number_words = _words_needed((first_index + count) * n_vertices)
    templates, slots, corners = _cached_face_templates(mesh, number_words)
    id_words = _words_needed(int(np.abs(ids).max()))

    name_width = len("o tree_-\n") + 4 * id_words
    faces_start = name_width + vertices.shape[1]
    row = np.empty((count, faces_start + templates.shape[1]), np.uint8)
    row[:, :7] = np.frombuffer(b"o tree_", np.uint8)
    row[:, 7] = np.where(ids < 0, ord("-"), 0)
    row[:, 8 : name_width - 1] = _digit_words(np.abs(ids), id_words).view(np.uint8).reshape(count, -1)
    row[:, name_width - 1] = ord("\n")
    row[:, name_width:faces_start] = vertices
    faces = row[:, faces_start:]
    faces[:] = templates[rotation_steps(ids) if len(templates) > 1 else 0]
    if len(corners):
        # The part's vertex numbers as text (tree k's are rows k * V to k * V + V - 1), then each tree's in
        # slot order. Viewed through `slots`, a face row has one field per slot, and numpy copies every slot of
        # every tree from a packed array in one call.
        numbers = np.arange(first_index * n_vertices + 1, (first_index + count) * n_vertices + 1, dtype=np.int64)
        number_text = _digit_words(numbers, number_words).view(f"V{4 * number_words}")[:, 0]
        packed = np.dtype([("", "<u4", (number_words,))] * len(corners))  # the same fields, back to back
        text = number_text[np.arange(count)[:, None] * n_vertices + corners].view(packed)
        faces.view(slots)[:, 0] = text[:, 0]  # structured assignment: field by field, in order
    return row.tobytes().translate(None, b"\0")


def iter_obj_parts(
    trees: Sequence[Tree], mesh: Mesh, *, mtl_name: str, trees_per_part: int = TREES_PER_PART
) -> Iterator[bytes]:
    """The whole scene as consecutive byte parts (the first is the header), formatted one at a time.

    Args:
        trees: every tree of the scene.
        mesh: the normalised base mesh.
        mtl_name: the MTL file name.
        trees_per_part: trees per part (memory grows with this, not with the scene).

    Yields:
        Bytes to concatenate in order.
    """
    yield obj_header(mesh, mtl_name=mtl_name)
    for start in range(0, len(trees), trees_per_part):
        yield format_obj_part(trees[start : start + trees_per_part], mesh, first_index=start)


def default_mtl(mesh: Mesh) -> str:
    """An MTL with a plain grey-green material for each material the mesh uses (when it brings none).

    Args:
        mesh: the base mesh.

    Returns:
        MTL text.
    """
    return "".join(f"newmtl {name}\nKd 0.300 0.450 0.250\nillum 1\n\n" for name in mesh.material_names)


def write_obj(path: str | os.PathLike[str], trees: Sequence[Tree], mesh: Mesh, *, mtl_text: str) -> tuple[Path, Path]:
    """Write scene.obj and scene.mtl next to each other, each atomically and durably (treecore.files).

    Both are written in full before either is renamed into place, so a failure while formatting leaves
    both files as they were.

    Args:
        path: the .obj path; the MTL takes the same name with .mtl.
        trees: the trees.
        mesh: the normalised base mesh.
        mtl_text: the materials.

    Returns:
        (obj path, mtl path). On error nothing is left behind.
    """
    obj_path = Path(path)
    mtl_path = obj_path.with_suffix(".mtl")
    with atomic_writer(obj_path) as obj, atomic_writer(mtl_path) as mtl:
        mtl.write(mtl_text.encode())
        for part in iter_obj_parts(trees, mesh, mtl_name=mtl_path.name):
            obj.write(part)
    return obj_path, mtl_path
