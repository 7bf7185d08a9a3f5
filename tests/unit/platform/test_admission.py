"""The launcher's ValidatingAdmissionPolicy (ray_app/platform/admission.py), evaluated with
cel-python as rendered in each overlay: it admits every RayJob the launcher builds and a
serveConfigV2 update, and refuses each planted violation; other users are not matched."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from ray_app.platform import admission
from ray_app.platform.kubecheck import launcher_objects, render_overlay
from tests.support.cel import evaluate, request
from tests.support.samples import CRDS, KUBERAY

Obj = dict[str, Any]
OVERLAYS = ["local", "gke", "gke-gpu"]
LAUNCHER = "system:serviceaccount:kubeflow:ray-app-pipeline"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render_overlay(KUBERAY / "overlays" / name) for name in OVERLAYS}


def _policy(objects: list[Obj]) -> Obj:
    return next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")


def _create(policy: Obj, job: Obj, user: str = LAUNCHER):
    return evaluate(policy, request(user, "rayjobs", "CREATE"), job)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rayjob_the_launcher_builds_is_admitted(overlay: str, rendered):
    objects = rendered[overlay]
    policy = _policy(objects)
    jobs = launcher_objects(objects)
    assert len(jobs) == 6
    templates = [o for o in objects if o["kind"] == "RayJob"]
    for job in jobs + templates:
        for user in admission.LAUNCHER_ACCOUNTS:
            decision = _create(policy, job, user)
            assert decision.matched and decision.allowed, (job["metadata"], decision.refused)


def test_each_overlay_pins_its_own_repositories(rendered):
    repos = {name: _policy(objs)["spec"]["variables"][0] for name, objs in rendered.items()}
    # local: its own image, and the launcher's default (published) one for generated clusters
    assert repos["local"] == {"name": "repositories",
                              "expression": "['ray-app', 'ghcr.io/ray-app/ray-app']"}  # fmt: skip
    assert (
        repos["gke"]["expression"]
        == repos["gke-gpu"]["expression"]
        == ("['ghcr.io/ray-app/ray-app']")
    )
    binding = next(o for o in rendered["local"] if o["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == admission.POLICY_NAME
    assert binding["spec"]["validationActions"] == ["Deny"]


def _job(rendered) -> Obj:
    """The launcher's train RayJob on the local overlay's cluster, to plant violations in."""
    variant = "train, overlay's cluster"
    job = next(j for j in launcher_objects(rendered["local"])
               if j["metadata"]["annotations"]["ray-app.io/variant"] == variant)  # fmt: skip
    return copy.deepcopy(job)


def _head(job: Obj) -> Obj:
    return job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def _worker(job: Obj) -> Obj:
    return job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]


def _submitter(job: Obj) -> Obj:
    return job["spec"]["submitterPodTemplate"]["spec"]


IMAGES = "images of this deployment's repositories only"
ACCOUNT = "name no service account"
VOLUMES = "mount emptyDirs"
SECRETS = "read no Secret"  # pragma: allowlist secret
SECRET_ENV = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
PLANTED: dict[str, tuple[Callable[[Obj], Any], str]] = {
    "head image": (lambda j: _head(j)["containers"][0].update(image="evil.io/miner:1"), IMAGES),
    "worker image": (lambda j: _worker(j)["containers"][0].update(image="ray-app-evil:1"), IMAGES),
    "lookalike repository": (lambda j: _worker(j)["containers"][0].update(
        image="ray-app.evil.io/ray-app:0.1.0"), IMAGES),
    "init container": (lambda j: _worker(j).update(
        initContainers=[{"name": "i", "image": "busybox"}]), IMAGES),
    "submitter image": (lambda j: _submitter(j)["containers"][0].update(image="busybox"), IMAGES),
    "extra container": (lambda j: _head(j)["containers"].append(
        {"name": "sidecar", "image": "evil.io/x"}), IMAGES),
    "autoscaler image": (lambda j: j["spec"]["rayClusterSpec"]["autoscalerOptions"].update(
        image="evil.io/autoscaler"), IMAGES),
    "head account": (lambda j: _head(j).update(serviceAccountName="admin"), ACCOUNT),
    "worker account": (lambda j: _worker(j).update(serviceAccountName="admin"), ACCOUNT),
    "legacy account field": (lambda j: _worker(j).update(serviceAccount="admin"), ACCOUNT),
    "submitter account": (lambda j: _submitter(j).update(serviceAccountName="admin"), ACCOUNT),
    "hostPath": (lambda j: _worker(j)["volumes"].append(
        {"name": "h", "hostPath": {"path": "/"}}), VOLUMES),
    "secret volume": (lambda j: _head(j)["volumes"].append(
        {"name": "s", "secret": {"secretName": "db"}}), VOLUMES),
    "other claim": (lambda j: _worker(j)["volumes"].append(
        {"name": "c", "persistentVolumeClaim": {"claimName": "mlflow"}}), VOLUMES),
    "secret in projection": (lambda j: _head(j)["volumes"].append(
        {"name": "p", "projected": {"sources": [{"secret": {"name": "db"}}]}}), VOLUMES),
    "submitter volume": (lambda j: _submitter(j).update(
        volumes=[{"name": "h", "hostPath": {"path": "/etc"}}]), VOLUMES),
    "env secret": (lambda j: _worker(j)["containers"][0]["env"].append(SECRET_ENV), SECRETS),
    "envFrom secret": (lambda j: _head(j)["containers"][0].update(
        envFrom=[{"secretRef": {"name": "db"}}]), SECRETS),
    "submitter env secret": (lambda j: _submitter(j)["containers"][0].update(
        env=[SECRET_ENV]), SECRETS),
    "autoscaler env secret": (lambda j: j["spec"]["rayClusterSpec"]["autoscalerOptions"].update(
        env=[SECRET_ENV]), SECRETS),
    "pull secret": (lambda j: _worker(j)["imagePullSecrets"].append({"name": "other"}), SECRETS),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_rayjob_violation_is_refused(case: str, rendered):
    policy = _policy(rendered["local"])
    job = _job(rendered)
    assert _create(policy, job).allowed  # the unplanted job passes
    plant, expected = PLANTED[case]
    plant(job)
    decision = _create(policy, job)
    assert decision.matched
    assert any(expected in m for m in decision.refused), decision.refused


def test_the_generated_repositories_admit_only_the_overlays_images(rendered):
    """The gke policy refuses the local overlay's image (a repository of its own name)."""
    local_job = _job(rendered)
    assert _head(local_job)["containers"][0]["image"] == "ray-app:0.1.0"
    assert not _create(_policy(rendered["gke"]), local_job).allowed
    gke_job = launcher_objects(rendered["gke"])[0]
    # a digest-pinned release image of the same repository passes
    pinned = copy.deepcopy(gke_job)
    for spec in (_head(pinned), _worker(pinned), _submitter(pinned)):
        spec["containers"][0]["image"] = "ghcr.io/ray-app/ray-app@sha256:" + "0" * 64
    assert _create(_policy(rendered["gke"]), pinned).allowed


def test_other_users_are_not_matched(rendered):
    policy = _policy(rendered["local"])
    job = _job(rendered)
    _head(job)["containers"][0]["image"] = "evil.io/x"
    for user in ("kubernetes-admin", "system:serviceaccount:ray-app:default",
                 "system:serviceaccount:kuberay:kuberay-operator"):  # fmt: skip
        assert not _create(policy, job, user).matched
    profile = "system:serviceaccount:kubeflow-user-example-com:default-editor"
    assert _create(policy, job, profile).matched
    assert not _create(policy, job, profile).allowed


def _service(rendered) -> Obj:
    return copy.deepcopy(next(o for o in rendered["local"] if o["kind"] == "RayService"))


def _update(policy: Obj, new: Obj, old: Obj):
    return evaluate(policy, request(LAUNCHER, "rayservices", "UPDATE"), new, old)


def test_a_serve_config_update_is_admitted_and_nothing_else(rendered):
    policy = _policy(rendered["local"])
    old = _service(rendered)
    old["spec"]["serveConfigV2"] = "applications: []\n"
    new = copy.deepcopy(old)
    new["spec"]["serveConfigV2"] = "applications: [{name: x}]\n"
    new["metadata"]["managedFields"] = [{"manager": "ray-app-deploy"}]
    assert _update(policy, new, old).allowed
    first = copy.deepcopy(old)
    del first["spec"]["serveConfigV2"]  # the first deploy adds the field
    assert _update(policy, old, first).allowed
    message = "spec.serveConfigV2 only"
    changes: list[Callable[[Obj], Any]] = [
        lambda s: s["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"][0].update(image="evil.io/x"),
        lambda s: s["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas=99),
        lambda s: s["spec"].update(upgradeStrategy={"type": "None"}),
        lambda s: s["spec"].update(serveService={"metadata": {"name": "x"}}),
        lambda s: s["spec"].pop("rayClusterConfig"),
        lambda s: s["metadata"]["labels"].update(x="y"),
        lambda s: s["metadata"].update(annotations={"ray.io/ft-enabled": "true"}),
    ]  # fmt: skip
    for change in changes:
        bad = copy.deepcopy(new)
        change(bad)
        decision = _update(policy, bad, old)
        assert any(message in m for m in decision.refused), decision.refused
    created = evaluate(policy, request(LAUNCHER, "rayservices", "CREATE"), new)
    assert any(message in m for m in created.refused)


def test_the_fixed_rayservice_fields_are_the_crds_but_serve_config():
    crd = yaml.safe_load((CRDS / "ray.io_rayservices.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    fields = set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    assert set(admission.RAYSERVICE_FIXED_FIELDS) == fields - {"serveConfigV2"}
