"""Base tree models by name: a folder of OBJ + MTL pairs (the project's own in tree_model/models)."""

from __future__ import annotations

from pathlib import Path

from treecore.errors import UnknownModelError
from treecore.files import MAX_NAME_LENGTH, is_plain_name
from treecore.mesh import Mesh, load_obj_file, normalised
from treecore.objwriter import default_mtl

#: The models made by tree_model/make_models.py, next to the package in a checkout or an image.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "tree_model" / "models"
DEFAULT_MODEL = "tree_lowpoly"
#: The files of a base model, by extension.
MODEL_FILES = ("obj", "mtl")
#: Longest model name: its files, <name>.obj and <name>.mtl, are plain file names (treecore.files).
MAX_MODEL_NAME_LENGTH = MAX_NAME_LENGTH - len(".obj")


def check_model_name(name: str) -> str:
    """A model name whose files are plain file names (treecore.files.is_plain_name): at most 124 characters.

    Args:
        name: the name asked for (a trailing ".obj" is dropped).

    Returns:
        The name without ".obj".

    Raises:
        UnknownModelError: anything else (path tricks included).
    """
    stem = name[:-4] if name.endswith(".obj") else name
    if not is_plain_name(f"{stem}.obj"):
        raise UnknownModelError(
            f"{name!r} is not a valid tree model name (letters, digits, '_', '-', '.'; "
            f"at most {MAX_MODEL_NAME_LENGTH} characters)"
        )
    return stem


def split_model_file_name(filename: str) -> tuple[str, str]:
    """A base model's file name as (model name, extension), e.g. "tree_lowpoly.mtl" -> ("tree_lowpoly", "mtl").

    Args:
        filename: "<name>.obj" or "<name>.mtl".

    Returns:
        (checked model name, "obj" or "mtl").

    Raises:
        UnknownModelError: another extension, or not a valid model name.
    """
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext not in MODEL_FILES:
        raise UnknownModelError(f"{filename!r}: ask for <name>.obj or <name>.mtl")
    return check_model_name(stem), ext


def list_models(models_dir: Path = DEFAULT_MODELS_DIR) -> list[str]:
    """Names of the OBJ models in the folder, sorted.

    Args:
        models_dir: the folder.

    Returns:
        Model names (file stems).
    """
    return sorted(p.stem for p in models_dir.glob("*.obj") if is_plain_name(p.name))


def load_model(name: str, models_dir: Path = DEFAULT_MODELS_DIR) -> tuple[Mesh, str]:
    """A base model by name, normalised to crown diameter 1, with its MTL text.

    Args:
        name: model name, e.g. "tree_lowpoly".
        models_dir: the folder holding <name>.obj (and <name>.mtl).

    Returns:
        (mesh, mtl text); a model without an MTL gets a plain material per material name.

    Raises:
        UnknownModelError: bad name or no such model.
        InvalidMeshError: the OBJ is malformed.
    """
    stem = check_model_name(name)
    obj = models_dir / f"{stem}.obj"
    if not obj.is_file():
        known = ", ".join(list_models(models_dir)) or "none"
        raise UnknownModelError(f"no tree model named {stem!r} (available: {known})")
    mesh = normalised(load_obj_file(obj))
    # The OBJ's own mtllib, when it is a plain file name next to it (never a path out of the folder).
    mtl = models_dir / mesh.mtllib if mesh.mtllib and is_plain_name(mesh.mtllib) else None
    mtl_text = mtl.read_text() if mtl is not None and mtl.is_file() else default_mtl(mesh)
    return mesh, mtl_text
