"""The `model` subcommand: a tree list (detection JSON) in, one merged OBJ + MTL scene out."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from treecore.basemodels import DEFAULT_MODEL, DEFAULT_MODELS_DIR, load_model
from treecore.errors import TreecoreError
from treecore.files import read_input
from treecore.mesh import load_obj_file, normalised
from treecore.objwriter import default_mtl, write_obj
from treecore.treesio import parse_trees

NAME = "model"
HELP = "write a merged 3D scene (OBJ + MTL) for the trees of a detection JSON"
DEFAULT_MAX_TREES = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's arguments.

    Args:
        parser: the subcommand's parser.
    """
    parser.add_argument("trees", type=Path, help="detection JSON (the detect output) or a list of trees")
    parser.add_argument("-o", "--output", type=Path, required=True, help="scene .obj (the .mtl goes next to it)")
    parser.add_argument("--base", default=DEFAULT_MODEL, help="base model name, or a path to your own .obj")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="folder of named base models")
    parser.add_argument("--max-trees", type=int, default=DEFAULT_MAX_TREES)


def run(args: argparse.Namespace) -> int:
    """Write the scene atomically and print a one-line summary.

    Args:
        args: parsed arguments.

    Returns:
        0 on success. Bad input raises a TreecoreError before anything is written.
    """
    started = time.perf_counter()
    try:
        payload = json.loads(read_input(args.trees))
    except ValueError as exc:
        raise TreecoreError(f"{args.trees} is not valid JSON: {exc}") from exc
    trees = parse_trees(payload, max_trees=args.max_trees)
    if args.base.endswith(".obj") or "/" in args.base:
        mesh = normalised(load_obj_file(args.base))
        mtl = Path(args.base).with_suffix(".mtl")
        mtl_text = mtl.read_text() if mtl.is_file() else default_mtl(mesh)
    else:
        mesh, mtl_text = load_model(args.base, args.models_dir)
    obj, mtl_path = write_obj(args.output, trees, mesh, mtl_text=mtl_text)
    size_mb = obj.stat().st_size / 1e6
    print(
        f"{obj.name} + {mtl_path.name}: {len(trees)} trees of {mesh.name} "
        f"({len(trees) * len(mesh.positions):,} vertices, {size_mb:.1f} MB) in {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return 0
