"""Renders each kustomize overlay and validates every object: Kubernetes 1.32, KubeRay v1.7.0 CRDs, operator rules."""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.render_serve_config import PATCH, expected_serve_config_v2, render_patch
from tests.k8s.kuberay_schema import SCHEMA_DIR, image_ray_version, validate_document

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["aks", "local"]
RAY_CRD_SHA256 = {
    "ray.io_rayservices.yaml": "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
}
SERVE_CONFIG = ROOT / "serve_config.yaml"


def _render(target: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (kubectl kustomize)"
    out = subprocess.run([kubectl, "kustomize", str(K8S / target)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=["base", *(f"overlays/{o}" for o in OVERLAYS)])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _rayservice(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (svc,) = [d for d in docs if d["kind"] == "RayService"]
    return svc


def _pod_templates(svc: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = svc["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [w["template"] for w in cluster.get("workerGroupSpecs") or []]


def test_crd_copies_are_the_pinned_v1_7_0_files() -> None:
    for name, digest in RAY_CRD_SHA256.items():
        assert hashlib.sha256((SCHEMA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_every_rendered_object_is_valid(rendered: list[dict[str, Any]]) -> None:
    assert rendered
    problems = {f"{d['kind']}/{d['metadata']['name']}": validate_document(d) for d in rendered}
    assert {k: v for k, v in problems.items() if v} == {}


def _detector_cpus() -> float:
    # CPUs the Detector's min_replicas take: what a one-pod cluster's head must offer.
    app = yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8"))["applications"][0]
    (detector,) = [d for d in app["deployments"] if d["name"] == "Detector"]
    return float(detector["autoscaling_config"]["min_replicas"] * detector["ray_actor_options"]["num_cpus"])


def test_rayservice_shape(rendered: list[dict[str, Any]]) -> None:
    svc = _rayservice(rendered)
    assert svc["apiVersion"] == "ray.io/v1" and len(svc["metadata"]["name"]) <= 47
    cluster = svc["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    groups = cluster.get("workerGroupSpecs") or []
    if groups:  # worker pods run the Serve replicas; the autoscaler adds them
        assert cluster["enableInTreeAutoscaling"] is True
        assert head["rayStartParams"]["num-cpus"] == "0"
        (workers,) = groups
        assert 1 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
        resources = cluster["autoscalerOptions"]["resources"]
        assert resources["requests"] and resources["limits"]
    else:  # one pod (the local overlay): the head runs the Serve replicas, nothing to autoscale
        assert cluster.get("enableInTreeAutoscaling") is not True and "autoscalerOptions" not in cluster
        cpus = float(head["rayStartParams"]["num-cpus"])
        limit = str(head["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        assert _detector_cpus() <= cpus <= (int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit))
    for group in [head, *groups]:
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        res = container["resources"]
        assert set(res) == {"requests", "limits"} and {"cpu", "memory"} <= set(res["requests"]) <= set(res["limits"])
        assert res["requests"]["memory"] == res["limits"]["memory"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe not in container, "KubeRay injects its own probes"
        (shm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        # The object store must fit in /dev/shm.
        assert int(group["rayStartParams"]["object-store-memory"]) <= _bytes(shm["emptyDir"]["sizeLimit"])
        assert container["workingDir"] == "/app"


def _bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G)?", quantity)
    assert match, quantity
    scale = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    return int(match.group(1)) * scale[match.group(2)]


#: The settings that send stored models to Azure Blob instead of the local folder (serve_app.storage.make_store).
AZURE_STORAGE = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL")


def _azure_storage_in(template: dict[str, Any], docs: list[dict[str, Any]], svc: dict[str, Any]) -> set[str]:
    """The Azure storage settings a pod's container gets: env, envFrom ConfigMaps or Secrets, serve runtime_env."""
    (container,) = template["spec"]["containers"]
    found = {e["name"] for e in container.get("env") or [] if e.get("value") or e.get("valueFrom")}
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            found |= {k for k, v in maps[source["configMapRef"]["name"]].items() if v}
        if "secretRef" in source:  # its keys are not in git: a Secret could hold the connection string
            found.add("AZURE_STORAGE_CONNECTION_STRING")
    for app in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]:
        found |= {k for k, v in ((app.get("runtime_env") or {}).get("env_vars") or {}).items() if v}
    return found & set(AZURE_STORAGE)


def _most_pods(cluster: dict[str, Any]) -> int:
    groups = cluster.get("workerGroupSpecs") or []
    return 1 + sum(max(g.get("replicas", 0), g.get("maxReplicas", 0)) * g.get("numOfHosts", 1) for g in groups)


def test_every_overlay_is_checked() -> None:
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_local_storage_is_never_combined_with_more_than_one_pod(overlay: str) -> None:
    """Local storage is one node only: GET /download reads the folder of its own pod (serve_app/storage/local.py)."""
    docs = _render(f"overlays/{overlay}")
    svc = _rayservice(docs)
    azure = [bool(_azure_storage_in(t, docs, svc)) for t in _pod_templates(svc)]
    assert len(set(azure)) == 1, "every pod must use the same storage"
    if not azure[0]:
        most = _most_pods(svc["spec"]["rayClusterConfig"])
        assert most == 1, (
            f"overlays/{overlay}: local model storage with up to {most} pods; set Azure storage or one pod"
        )


def test_the_rule_sees_multi_pod_local_storage() -> None:
    # The base alone (never applied: README) is that combination: worker pods and no storage setting.
    docs = _render("base")
    svc = _rayservice(docs)
    assert not any(_azure_storage_in(t, docs, svc) for t in _pod_templates(svc))
    assert _most_pods(svc["spec"]["rayClusterConfig"]) > 1
    aks = _render("overlays/aks")
    assert all(
        _azure_storage_in(t, aks, _rayservice(aks)) == {"AZURE_STORAGE_ACCOUNT_URL"}
        for t in _pod_templates(_rayservice(aks))
    )
    assert "not applied alone" in (K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8")


def test_ray_version_agrees_with_requirements_and_dockerfile(rendered: list[dict[str, Any]]) -> None:
    pinned = re.search(r"^ray\[serve\]==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert pinned and base
    svc = _rayservice(rendered)
    assert svc["spec"]["rayClusterConfig"]["rayVersion"] == pinned.group(1) == image_ray_version(base.group(1))
    assert base.group(1).endswith("-py311")


def test_validator_rejects_misspelled_field() -> None:
    docs = _render("overlays/aks")
    bad = copy.deepcopy(_rayservice(docs))
    cluster = bad["spec"]["rayClusterConfig"]
    cluster["enableInTreeAutoscalling"] = cluster.pop("enableInTreeAutoscaling")
    errors = validate_document(bad)
    assert any("enableInTreeAutoscalling" in e for e in errors), errors


def test_validator_rejects_wrong_ray_version() -> None:
    bad = copy.deepcopy(_rayservice(_render("overlays/aks")))
    bad["spec"]["rayClusterConfig"]["rayVersion"] = "2.59.0"
    assert any("rayVersion" in e for e in validate_document(bad))


def test_validator_rejects_long_name_bad_serve_config_and_core_typos() -> None:
    docs = _render("overlays/aks")
    svc = copy.deepcopy(_rayservice(docs))
    svc["metadata"]["name"] = "t" * 48
    assert any("metadata.name" in e for e in validate_document(svc))
    svc = copy.deepcopy(_rayservice(docs))
    svc["spec"]["serveConfigV2"] = "deployments: []\n"
    assert any("serveConfigV2" in e for e in validate_document(svc))
    (ingress,) = [copy.deepcopy(d) for d in docs if d["kind"] == "Ingress"]
    ingress["spec"]["ingresClassName"] = ingress["spec"].pop("ingressClassName")
    assert validate_document(ingress)


def test_aks_overlay_wiring() -> None:
    docs = _render("overlays/aks")
    by_kind = {d["kind"]: d for d in docs}
    sa, cm, svc = by_kind["ServiceAccount"], by_kind["ConfigMap"], by_kind["RayService"]
    assert re.fullmatch(r"[0-9a-f-]{36}", sa["metadata"]["annotations"]["azure.workload.identity/client-id"])
    for template in _pod_templates(svc):
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"]
        (container,) = template["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
        assert ".azurecr.io/" in container["image"]
    assert cm["data"]["AZURE_STORAGE_ACCOUNT_URL"].startswith("https://")
    assert "AZURE_STORAGE_CONNECTION_STRING" not in cm["data"], "no secrets in git"
    backend = by_kind["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{svc['metadata']['name']}-serve-svc", "port": {"number": 8000}}
    body = by_kind["Ingress"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert _bytes(body.upper().replace("M", "Mi").replace("G", "Gi")) == int(cm["data"]["MAX_UPLOAD_BYTES"])
    pod_labels = _pod_templates(svc)[1]["metadata"]["labels"]
    selector = by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert by_kind["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_settings_names_match_the_app() -> None:
    source = (ROOT / "serve_app" / "settings.py").read_text(encoding="utf-8")
    cm = next(d for d in _render("overlays/aks") if d["kind"] == "ConfigMap")
    for name in cm["data"]:
        assert f'"{name}"' in source, f"{name} is set in the AKS ConfigMap but serve_app/settings.py never reads it"


def test_serve_config_v2_is_serve_config_yaml(rendered: list[dict[str, Any]]) -> None:
    text = SERVE_CONFIG.read_text(encoding="utf-8")
    assert PATCH.read_text(encoding="utf-8") == render_patch(text), "run python scripts/render_serve_config.py"
    assert _rayservice(rendered)["spec"]["serveConfigV2"] == expected_serve_config_v2(text)
    config = yaml.safe_load(text)
    http = config.get("http_options") or {}
    # Serve's defaults for a config deployed through the dashboard (as KubeRay does): 0.0.0.0:8000.
    assert http.get("port", 8000) == 8000, "the Service, Ingress and docs use port 8000"
    assert http.get("host", "0.0.0.0") == "0.0.0.0", "the proxy must listen on the pod IP"
    assert [a["import_path"] for a in config["applications"]] == ["serve_app.builder:build_app"]
    for app in config["applications"]:
        working_dir = str((app.get("runtime_env") or {}).get("working_dir", "/app"))
        # KubeRay deploys through the dashboard API: a local working_dir cannot be uploaded, the code is in /app.
        assert "://" in working_dir or working_dir == "/app", working_dir


def test_deploy_guide_agrees_with_manifests() -> None:
    guide = (ROOT / "docs" / "deploy-aks.md").read_text(encoding="utf-8")
    docs = _render("overlays/aks")
    svc = _rayservice(docs)
    namespace = svc["metadata"]["namespace"]
    for needle in [
        "kubectl apply -k k8s/overlays/aks",
        f"{svc['metadata']['name']}-serve-svc",
        "8000",
        f"-n {namespace}",
        "--enable-oidc-issuer",
        "--enable-workload-identity",
        "--version 1.7.0",
        "--server-side",
        "Storage Blob Data Contributor",
        "/health",
        "/detect-trees",
    ]:
        assert needle in guide, needle
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert f"system:serviceaccount:{namespace}:{sa['metadata']['name']}" in guide
    # Every placeholder the guide replaces with sed must exist in the overlay it edits.
    for placeholder, path in re.findall(r"sed -i \"s/([^/]+)/[^\"]*\" (k8s/overlays/aks/\S+)", guide):
        assert re.search(placeholder, (ROOT / path).read_text(encoding="utf-8")), (placeholder, path)
    assert len(re.findall(r"sed -i", guide)) >= 4


def test_pods_run_non_root_on_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    for template in _pod_templates(_rayservice(rendered)):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for container in template["spec"]["containers"]:
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True and security.get("runAsUser") == 1000, container["name"]
            assert security.get("readOnlyRootFilesystem") is True and security.get("allowPrivilegeEscalation") is False
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            # The only writable paths: /tmp (Ray sessions, GENERATED_MODELS_DIR) and /dev/shm (object store).
            assert set(mounts) == {"/tmp", "/dev/shm"}, container["name"]
            assert all("emptyDir" in volumes[name] for name in mounts.values())
