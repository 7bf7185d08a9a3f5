"""The namespace's security, over every rendered overlay: the `restricted` Pod Security Standard
on every pod template we define, the NetworkPolicies, read-only Ray containers and the head's
service account token (ray_app/platform/podsecurity.py; what `ray-app kube-check` runs).

Each check is shown to bite on a planted violation of the rendered `local` overlay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from ray_app.platform import manifests, podspec
from ray_app.platform.kubecheck import launcher_objects, render_overlay
from ray_app.platform.podsecurity import (
    network_policy_errors,
    pod_security_errors,
    pod_templates,
    restricted_violations,
    selects,
)
from tests.support.samples import KUBERAY

Obj = dict[str, Any]
OVERLAYS = ["local", "gke", "gke-gpu"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render_overlay(KUBERAY / "overlays" / name) for name in OVERLAYS}


def _pods(objects: list[Obj]):
    return [pod for obj in objects for pod in pod_templates(obj)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_of_every_overlay_is_restricted(overlay: str, rendered):
    objects = rendered[overlay]
    assert pod_security_errors(objects) == []
    pods = _pods(objects)
    # RayCluster head+cpu, 2 RayJobs x (head+cpu+submitter), RayService head+cpu, MLflow, monitor
    assert len(pods) >= 12
    wheres = " ".join(p.where for p in pods)
    for expected in (
        "Deployment/mlflow",
        "CronJob/ray-app-monitor",
        "submitter",
        "RayService/adult-income head",
        "RayCluster/ray-app worker group cpu",
    ):
        assert expected in wheres
    # The launcher's own RayJobs too.
    for job in launcher_objects(objects):
        for pod in pod_templates(job):
            assert restricted_violations(pod) == [], pod.where


def test_the_namespace_enforces_audits_and_warns_restricted(rendered):
    for objects in rendered.values():
        (ns,) = [o for o in objects if o["kind"] == "Namespace"]
        labels = ns["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def _first(objects: list[Obj], kind: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind)


def _head(objects: list[Obj]) -> Obj:
    return _first(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]


def _drop_seccomp(objs: list[Obj]) -> None:
    head = _head(objs)
    del head["securityContext"]["seccompProfile"]
    del head["containers"][0]["securityContext"]["seccompProfile"]


def _non_root_only_on_pod_is_enough_but_not_neither(objs: list[Obj]) -> None:
    head = _head(objs)
    del head["containers"][0]["securityContext"]["runAsNonRoot"]
    del head["securityContext"]["runAsNonRoot"]


PLANTED: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "seccomp": (_drop_seccomp, "seccompProfile is unset"),
    "runAsNonRoot": (_non_root_only_on_pod_is_enough_but_not_neither, "runAsNonRoot is not true"),
    "escalation": (lambda o: _head(o)["containers"][0]["securityContext"].update(
        allowPrivilegeEscalation=True), "allowPrivilegeEscalation is not false"),
    "capabilities": (lambda o: _head(o)["containers"][0]["securityContext"].update(
        capabilities={"drop": ["NET_RAW"]}), "capabilities do not drop ALL"),
    "added-capability": (lambda o: _head(o)["containers"][0]["securityContext"].update(
        capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}), "capabilities add SYS_ADMIN"),
    "privileged": (lambda o: _head(o)["containers"][0]["securityContext"].update(
        privileged=True), "privileged"),
    "hostPath": (lambda o: _head(o)["volumes"].append(
        {"name": "host", "hostPath": {"path": "/"}}), "hostPath not allowed"),
    "hostNetwork": (lambda o: _head(o).update(hostNetwork=True), "hostNetwork: true"),
    "hostPID": (lambda o: _head(o).update(hostPID=True), "hostPID: true"),
    "hostPort": (lambda o: _head(o)["containers"][0]["ports"][0].update(hostPort=6379),
                 "hostPort 6379"),
    "autoscaler": (lambda o: _first(o, "RayCluster")["spec"]["autoscalerOptions"].pop(
        "securityContext"), "container autoscaler: allowPrivilegeEscalation"),
    "mlflow": (lambda o: _first(o, "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "securityContext"].pop("seccompProfile"), "Deployment/mlflow: container mlflow: seccomp"),
    "namespace": (lambda o: _first(o, "Namespace")["metadata"]["labels"].pop(
        "pod-security.kubernetes.io/enforce"), "label pod-security.kubernetes.io/enforce"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_pod_security_bites_on_a_planted_violation(case: str, rendered):
    objects = copy.deepcopy(rendered["local"])
    plant, expected = PLANTED[case]
    plant(objects)
    errors = pod_security_errors(objects)
    assert any(expected in e for e in errors), errors


def test_non_root_and_seccomp_may_come_from_the_pod_alone(rendered):
    objects = copy.deepcopy(rendered["local"])
    container = _head(objects)["containers"][0]["securityContext"]
    del container["runAsNonRoot"], container["seccompProfile"]
    assert pod_security_errors(objects) == []


# --- read-only Ray containers, the head's token --------------------------------------------


def _ray_pods(objects: list[Obj]):
    return [p for p in _pods(objects) if p.labels.get("ray.io/is-ray-node") == "yes"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_containers_are_read_only_with_emptydirs_where_ray_writes(overlay: str, rendered):
    objects = rendered[overlay]
    ray_pods = _ray_pods(objects)
    assert len(ray_pods) >= 8
    for pod in ray_pods:
        volumes = {v["name"]: v for v in pod.spec["volumes"]}
        for container in pod.containers:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, pod.where
        ray = pod.spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in ray["volumeMounts"]}
        for path in ("/tmp/ray", "/tmp", "/home/ray/.cache", "/home/ray/.ray",
                     "/home/ray/ray_results"):  # fmt: skip
            assert "emptyDir" in volumes[mounts[path]], (pod.where, path)
        # KubeRay's own name for /tmp/ray: the autoscaler then shares this volume (pod.go).
        assert mounts["/tmp/ray"] == "ray-logs"
        assert podspec.TOKEN_PATH not in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_ray_pod_mounts_the_token_but_the_autoscaler_does(overlay: str, rendered):
    objects = rendered[overlay]
    for pod in _ray_pods(objects):
        assert pod.spec["automountServiceAccountToken"] is False, pod.where
    specs = [o["spec"] for o in objects if o["kind"] == "RayCluster"]
    specs += [o["spec"]["rayClusterSpec"] for o in objects if o["kind"] == "RayJob"]
    specs += [o["spec"]["rayClusterConfig"] for o in objects if o["kind"] == "RayService"]
    assert len(specs) == 4
    for spec in specs:
        assert spec["enableInTreeAutoscaling"] is True  # why the autoscaler needs the token
        head = spec["headGroupSpec"]["template"]["spec"]
        token = next(v for v in head["volumes"] if v["name"] == podspec.TOKEN_VOLUME)
        assert token["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"
        mounts = {m["mountPath"]: m for m in spec["autoscalerOptions"]["volumeMounts"]}
        assert mounts[podspec.TOKEN_PATH]["name"] == podspec.TOKEN_VOLUME
        assert mounts[podspec.TOKEN_PATH]["readOnly"] is True
        for group in spec["workerGroupSpecs"]:
            names = {v["name"] for v in group["template"]["spec"]["volumes"]}
            assert podspec.TOKEN_VOLUME not in names


# --- NetworkPolicies ------------------------------------------------------------------------


def _policy(objects: list[Obj], name: str) -> Obj:
    return next(o for o in objects if o["kind"] == "NetworkPolicy"
                and o["metadata"]["name"] == name)  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_default_deny_and_every_declared_port_explicitly_allowed(overlay: str, rendered):
    objects = rendered[overlay]
    assert network_policy_errors(objects) == []
    deny = _policy(objects, "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert deny["metadata"]["namespace"] == "ray-app"


def test_ray_ports_are_open_to_whom_the_comments_say(rendered):
    objects = rendered["local"]
    ray = {"ray.io/is-ray-node": "yes"}
    internal = _policy(objects, "ray-cluster-internal")["spec"]
    assert selects(internal["podSelector"], ray)
    assert internal["ingress"] == [{"from": [{"podSelector": {"matchLabels": ray}}]}]
    dashboard = _policy(objects, "ray-head-dashboard")["spec"]
    assert selects(dashboard["podSelector"], {**ray, "ray.io/node-type": "head"})
    assert not selects(dashboard["podSelector"], {**ray, "ray.io/node-type": "worker"})
    (rule,) = dashboard["ingress"]
    assert rule["ports"] == [{"port": 8265}]
    submitter = manifests.submitter_template()["metadata"]["labels"]
    assert any(selects(p.get("podSelector"), submitter) and "namespaceSelector" not in p
               for p in rule["from"])  # fmt: skip
    serve = _policy(objects, "ray-serve")["spec"]
    assert serve["ingress"] == [{"ports": [{"port": 8000}]}]
    service = _first(objects, "RayService")["spec"]["rayClusterConfig"]
    cluster = _first(objects, "RayCluster")["spec"]
    assert all(selects(serve["podSelector"], p.labels)
               for p in _pods([_first(objects, "RayService")]))  # fmt: skip
    assert not any(selects(serve["podSelector"], p.labels)
                   for p in _pods([_first(objects, "RayCluster")]))  # fmt: skip
    assert service and cluster
    mlflow = _policy(objects, "mlflow")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {}} not in mlflow  # no longer every pod of the namespace


def _open_gcs_to_all(objects: list[Obj]) -> None:
    _policy(objects, "ray-serve")["spec"]["ingress"][0]["ports"].append({"port": 6379})


NET_PLANTED: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "no default deny": (lambda o: o.remove(_policy(o, "default-deny-ingress")),
                        "no default-deny ingress NetworkPolicy"),
    "deny with rules": (lambda o: _policy(o, "default-deny-ingress")["spec"].update(
        ingress=[{}]), "no default-deny ingress NetworkPolicy"),
    "dashboard closed": (lambda o: o.remove(_policy(o, "ray-head-dashboard")) or o.remove(
        _policy(o, "ray-cluster-internal")), "port dashboard (8265) is opened by no"),
    "metrics closed": (lambda o: o.remove(_policy(o, "ray-metrics")) or o.remove(
        _policy(o, "ray-cluster-internal")), "port metrics (8080) is opened by no"),
    "gcs to anyone": (_open_gcs_to_all, "a rule open to any source opens [8000, 6379]"),
    "mlflow closed": (lambda o: o.remove(_policy(o, "mlflow")), "port http (5000)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NET_PLANTED))
def test_network_policy_check_bites_on_a_planted_violation(case: str, rendered):
    objects = copy.deepcopy(rendered["local"])
    plant, expected = NET_PLANTED[case]
    plant(objects)
    errors = network_policy_errors(objects)
    assert any(expected in e for e in errors), errors


def test_selector_matching():
    labels = {"a": "1", "b": "2"}
    assert selects({}, labels) and selects(None, labels)
    assert selects({"matchLabels": {"a": "1"}}, labels)
    assert not selects({"matchLabels": {"a": "2"}}, labels)
    assert selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]},
                   labels)  # fmt: skip
    assert not selects({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)
    assert selects({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"},
                                         {"key": "a", "operator": "NotIn", "values": ["3"]}]},
                   labels)  # fmt: skip
