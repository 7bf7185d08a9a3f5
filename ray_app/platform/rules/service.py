"""ValidateRayServiceSpec / ValidateRayServiceMetadata (validation.go L632-L749)."""

from __future__ import annotations

import re

from ray_app.platform.rules.base import (
    GO_DURATION,
    INITIALIZING_TIMEOUT_ANNOTATION,
    MAX_RAYSERVICE_NAME,
    Rule,
    autoscaling,
    dns1035_problems,
    k8s_token_auth,
    rule,
    spec_of,
)

RAYSERVICE_RULES: list[Rule] = []


@rule(RAYSERVICE_RULES, "rayservice.name", "L632-L639")
def _service_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYSERVICE_NAME:
        return f"RayService name should be no more than {MAX_RAYSERVICE_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayService name should be a valid DNS1035 label: {problems}"
    return None


@rule(RAYSERVICE_RULES, "rayservice.initializing-timeout", "L640-L678")
def _initializing_timeout(obj: dict, annotations: dict) -> str | None:
    value = str(annotations.get(INITIALIZING_TIMEOUT_ANNOTATION, ""))
    if not value:
        return None
    if GO_DURATION.match(value):
        if value.startswith("-") or not re.search(r"[1-9]", value):
            return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive duration"
        return None
    if re.fullmatch(r"[-+]?\d+", value):
        if int(value) <= 0:
            return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive integer"
        return None
    return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} has invalid format: {value}"


@rule(RAYSERVICE_RULES, "rayservice.k8s-token-auth", "L681-L683")
def _service_k8s_auth(obj: dict, _: dict) -> str | None:
    if k8s_token_auth((spec_of(obj).get("rayClusterConfig") or {}).get("authOptions")):
        return "K8s token auth mode is currently not supported for RayService"
    return None


RAYSERVICE_CLUSTER_AT = len(RAYSERVICE_RULES)  # L685-L687: ValidateRayClusterSpec


@rule(RAYSERVICE_RULES, "rayservice.head-service-name", "L689-L691")
def _head_service(obj: dict, _: dict) -> str | None:
    head = (spec_of(obj).get("rayClusterConfig") or {}).get("headGroupSpec") or {}
    if ((head.get("headService") or {}).get("metadata") or {}).get("name"):
        return "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set"
    return None


@rule(RAYSERVICE_RULES, "rayservice.upgrade-strategy", "L693-L712,L717-L749")
def _service_upgrade(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    strategy = spec.get("upgradeStrategy") or {}
    kind = strategy.get("type")
    valid = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
    if kind is not None and kind not in valid:
        return f"Spec.UpgradeStrategy.Type value {kind} is invalid, valid options are {valid}"
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        return f"Spec.RayClusterDeletionDelaySeconds should be a non-negative integer, got {delay}"
    if kind == "NewClusterWithIncrementalUpgrade":  # RayServiceIncrementalUpgrade is on
        if not autoscaling(spec.get("rayClusterConfig") or {}):
            return "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade"
        options = strategy.get("clusterUpgradeOptions")
        if options is None:
            return "ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade"
        surge, step = options.get("maxSurgePercent", 100), options.get("stepSizePercent")
        if not 0 <= surge <= 100:
            return "maxSurgePercent must be between 0 and 100"
        if step is None or not 0 <= step <= 100:
            return "stepSizePercent must be between 0 and 100"
        if step > surge:
            return "stepSizePercent must be less than or equal to maxSurgePercent"
        if (options.get("intervalSeconds") or 0) <= 0:
            return "intervalSeconds must be greater than 0"
        if not options.get("gatewayClassName"):
            return "gatewayClassName is required for NewClusterWithIncrementalUpgrade"
    return None
