"""Render the Kustomize overlays and validate every object, without a Kubernetes API server.

    ray-app kube-check                      # kubectl kustomize each overlay, then validate

`ray.io` objects are checked against the KubeRay v1.7 CRDs' openAPIV3Schema, strictly: a field
the schema does not know is an error (the API server would silently prune it), and then
against the operator's own admission rules (ray_app/platform/kuberules.py, ported from KubeRay's
validation.go), which the API server does not run. The same checks run on every RayJob the
pipeline's launcher can build from each overlay. Core objects are checked with
kubernetes-validate (strict) for the Kubernetes version below.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ray_app.core.errors import UserError

KUBERNETES_VERSION = "1.34.0"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}


def _strict(schema: Any) -> Any:
    """Copy of an OpenAPI schema where objects with known properties reject unknown ones."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(crd_dir: Path) -> dict[str, dict[str, Any]]:
    """Kind -> strict openAPIV3Schema of its `v1` version."""
    schemas = {}
    for kind, name in CRD_FILES.items():
        path = crd_dir / name
        if not path.exists():
            raise UserError(
                f"{path}: KubeRay CRD missing (set RAY_APP_KUBERAY_CRDS to a folder with "
                "ray-operator/config/crd/bases/ray.io_*.yaml of KubeRay v1.7)"
            )
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schemas[kind] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def validate_ray_object(obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    """Schema errors of one ray.io object, each as 'Kind/name: path: message'."""
    import jsonschema

    kind = obj.get("kind", "?")
    name = obj.get("metadata", {}).get("name", "?")
    if kind not in schemas:
        return [f"{kind}/{name}: no CRD schema for this kind"]
    validator = jsonschema.Draft7Validator(schemas[kind])
    return [
        f"{kind}/{name}: {'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def validate_core_object(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate (strict: unknown fields are errors) for a core object."""
    import kubernetes_validate

    kind = obj.get("kind", "?")
    name = obj.get("metadata", {}).get("name", "?")
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{kind}/{name}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{kind}/{name}: no schema for {obj.get('apiVersion')} {kind}"]
    return []


def find_kubectl() -> str:
    """kubectl beside this interpreter (installed by `make setup`), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise UserError("kubectl not found: run `make setup` (python .ci/get_kubectl.py .venv/bin)")
    return found


def render_overlay(overlay: Path, kubectl: str | None = None) -> list[dict[str, Any]]:
    """`kubectl kustomize <overlay>` parsed into objects."""
    proc = subprocess.run(
        [kubectl or find_kubectl(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise UserError(f"kubectl kustomize {overlay} failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def admission_errors(obj: dict[str, Any]) -> list[str]:
    """KubeRay's admission rules for one ray.io object, each as 'Kind/name: message [rule]'."""
    from ray_app.platform.rules import admission_errors as violations

    name = f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"
    return [f"{name}: {violation}" for violation in violations(obj)]


def check_ray_object(obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    """What the API server refuses (CRD schema), then what the operator refuses (rules)."""
    return validate_ray_object(obj, schemas) + admission_errors(obj)


def launcher_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every RayJob the pipeline's launcher can create against these deployed objects.

    train and tune; on the cluster of the overlay's template RayJob and on the generated one
    (no template deployed); on a cluster of its own and on each deployed RayCluster
    (clusterSelector).
    """
    from ray_app.core.config import AppConfig, LaunchConfig
    from ray_app.platform.launch import Job, job_name
    from ray_app.platform.launch.base import JobKind
    from ray_app.platform.launch.kuberay import build_rayjob, template_name

    templates = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "RayJob"}
    clusters = [o["metadata"]["name"] for o in objects if o.get("kind") == "RayCluster"]
    if not templates and not clusters:
        return []  # not a Ray deployment (kuberay/kfp: access objects only)
    kinds: tuple[JobKind, ...] = ("train", "tune")
    built = []
    for kind in kinds:
        template = templates.get(template_name(kind))
        variants: list[tuple[str, str | None, dict[str, Any] | None]] = [
            (f"{kind}, generated cluster", None, None)
        ]
        if template:
            variants.append((f"{kind}, overlay's cluster", None, template))
        variants += [(f"{kind}, existing cluster {c}", c, template) for c in clusters]
        for variant, reuse, source in variants:
            cfg = AppConfig(launch=LaunchConfig(reuse_cluster=reuse))
            job = build_rayjob(Job(kind, ["--epochs", "2"], job_name(kind, "0123abcd")), cfg,
                               source)  # fmt: skip
            job["metadata"]["annotations"] = {"ray-app.io/variant": variant}
            built.append(job)
    return built


@dataclass
class OverlayReport:
    overlay: str
    objects: list[str] = field(default_factory=list)
    launcher: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check_overlay(overlay: Path, schemas: dict[str, dict[str, Any]]) -> OverlayReport:
    """Render one overlay, validate every object in it and every RayJob the launcher builds;
    then the namespace's security: every pod template against the `restricted` Pod Security
    Standard, the NetworkPolicies (podsecurity.py) and the admission policy (admission.py)."""
    from ray_app.platform.podsecurity import (
        network_policy_errors,
        pod_security_errors,
        pod_templates,
        restricted_violations,
    )

    report = OverlayReport(str(overlay))
    objects = render_overlay(overlay)
    report.errors += pod_security_errors(objects) + network_policy_errors(objects)
    for obj in objects:
        report.objects.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}")
        if str(obj.get("apiVersion", "")).startswith("ray.io/"):
            report.errors += check_ray_object(obj, schemas)
        else:
            report.errors += validate_core_object(obj)
    for job in launcher_objects(objects):
        variant = job["metadata"]["annotations"]["ray-app.io/variant"]
        report.launcher.append(variant)
        report.errors += [f"launcher ({variant}): {e}" for e in check_ray_object(job, schemas)]
        for pod in pod_templates(job):
            report.errors += [f"launcher ({variant}): {pod.where}: {v} [pod-security restricted]"
                              for v in restricted_violations(pod)]  # fmt: skip
    return report


def overlays(kuberay_dir: Path) -> list[Path]:
    """Every kustomization to check: the overlays, then the KFP access ones (kuberay/kfp)."""
    found = sorted(p.parent for p in (kuberay_dir / "overlays").glob("*/kustomization.yaml"))
    return found + sorted(p.parent for p in (kuberay_dir / "kfp").glob("*/kustomization.yaml"))


@dataclass
class CheckReport:
    lines: list[str]
    failed: bool


def check_all(kuberay_dir: Path, crds: Path) -> CheckReport:
    """`ray-app kube-check`: every overlay (and KFP access kustomization) of `kuberay_dir`,
    each object and each launcher RayJob checked; one line per overlay and per problem."""
    from ray_app.platform.rules import ALL_RULES, KUBERAY_TAG

    schemas = load_crd_schemas(crds)
    found = overlays(kuberay_dir)
    if not found:
        raise UserError(f"{kuberay_dir}/overlays: no overlay with a kustomization.yaml")
    lines = [f"KubeRay {KUBERAY_TAG}: CRD schemas (strict) + {len(ALL_RULES)} admission rules"]
    failed = False
    for overlay in found:
        report = check_overlay(overlay, schemas)
        status = "FAIL" if report.errors else "ok"
        launched = f", {len(report.launcher)} launcher RayJobs" if report.launcher else ""
        lines.append(f"{status}  {overlay}: {len(report.objects)} objects{launched}")
        lines += [f"      {problem}" for problem in report.errors]
        failed = failed or bool(report.errors)
    return CheckReport(lines, failed)
