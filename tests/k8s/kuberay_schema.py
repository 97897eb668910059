"""Offline manifest validation: KubeRay CRD schemas (strict) + operator rules; core kinds via kubernetes-validate."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
K8S_VERSION = "1.32"
NAME_MAX = {"RayCluster": 53, "RayService": 47}  # KubeRay MaxRay*NameLength (v1.7.0)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RAY_IN_TAG = re.compile(r"(?:^|[-_])ray(\d+\.\d+\.\d+)(?:$|[-_])")
_SEMVER_PREFIX = re.compile(r"^(\d+\.\d+\.\d+)")


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    props = out.get("properties", {})
    if "required" in out:  # the API server fills defaults before validating
        out["required"] = [r for r in out["required"] if "default" not in props.get(r, {})]
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """Strict JSON Schema validator for the ray.io/v1 version of a KubeRay kind.

    Args:
        kind: "RayService" or "RayCluster".

    Returns:
        A Draft 7 validator built from the CRD's openAPIV3Schema.
    """
    crd = yaml.safe_load((SCHEMA_DIR / CRD_FILES[kind]).read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _to_json_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({"apiVersion", "kind", "spec"} | set(schema.get("required", [])))
    return jsonschema.Draft7Validator(schema)


def image_ray_version(image: str) -> str | None:
    """The Ray version an image reference promises in its tag.

    Args:
        image: e.g. "rayproject/ray:2.60.0-py311" or "acr.example/tree-detection:0.1.0-ray2.60.0-py311".

    Returns:
        "2.60.0" for those examples; None when the tag names no Ray version.
    """
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return None
    if name.endswith("rayproject/ray"):
        match = _SEMVER_PREFIX.match(tag)
    else:
        match = _RAY_IN_TAG.search(tag)
    return match.group(1) if match else None


def _drop_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_nulls(v) for k, v in node.items() if v is not None}
    return [_drop_nulls(n) for n in node] if isinstance(node, list) else node


def operator_errors(doc: dict[str, Any]) -> list[str]:
    """KubeRay rules the CRD schema cannot express (name, rayVersion vs image tags, serveConfigV2).

    Args:
        doc: one RayService or RayCluster document.

    Returns:
        One message per broken rule; empty when all hold.
    """
    kind, spec, errors = doc.get("kind"), doc.get("spec") or {}, []
    name = (doc.get("metadata") or {}).get("name") or ""
    if len(name) > NAME_MAX[kind] or not _DNS1035.match(name):
        errors.append(f"metadata.name: {name!r} must be a DNS-1035 label of <= {NAME_MAX[kind]} chars")
    cluster = spec.get("rayClusterConfig") or {} if kind == "RayService" else spec
    templates = [(cluster.get("headGroupSpec") or {}).get("template")]
    templates += [w.get("template") for w in cluster.get("workerGroupSpecs") or []]
    version = str(cluster.get("rayVersion", ""))
    for template in filter(None, templates):
        for container in (template.get("spec") or {}).get("containers", []):
            tagged = image_ray_version(container.get("image", ""))
            if tagged != version:
                errors.append(f"rayVersion {version!r} does not match image {container.get('image')!r} (Ray {tagged})")
    if kind == "RayService":
        try:
            config = yaml.safe_load(spec.get("serveConfigV2") or "")
        except yaml.YAMLError as exc:
            return errors + [f"spec.serveConfigV2: not valid YAML: {exc}".replace("\n", " ")]
        apps = config.get("applications") if isinstance(config, dict) else None
        if not apps or not isinstance(apps, list) or not all(isinstance(a, dict) and "import_path" in a for a in apps):
            errors.append("spec.serveConfigV2: needs a non-empty `applications:` list, each with import_path")
    return errors


def validate_document(doc: dict[str, Any]) -> list[str]:
    """Validate one rendered object as the API server (and for Ray kinds, the operator) would.

    Args:
        doc: a parsed manifest document.

    Returns:
        Error messages, each prefixed with the field path; empty when valid.
    """
    doc = _drop_nulls(doc)
    kind = doc.get("kind", "")
    if doc.get("apiVersion", "").startswith("ray.io/"):
        if kind not in CRD_FILES:
            return [f"no CRD schema for {doc.get('apiVersion')} {kind}"]
        errors = [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in crd_validator(kind).iter_errors(doc)
        ]
        return errors + operator_errors(doc)
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as exc:
        return [str(exc.message)]
    return []
