"""KubeRay's admission rules (ray_app.platform.rules.py): each refuses its planted violation.

The objects are the rendered `local` overlay's (which pass every rule); each case breaks one
rule the way validation.go (KubeRay v1.7.0) describes and expects exactly that rule's id. A
rule without a planted case fails `test_every_rule_has_a_planted_violation`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ray_app.platform.kubecheck import check_ray_object, load_crd_schemas, render_overlay
from ray_app.platform.rules import ALL_RULES, admission_errors
from tests.support.samples import CRDS, KUBERAY

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> dict[str, Obj]:
    rendered = render_overlay(KUBERAY / "overlays" / "local")
    return {o["kind"]: o for o in rendered if o["kind"] in ("RayCluster", "RayService")} | {
        "RayJob": next(o for o in rendered if o["metadata"]["name"] == "ray-app-train")
    }


def _cluster(obj: Obj) -> Obj:
    """The cluster spec inside any of the three kinds."""
    spec = obj["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def _head(obj: Obj) -> Obj:
    return _cluster(obj)["headGroupSpec"]


def _worker(obj: Obj) -> Obj:
    return _cluster(obj)["workerGroupSpecs"][0]


def _env(group: Obj, name: str, value: str) -> None:
    group["template"]["spec"]["containers"][0].setdefault("env", []).append(
        {"name": name, "value": value}
    )


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        *parents, last = path.split(".")
        target = obj
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return mutate


def _no_autoscaling(obj: Obj) -> None:
    _cluster(obj)["enableInTreeAutoscaling"] = False
    _cluster(obj).pop("autoscalerOptions", None)


# (rule id, kind to plant it in, the mutation)
CASES: list[tuple[str, str, Callable[[Obj], None]]] = [
    ("cluster.head-container", "RayCluster",
     lambda o: _head(o)["template"]["spec"].update(containers=[])),
    ("cluster.group-resources", "RayJob",
     lambda o: _worker(o).update(rayStartParams={"num-cpus": "2"}, resources={"CPU": "2"})),
    ("cluster.group-labels", "RayService",
     lambda o: _worker(o).update(labels={"ray.io/zone": "not a valid value!"})),
    ("cluster.worker-container", "RayCluster",
     lambda o: _worker(o)["template"]["spec"].update(containers=[])),
    ("cluster.replicas-without-autoscaling", "RayCluster",
     lambda o: (_no_autoscaling(o), _worker(o).pop("maxReplicas"))),
    ("cluster.replicas-range", "RayJob", lambda o: _worker(o).update(minReplicas=5)),
    ("cluster.worker-idle-timeout", "RayCluster",
     lambda o: _worker(o).update(idleTimeoutSeconds=-1)),
    ("cluster.worker-priority", "RayCluster",
     lambda o: (_cluster(o).update(rayVersion="2.55.0"), _worker(o).update(priority=3))),
    ("cluster.gcs-ft-annotation-and-options", "RayService",
     lambda o: (o["metadata"].setdefault("annotations", {}).update({"ray.io/ft-enabled": "true"}),
                _cluster(o).update(gcsFaultToleranceOptions={"redisAddress": "redis:6379"}))),
    ("cluster.redis-address-without-ft", "RayCluster",
     lambda o: _env(_head(o), "RAY_REDIS_ADDRESS", "redis:6379")),
    ("cluster.gcs-ft-options", "RayCluster",
     lambda o: (_cluster(o).update(gcsFaultToleranceOptions={"redisAddress": "redis:6379"}),
                _head(o)["rayStartParams"].update({"redis-password": "x"}))),
    ("cluster.redis-username", "RayJob", lambda o: _env(_head(o), "REDIS_USERNAME", "ray")),
    ("cluster.autoscaler-v2-env-without-autoscaling", "RayCluster",
     lambda o: (_no_autoscaling(o), _env(_head(o), "RAY_enable_autoscaler_v2", "1"))),
    ("cluster.suspended-group-with-autoscaling", "RayCluster",
     lambda o: _worker(o).update(suspend=True)),
    ("cluster.autoscaler-version-and-env", "RayService",
     lambda o: _env(_head(o), "RAY_enable_autoscaler_v2", "1")),
    ("cluster.autoscaler-v2-restart-policy", "RayJob",
     lambda o: _worker(o)["template"]["spec"].update(restartPolicy="OnFailure")),
    ("cluster.autoscaler-idle-timeout", "RayCluster",
     lambda o: _cluster(o)["autoscalerOptions"].update(idleTimeoutSeconds=-5)),
    ("cluster.autoscaler-managed-env", "RayCluster",
     lambda o: _cluster(o)["autoscalerOptions"].update(
         env=[{"name": "KUBERAY_GEN_AUTOSCALER_START_CMD", "value": "x"}])),
    ("cluster.feature-gated-fields", "RayCluster",
     lambda o: _cluster(o).update(networkPolicy={"mode": "DenyAll"})),
    ("cluster.token-auth-ray-version", "RayService",
     lambda o: _cluster(o).update(rayVersion="2.51.0")),
    ("cluster.k8s-token-auth", "RayCluster",
     lambda o: _cluster(o)["authOptions"].update(enableK8sTokenAuth=True, secretName="mine")),
    ("raycluster.name", "RayCluster", _set("metadata.name", "Ray_App")),
    ("raycluster.upgrade-strategy", "RayCluster", _set("spec.upgradeStrategy", {"type": "Bogus"})),
    ("rayjob.name", "RayJob", _set("metadata.name", "ray-app-train-" + "x" * 40)),
    ("rayjob.suspend-needs-shutdown", "RayJob", _set("spec.shutdownAfterJobFinishes", False)),
    ("rayjob.ttl", "RayJob",
     lambda o: o["spec"].update(suspend=False, shutdownAfterJobFinishes=False)),
    ("rayjob.deletion-strategy", "RayJob",
     _set("spec.deletionStrategy", {"onSuccess": {"policy": "DeleteCluster"}})),
    ("rayjob.cluster-selector", "RayJob",
     lambda o: o["spec"].update(clusterSelector={"ray.io/cluster": "ray-app"}, backoffLimit=1,
                                suspend=False)),
    ("rayjob.submission-mode", "RayJob",
     lambda o: o["spec"].update(submissionMode="InteractiveMode", backoffLimit=2)),
    ("rayjob.k8s-token-auth", "RayJob",
     lambda o: _cluster(o)["authOptions"].update(enableK8sTokenAuth=True)),
    ("rayjob.runtime-env-yaml", "RayJob", _set("spec.runtimeEnvYAML", "- a list, not a map")),
    ("rayjob.deadlines-and-backoff", "RayJob", _set("spec.activeDeadlineSeconds", 0)),
    ("rayservice.name", "RayService", _set("metadata.name", "9-starts-with-a-digit")),
    ("rayservice.initializing-timeout", "RayService",
     _set("metadata.annotations", {"ray.io/initializing-timeout": "ten minutes"})),
    ("rayservice.k8s-token-auth", "RayService",
     lambda o: _cluster(o)["authOptions"].update(enableK8sTokenAuth=True)),
    ("rayservice.head-service-name", "RayService",
     lambda o: _head(o).update(headService={"metadata": {"name": "my-head"}})),
    ("rayservice.upgrade-strategy", "RayService",
     _set("spec.upgradeStrategy", {"type": "NewClusterWithIncrementalUpgrade"})),
]  # fmt: skip


def test_the_rendered_objects_pass_every_rule(objects):
    for obj in objects.values():
        assert admission_errors(obj) == [], obj["kind"]


@pytest.mark.parametrize(("rule", "kind", "mutate"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_refuses_its_planted_violation(objects, rule, kind, mutate):
    obj = copy.deepcopy(objects[kind])
    mutate(obj)
    found = [v.rule for v in admission_errors(obj)]
    assert rule in found, found
    # The message cites the source lines the rule ports.
    text = str(next(v for v in admission_errors(obj) if v.rule == rule))
    assert "validation.go#L" in text


def test_every_rule_has_a_planted_violation():
    assert sorted(r.id for r in ALL_RULES) == sorted({c[0] for c in CASES})


def test_kube_check_runs_the_rules_beside_the_schema(objects):
    schemas = load_crd_schemas(CRDS)
    job = copy.deepcopy(objects["RayJob"])
    job["spec"]["clusterSelector"] = {"ray.io/cluster": "ray-app"}  # schema-valid
    errors = check_ray_object(job, schemas)
    assert any("the ClusterSelector mode doesn't support the suspend operation" in e
               for e in errors), errors  # fmt: skip


def test_kube_check_cli_refuses_a_planted_rule_violation(tmp_path: Path):
    """A patch the CRD schema accepts but the operator refuses: restartPolicy OnFailure on a
    worker with autoscaler v2 (validation.go L226-L236)."""
    shutil.copytree(KUBERAY, tmp_path / "kuberay")
    patch = tmp_path / "kuberay" / "overlays" / "local" / "size-raycluster.yaml"
    patch.write_text(patch.read_text() + (
        "- op: add\n  path: /spec/workerGroupSpecs/0/template/spec/restartPolicy\n"
        "  value: OnFailure\n"))  # fmt: skip
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "ray-app"), "kube-check", "--kuberay-dir",
                           str(tmp_path / "kuberay"), "--crds", str(CRDS)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  " in proc.stdout and "overlays/local" in proc.stdout
    assert "cluster.autoscaler-v2-restart-policy" in proc.stdout
    assert "validation.go#L226-L236" in proc.stdout
