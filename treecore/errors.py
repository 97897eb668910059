"""Treecore error classes.

    TreecoreError
    ├── InvalidImageError        bytes that are not a readable PNG, JPEG or TIFF image
    ├── ImageTooLargeError       an image over the pixel limit (checked from the header)
    ├── InvalidParametersError   detection parameters out of range or inconsistent
    │   └── InvalidGeoreferenceError   an image georeference (origin, EPSG, GeoTIFF tags) that cannot be used
    ├── InvalidTreesError        a tree list (detection JSON) that is malformed
    ├── TooManyTreesError        more trees than the caller's limit
    ├── InvalidMeshError         an OBJ/MTL base model that cannot be read (names the line)
    └── UnknownModelError        no base model of that name (or a name with path tricks)

Every exception takes one message argument, so it pickles across Ray replicas unchanged.
"""

from __future__ import annotations


class TreecoreError(Exception):
    """Base class of every error treecore raises on purpose."""


class InvalidImageError(TreecoreError):
    """The bytes are empty, truncated, or not a PNG, JPEG or TIFF image."""


class ImageTooLargeError(TreecoreError):
    """The image has more pixels than allowed; raised before the full decode."""


class InvalidParametersError(TreecoreError):
    """A detection parameter is out of its range or inconsistent with another."""


class InvalidGeoreferenceError(InvalidParametersError):
    """A georeference is incomplete, out of range, or a GeoTIFF's tags describe one we cannot use."""


class InvalidTreesError(TreecoreError):
    """A tree list is malformed: missing fields, wrong types, or non-finite numbers."""


class TooManyTreesError(TreecoreError):
    """A scene has more trees than the configured limit."""


class InvalidMeshError(TreecoreError):
    """An OBJ or MTL base model is malformed; the message names the line."""


class UnknownModelError(TreecoreError):
    """No base tree model has that name, or the name is not a plain model name."""
