"""Pod Security and NetworkPolicy checks over rendered objects, for `ray-app kube-check`.

The `restricted` Pod Security Standard, as Pod Security Admission enforces it on the namespace
(labels pod-security.kubernetes.io/enforce: restricted): the controls below are the page's
tables, https://kubernetes.io/docs/concepts/security/pod-security-standards/ ("Baseline" and
"Restricted"; the Windows-only HostProcess control and the AppArmor/SELinux/sysctl/procMount
fields, which we never set, are checked as "must be absent"). Pod Security Admission checks the
pods KubeRay creates; this checks our templates of them, and the container KubeRay injects
from `autoscalerOptions` (its securityContext is ours).

NetworkPolicies: the namespace has a default deny for ingress; every port a pod declares is
opened by an explicit allow, to named sources, except the ports of PUBLIC_PORTS (Serve).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

NAMESPACE_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}
# Restricted, "Volume Types": the only volume sources allowed.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}  # fmt: skip
# Restricted, "Capabilities": drop ALL; add at most NET_BIND_SERVICE.
ALLOWED_ADDED_CAPS = {"NET_BIND_SERVICE"}
# Restricted, "Seccomp": RuntimeDefault or Localhost.
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}
# Ports anyone may reach (a NetworkPolicy rule with no `from`): Serve's HTTP port, see
# kuberay/base/networkpolicy.yaml for why.
PUBLIC_PORTS = {8000}


@dataclass
class PodTemplate:
    """One pod we define: where, its labels as the pod will carry them, its spec, and the
    containers to check (the spec's own, plus KubeRay's autoscaler built from our options)."""

    where: str
    labels: dict[str, str]
    spec: dict[str, Any]
    containers: list[dict[str, Any]]


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _template(where: str, template: dict[str, Any], labels: dict[str, str] | None = None,
              extra: list[dict[str, Any]] | None = None) -> PodTemplate:  # fmt: skip
    spec = template.get("spec") or {}
    own = dict((template.get("metadata") or {}).get("labels") or {})
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or []), *(extra or [])]  # fmt: skip
    return PodTemplate(where, {**own, **(labels or {})}, spec, containers)


def _ray_cluster(where: str, spec: dict[str, Any]) -> Iterator[PodTemplate]:
    """Head and worker pods of a cluster spec, with the labels KubeRay sets on them (pod.go
    labelPod, L1167-L1191 at v1.7.0: ray.io/is-ray-node=yes, ray.io/node-type, ...), and the
    autoscaler container KubeRay adds to the head with autoscalerOptions' securityContext (pod.go
    L243-L278, mergeAutoscalerOverrides L1004-L1027)."""
    extra = []
    if spec.get("enableInTreeAutoscaling") is True:
        options = spec.get("autoscalerOptions") or {}
        extra.append({"name": "autoscaler", "securityContext": options.get("securityContext")})
    head = (spec.get("headGroupSpec") or {}).get("template") or {}
    ray = {"ray.io/is-ray-node": "yes"}
    yield _template(f"{where} head", head, {**ray, "ray.io/node-type": "head"}, extra)
    worker = {**ray, "ray.io/node-type": "worker"}
    for group in spec.get("workerGroupSpecs") or []:
        name = f"{where} worker group {group.get('groupName')}"
        yield _template(name, group.get("template") or {}, worker)


def pod_templates(obj: dict[str, Any]) -> Iterator[PodTemplate]:
    """Every pod template an object defines (workloads, KubeRay objects, the RayJob's
    submitter pod)."""
    kind, spec, where = obj.get("kind"), obj.get("spec") or {}, _name(obj)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield _template(where, spec.get("template") or {})
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield _template(where, job.get("template") or {})
    elif kind == "Pod":
        yield _template(where, obj)
    elif kind == "RayCluster":
        yield from _ray_cluster(where, spec)
    elif kind == "RayService":
        yield from _ray_cluster(where, spec.get("rayClusterConfig") or {})
    elif kind == "RayJob":
        if spec.get("rayClusterSpec"):
            yield from _ray_cluster(where, spec["rayClusterSpec"])
        if spec.get("submitterPodTemplate"):
            yield _template(f"{where} submitter", spec["submitterPodTemplate"])


def restricted_violations(pod: PodTemplate) -> list[str]:
    """What the `restricted` profile refuses in one pod template (Baseline + Restricted)."""
    spec, out = pod.spec, []
    for field in ("hostNetwork", "hostPID", "hostIPC"):  # Baseline: Host Namespaces
        if spec.get(field):
            out.append(f"{field}: true")
    for volume in spec.get("volumes") or []:  # Baseline: HostPath; Restricted: Volume Types
        kinds = set(volume) - {"name"}
        if kinds - ALLOWED_VOLUMES:
            out.append(f"volume {volume.get('name')}: {', '.join(sorted(kinds))} not allowed")
    pod_ctx = spec.get("securityContext") or {}
    if pod_ctx.get("runAsUser") == 0:
        out.append("pod runAsUser: 0")
    for field in ("seLinuxOptions", "sysctls", "appArmorProfile", "windowsOptions"):
        if pod_ctx.get(field):
            out.append(f"pod securityContext.{field} is set")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        out.append(f"pod seccompProfile {pod_seccomp}")
    for container in pod.containers:
        name = f"container {container.get('name')}"
        ctx = container.get("securityContext") or {}
        for port in container.get("ports") or []:  # Baseline: Host Ports
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
        if ctx.get("privileged"):  # Baseline: Privileged Containers
            out.append(f"{name}: privileged")
        for field in ("seLinuxOptions", "appArmorProfile", "windowsOptions", "procMount"):
            if ctx.get(field):
                out.append(f"{name}: securityContext.{field} is set")
        if ctx.get("allowPrivilegeEscalation") is not False:  # Restricted: Privilege Escalation
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        # Restricted: Running as Non-root (container, else the pod), Non-root user.
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot is not true (container or pod)")
        if ctx.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser: 0")
        # Restricted: Seccomp (container, else the pod).
        seccomp = (ctx.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ALLOWED_SECCOMP:
            out.append(f"{name}: seccompProfile is {seccomp or 'unset'} (container or pod)")
        caps = ctx.get("capabilities") or {}  # Restricted: Capabilities
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities do not drop ALL")
        added = set(caps.get("add") or []) - ALLOWED_ADDED_CAPS
        if added:
            out.append(f"{name}: capabilities add {', '.join(sorted(added))}")
    return out


def namespace_errors(objects: list[dict[str, Any]]) -> list[str]:
    """Every Namespace we create enforces, audits and warns at `restricted`; an overlay that
    defines pods creates its namespace (so the labels travel with it)."""
    namespaces = [o for o in objects if o.get("kind") == "Namespace"]
    out = []
    for ns in namespaces:
        labels = (ns.get("metadata") or {}).get("labels") or {}
        for key, value in NAMESPACE_LABELS.items():
            if labels.get(key) != value:
                out.append(f"{_name(ns)}: label {key} is {labels.get(key)!r}, not {value!r}")
    pods = any(True for o in objects for _ in pod_templates(o))
    if pods and not namespaces:
        out.append("pods defined but no Namespace (with the Pod Security labels) in the overlay")
    return out


def pod_security_errors(objects: list[dict[str, Any]]) -> list[str]:
    """The namespace's labels, then every pod template of `objects` against `restricted`."""
    out = namespace_errors(objects)
    for obj in objects:
        for pod in pod_templates(obj):
            out += [f"{pod.where}: {v} [pod-security restricted]"
                    for v in restricted_violations(pod)]  # fmt: skip
    return out


# --- NetworkPolicies ----------------------------------------------------------------------


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against labels; {} selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _is_default_deny(policy: dict[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    return (spec.get("podSelector") in ({}, None) and "Ingress" in (spec.get("policyTypes") or [])
            and not spec.get("ingress"))  # fmt: skip


def _port_matches(rule_port: dict[str, Any], port: dict[str, Any]) -> bool:
    want = rule_port.get("port")
    if want is None:
        return True
    if isinstance(want, str):
        return want == port.get("name")
    end = rule_port.get("endPort", want)
    return want <= port["containerPort"] <= end


def network_policy_errors(objects: list[dict[str, Any]]) -> list[str]:
    """In an overlay that defines pods: a default-deny ingress policy exists; every port a pod
    declares is opened by some allow rule (else nothing reaches it); and a rule open to any
    source (no `from`) opens only PUBLIC_PORTS, on the pods it selects."""
    pods = [pod for o in objects for pod in pod_templates(o)]
    if not pods:
        return []
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    out = []
    if not any(_is_default_deny(p) for p in policies):
        out.append("no default-deny ingress NetworkPolicy (podSelector {}, no ingress rules)")
    for policy in policies:
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            if rule.get("from"):
                continue
            ports = [p.get("port") for p in rule.get("ports") or []]
            if not ports or any(p not in PUBLIC_PORTS for p in ports):
                out.append(f"{_name(policy)}: a rule open to any source opens {ports or 'all'}"
                           f" (only {sorted(PUBLIC_PORTS)} may be)")  # fmt: skip
    for pod in pods:
        mine = [p for p in policies
                if selects((p.get("spec") or {}).get("podSelector"), pod.labels)]  # fmt: skip
        rules = [r for p in mine for r in (p.get("spec") or {}).get("ingress") or []]
        for container in pod.containers:
            for port in container.get("ports") or []:
                if not any(_port_matches(rp, port) for r in rules
                           for rp in (r.get("ports") or [{}])):  # fmt: skip
                    number = port["containerPort"]
                    out.append(f"{pod.where}: port {port.get('name')} ({number}) is opened "
                               "by no NetworkPolicy")  # fmt: skip
    return out
