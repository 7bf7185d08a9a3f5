"""The building blocks of the ported rules: a rule, a violation, and the operator's own
predicates (`utils/util.go`) and Kubernetes' name checks (`k8s.io/apimachinery` validation)."""

from __future__ import annotations

import re
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
# constant.go L85, L142-144, L158, L191, L59-60, L82
CLUSTER_SELECTOR_KEY = "ray.io/cluster"
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
FT_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
GO_DURATION = re.compile(r"^[-+]?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$")


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
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def head_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = (((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    return containers[0]  # RayContainerIndex = 0 (constant.go L51)


def pod_spec(group: dict[str, Any]) -> dict[str, Any]:
    return (group.get("template") or {}).get("spec") or {}


def workers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("workerGroupSpecs") or [])


def parse_version(text: str) -> tuple[int, ...] | None:
    # k8s.io/apimachinery version.ParseGeneric: 'X.Y[.Z]' with an optional leading 'v'.
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())


def k8s_token_auth(auth: dict[str, Any] | None) -> bool:
    # util.go L800-802 IsK8sAuthEnabled
    return bool((auth or {}).get("enableK8sTokenAuth"))


def dns1035_problems(name: str) -> list[str]:
    """k8s.io/apimachinery validation.IsDNS1035Label."""
    problems = []
    if len(name) > 63:
        problems.append("must be no more than 63 characters")
    if not DNS1035.match(name):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character"
        )
    return problems


def qualified_name_problems(key: str) -> list[str]:
    """k8s.io/apimachinery validation.IsQualifiedName (label keys)."""
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        problems.append("prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not QUALIFIED.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (at most 63)"
        )
    return problems


def label_value_problems(value: str) -> list[str]:
    """k8s.io/apimachinery validation.IsValidLabelValue."""
    if value == "":
        return []
    if len(value) > 63 or not QUALIFIED.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        ]
    return []


def groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Head", spec.get("headGroupSpec") or {}
    for group in workers(spec):
        yield str(group.get("groupName", "")), group


def spec_of(obj: dict) -> dict[str, Any]:
    return obj.get("spec") or {}
