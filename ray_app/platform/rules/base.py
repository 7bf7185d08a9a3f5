"""The building blocks of the ported rules: a rule, a violation, and the operator's own
predicates (`utils/util.go`). Kubernetes' and Go's checks (names, versions, durations) are in
`k8s.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

KUBERAY_TAG = "v1.7.0"
SOURCE = "ray-operator/controllers/ray/utils/validation.go"

# constant.go L375-381: a RayCluster name is at most 53 characters; a RayJob's or RayService's
# at most 47 (their cluster names append a 6-character suffix).
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
MAX_RAYSERVICE_NAME = MAX_RAYCLUSTER_NAME - 6
# constant.go L18, L85, L142-144, L158, L191, L59-60, L82
ORIGINATED_FROM_CRD_LABEL = "ray.io/originated-from-crd"
CLUSTER_SELECTOR_KEY = "ray.io/cluster"
RAY_REDIS_ADDRESS = "RAY_REDIS_ADDRESS"
REDIS_PASSWORD = "REDIS_PASSWORD"  # pragma: allowlist secret (an env var name)
REDIS_USERNAME = "REDIS_USERNAME"
GEN_AUTOSCALER_START_CMD = "KUBERAY_GEN_AUTOSCALER_START_CMD"
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
FT_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"


@dataclass(frozen=True)
class Violation:
    """One refused rule: which, where in the source, and the operator's message."""

    rule: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.rule}, {SOURCE}#{self.source}]"


Check = Callable[[dict[str, Any], dict[str, str]], str | None]


@dataclass(frozen=True)
class Rule:
    id: str
    lines: str
    check: Check


def rule(registry: list[Rule], rule_id: str, lines: str) -> Callable[[Check], Check]:
    def add(check: Check) -> Check:
        registry.append(Rule(rule_id, lines, check))
        return check

    return add


# --- helpers: the operator's own predicates (utils/util.go at v1.7.0) --------------------------


def autoscaling(spec: dict[str, Any]) -> bool:
    # util.go L751-754 IsAutoscalingEnabled
    return spec.get("enableInTreeAutoscaling") is True


def autoscaler_v2(spec: dict[str, Any]) -> bool:
    # util.go L756-758 IsAutoscalingV2Enabled
    return (spec.get("autoscalerOptions") or {}).get("version") == "v2"


def env_var(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    # util.go L699-706 EnvVarExists, L730-737 EnvVarByName: the first entry of that name.
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def autoscaler_v2_env(spec: dict[str, Any]) -> bool:
    """validation.go L1021-1024 (L1136-1139): the head's RAY_enable_autoscaler_v2 is "1" or
    "true", which enables autoscaler v2 on KubeRay < 1.4.0."""
    env = env_var(head_container(spec), AUTOSCALER_V2_ENV)
    return env is not None and env.get("value") in ("1", "true")


def group_name(group: dict[str, Any]) -> str:
    """A worker group's name as Go's %s prints it (absent is the empty string)."""
    return str(group.get("groupName") or "")


def head_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = (((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    return containers[0]  # RayContainerIndex = 0 (constant.go L51)


def pod_spec(group: dict[str, Any]) -> dict[str, Any]:
    return (group.get("template") or {}).get("spec") or {}


def workers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("workerGroupSpecs") or [])


def k8s_token_auth(auth: dict[str, Any] | None) -> bool:
    # util.go L800-802 IsK8sAuthEnabled
    return (auth or {}).get("enableK8sTokenAuth") is True


def groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Head", spec.get("headGroupSpec") or {}
    for group in workers(spec):
        yield group_name(group), group


def spec_of(obj: dict) -> dict[str, Any]:
    return obj.get("spec") or {}
