"""ValidateRayServiceMetadata / ValidateRayServiceSpec / ValidateClusterUpgradeOptions
(validation.go L632-L749). Messages are the operator's, verbatim."""

from __future__ import annotations

from ray_app.platform.rules.base import (
    INITIALIZING_TIMEOUT_ANNOTATION,
    MAX_RAYSERVICE_NAME,
    Rule,
    autoscaling,
    k8s_token_auth,
    rule,
    spec_of,
)
from ray_app.platform.rules.k8s import atoi, dns1035_problems, go_list, parse_duration

RAYSERVICE_RULES: list[Rule] = []
METADATA_INVALID = "The RayService metadata is invalid: "
INVALID = "The RayService spec is invalid: "


@rule(RAYSERVICE_RULES, "rayservice.name", "L632-L639")
def _service_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name.encode()) > MAX_RAYSERVICE_NAME:
        return (f"{METADATA_INVALID}RayService name should be no more than "
                f"{MAX_RAYSERVICE_NAME} characters")  # fmt: skip
    if problems := dns1035_problems(name):
        return (f"{METADATA_INVALID}RayService name should be a valid DNS1035 label: "
                f"{go_list(problems)}")  # fmt: skip
    return None


def _timeout_problem(value: str) -> str | None:
    """validateInitializingTimeout (L648-L678): a Go duration, else integer seconds."""
    key = INITIALIZING_TIMEOUT_ANNOTATION
    duration = parse_duration(value)
    if duration is not None and duration <= 0:
        return f"annotation {key} must be a positive duration, got: {value}"
    seconds = None if duration is not None else atoi(value)
    if seconds is not None and seconds <= 0:
        return f"annotation {key} must be a positive integer (seconds), got: {value}"
    if duration is not None or seconds is not None:
        return None
    return (f"annotation {key} has invalid format: {value}. Expected Go duration format (e.g., "
            "'5m', '1h') or positive integer seconds")  # fmt: skip


@rule(RAYSERVICE_RULES, "rayservice.initializing-timeout", "L640-L678")
def _initializing_timeout(obj: dict, annotations: dict) -> str | None:
    value = str(annotations.get(INITIALIZING_TIMEOUT_ANNOTATION) or "")
    if value and (problem := _timeout_problem(value)):
        return f"{METADATA_INVALID}RayService annotations is invalid: {problem}"
    return None


@rule(RAYSERVICE_RULES, "rayservice.k8s-token-auth", "L681-L683")
def _service_k8s_auth(obj: dict, _: dict) -> str | None:
    if k8s_token_auth((spec_of(obj).get("rayClusterConfig") or {}).get("authOptions")):
        return INVALID + "K8s token auth mode is currently not supported for RayService"
    return None


RAYSERVICE_CLUSTER_AT = len(RAYSERVICE_RULES)  # L685-L687: ValidateRayClusterSpec


@rule(RAYSERVICE_RULES, "rayservice.head-service-name", "L689-L691")
def _head_service(obj: dict, _: dict) -> str | None:
    head = (spec_of(obj).get("rayClusterConfig") or {}).get("headGroupSpec") or {}
    if ((head.get("headService") or {}).get("metadata") or {}).get("name"):
        return (INVALID + "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should "
                "not be set")  # fmt: skip
    return None


def _incremental_problem(spec: dict) -> str | None:
    """ValidateClusterUpgradeOptions (L717-L749); maxSurgePercent takes its CRD default, 100."""
    if not autoscaling(spec.get("rayClusterConfig") or {}):
        return "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade"
    options = (spec.get("upgradeStrategy") or {}).get("clusterUpgradeOptions")
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


@rule(RAYSERVICE_RULES, "rayservice.upgrade-strategy", "L693-L712,L717-L749")
def _service_upgrade(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    kind = (spec.get("upgradeStrategy") or {}).get("type")
    valid = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
    if kind is not None and kind not in valid:
        return (f"{INVALID}Spec.UpgradeStrategy.Type value {kind} is invalid, valid options are "
                f"{valid[0]}, {valid[1]}, or {valid[2]}")  # fmt: skip
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        return (f"{INVALID}Spec.RayClusterDeletionDelaySeconds should be a non-negative "
                f"integer, got {delay}")  # fmt: skip
    # util.go L917-923 IsIncrementalUpgradeEnabled (RayServiceIncrementalUpgrade is on).
    if kind == "NewClusterWithIncrementalUpgrade" and (problem := _incremental_problem(spec)):
        return INVALID + problem
    return None
