"""ValidateRayClusterSpec (validation.go L102-L327): wherever a cluster spec appears (a
RayCluster's spec, a RayJob's rayClusterSpec, a RayService's rayClusterConfig); and the
RayCluster's own rules (ValidateRayClusterMetadata L32-L40, ValidateRayClusterUpgradeOptions
L42-L57). Messages are the operator's, verbatim."""

from __future__ import annotations

from collections.abc import Callable

from ray_app.platform.rules.base import (
    AUTOSCALER_V2_ENV,
    EXTERNAL_STORAGE_NS_ANNOTATION,
    FT_ANNOTATION,
    GEN_AUTOSCALER_START_CMD,
    MAX_RAYCLUSTER_NAME,
    ORIGINATED_FROM_CRD_LABEL,
    RAY_REDIS_ADDRESS,
    REDIS_PASSWORD,
    REDIS_USERNAME,
    Check,
    Rule,
    autoscaler_v2,
    autoscaler_v2_env,
    autoscaling,
    env_var,
    group_name,
    groups,
    head_container,
    k8s_token_auth,
    pod_spec,
    rule,
    workers,
)
from ray_app.platform.rules.k8s import (
    dns1035_problems,
    go_list,
    label_value_problems,
    parse_generic,
    qualified_name_problems,
    version_less,
)

CLUSTER_RULES: list[Rule] = []


def _cluster(rule_id: str, lines: str) -> Callable[[Check], Check]:
    return rule(CLUSTER_RULES, rule_id, lines)


@_cluster("cluster.head-container", "L104-L106")
def _head_has_container(spec: dict, _: dict) -> str | None:
    containers = pod_spec(spec.get("headGroupSpec") or {}).get("containers") or []
    return None if containers else "headGroupSpec should have at least one container"


@_cluster("cluster.group-resources", "L59-L69,L108-L110,L139-L141")
def _group_resources(spec: dict, _: dict) -> str | None:
    for name, group in groups(spec):
        params = group.get("rayStartParams") or {}
        in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        if in_params and group.get("resources"):
            return (f"resource fields should not be set in both rayStartParams and Resources "
                    f"for {name} group; please use only one")  # fmt: skip
    return None


@_cluster("cluster.group-labels", "L71-L100,L111-L113,L142-L144")
def _group_labels(spec: dict, _: dict) -> str | None:
    # Go ranges over the labels map in random order; we keep the manifest's.
    for name, group in groups(spec):
        if "labels" in (group.get("rayStartParams") or {}):
            return (f"rayStartParams['labels'] is not supported for {name} group; please use "
                    "the top-level Labels field instead")  # fmt: skip
        errors = []
        for key, value in (group.get("labels") or {}).items():
            errors += [f"invalid label key for {name} group: '{key}', error: {problem}"
                       for problem in qualified_name_problems(str(key))]  # fmt: skip
            errors += [f"invalid label value for key '{key}' in {name} group: '{value}', "
                       f"error: {problem}"
                       for problem in label_value_problems(str(value))]  # fmt: skip
        if errors:
            return "; ".join(errors)
    return None


@_cluster("cluster.worker-container", "L119-L121")
def _worker_has_container(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        if not pod_spec(group).get("containers"):
            return "workerGroupSpec should have at least one container"
    return None


@_cluster("cluster.replicas-without-autoscaling", "L123-L127")
def _replicas_required(spec: dict, _: dict) -> str | None:
    if autoscaling(spec):
        return None
    for group in workers(spec):
        if group.get("minReplicas") is None or group.get("maxReplicas") is None:
            return (f"worker group {group_name(group)} must set both minReplicas and "
                    "maxReplicas when autoscaling is disabled")  # fmt: skip
    return None


@_cluster("cluster.replicas-range", "L128-L138")
def _replicas_range(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        name, low, high = group_name(group), group.get("minReplicas"), group.get("maxReplicas")
        if low is not None and low < 0:
            return f"worker group {name} has negative minReplicas {low}"
        if high is not None and high < 0:
            return f"worker group {name} has negative maxReplicas {high}"
        if low is not None and high is not None and low > high:
            return f"worker group {name} has minReplicas {low} greater than maxReplicas {high}"
    return None


@_cluster("cluster.worker-idle-timeout", "L145-L147,L1005-L1027")
def _worker_idle_timeout(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        timeout = group.get("idleTimeoutSeconds")
        if timeout is None:
            continue
        if timeout < 0:
            return (f"worker group {group_name(group)}: idleTimeoutSeconds must be "
                    f"non-negative, got {timeout}")  # fmt: skip
        if not (autoscaler_v2(spec) or autoscaler_v2_env(spec)):
            return (f"worker group {group_name(group)}: idleTimeoutSeconds is set, but "
                    "autoscaler v2 is not enabled. Please set .spec.autoscalerOptions.version "
                    f"to 'v2' (or set {AUTOSCALER_V2_ENV} environment variable to 'true' in the "
                    "head pod if using KubeRay < 1.4.0)")  # fmt: skip
    return None


def _priority_problem(group: dict, spec: dict) -> str | None:
    """validateWorkerGroupPriority (L1112-L1142)."""
    priority, name, raw = group.get("priority"), group_name(group), spec.get("rayVersion") or ""
    if not priority:
        return None
    if not raw:
        return (f"worker group {name}: priority is set, but RayVersion was not specified. "
                "Ray version 2.56.0 or later is required")  # fmt: skip
    try:
        version = parse_generic(str(raw))
    except ValueError as err:
        return (f"worker group {name}: priority is set, but RayVersion format is invalid: "
                f"{raw}, {err}")  # fmt: skip
    if version_less(version, "2.56.0"):
        return (f"worker group {name}: priority is set, but minimum Ray version is 2.56.0, "
                f"got {raw}")  # fmt: skip
    if autoscaler_v2(spec) or autoscaler_v2_env(spec):
        return None
    return (f"worker group {name}: priority is set to {priority}, but autoscaler v2 is not "
            "enabled. Priority is only supported with autoscaler v2 enabled")  # fmt: skip


@_cluster("cluster.worker-priority", "L148-L150,L1112-L1142")
def _worker_priority(spec: dict, _: dict) -> str | None:
    return next(filter(None, (_priority_problem(g, spec) for g in workers(spec))), None)


@_cluster("cluster.gcs-ft-annotation-and-options", "L153-L156")
def _ft_twice(spec: dict, annotations: dict) -> str | None:
    if annotations.get(FT_ANNOTATION) and spec.get("gcsFaultToleranceOptions") is not None:
        return (f"{FT_ANNOTATION} annotation and GcsFaultToleranceOptions are both set. Please "
                "use only GcsFaultToleranceOptions to configure GCS fault tolerance")  # fmt: skip
    return None


@_cluster("cluster.redis-address-without-ft", "L158-L164")
def _redis_without_ft(spec: dict, annotations: dict) -> str | None:
    # util.go L765-768 IsGCSFaultToleranceEnabled
    ft = str(annotations.get(FT_ANNOTATION, "")).lower() == "true"
    if ft or spec.get("gcsFaultToleranceOptions") is not None:
        return None
    if env_var(head_container(spec), RAY_REDIS_ADDRESS):
        return (f"{RAY_REDIS_ADDRESS} is set which implicitly enables GCS fault tolerance, but "
                "GcsFaultToleranceOptions is not set. Please set GcsFaultToleranceOptions to "
                "enable GCS fault tolerance")  # fmt: skip
    return None


@_cluster("cluster.gcs-ft-options", "L166-L191,L329-L375")
def _ft_options(spec: dict, annotations: dict) -> str | None:
    options = spec.get("gcsFaultToleranceOptions")
    if options is None:
        return None
    head = head_container(spec)
    if ((spec.get("headGroupSpec") or {}).get("rayStartParams") or {}).get("redis-password"):
        return ("cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is "
                "enabled - use GcsFaultToleranceOptions.RedisPassword instead")  # fmt: skip
    for name, field in ((REDIS_PASSWORD, "RedisPassword"), (RAY_REDIS_ADDRESS, "RedisAddress")):
        if env_var(head, name):
            return (f"cannot set `{name}` env var in head Pod when GcsFaultToleranceOptions is "
                    f"enabled - use GcsFaultToleranceOptions.{field} instead")  # fmt: skip
    if annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION):
        return (f"cannot set `{EXTERNAL_STORAGE_NS_ANNOTATION}` annotation when "
                "GcsFaultToleranceOptions is enabled - use "
                "GcsFaultToleranceOptions.ExternalStorageNamespace instead")  # fmt: skip
    if options.get("backend") == "rocksdb":
        # GCSFaultToleranceEmbeddedStorage is off in v1.7.0, so L339-L368 are never reached.
        return ("the embedded RocksDB GCS fault tolerance backend (GcsFaultToleranceOptions."
                "Backend: 'rocksdb') requires the GCSFaultToleranceEmbeddedStorage feature gate "
                "to be enabled")  # fmt: skip
    if options.get("storage") is not None:
        return ("cannot set GcsFaultToleranceOptions.Storage when backend is 'redis' - it only "
                "applies to the 'rocksdb' backend")  # fmt: skip
    return None


@_cluster("cluster.redis-username", "L192-L195")
def _redis_username(spec: dict, _: dict) -> str | None:
    params = (spec.get("headGroupSpec") or {}).get("rayStartParams") or {}
    if params.get("redis-username") or env_var(head_container(spec), REDIS_USERNAME):
        return ("cannot set redis username in rayStartParams or environment variables - use "
                "GcsFaultToleranceOptions.RedisUsername instead")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-v2-env-without-autoscaling", "L205-L212")
def _v2_env_without_autoscaling(spec: dict, _: dict) -> str | None:
    if not autoscaling(spec) and autoscaler_v2_env(spec):
        value = (env_var(head_container(spec), AUTOSCALER_V2_ENV) or {}).get("value")
        return (f"environment variable {AUTOSCALER_V2_ENV} cannot be set to '{value}' when "
                "enableInTreeAutoscaling is false. Please set enableInTreeAutoscaling: true to "
                "use autoscaler v2")  # fmt: skip
    return None


@_cluster("cluster.suspended-group-with-autoscaling", "L197-L203,L214-L220")
def _suspended_group(spec: dict, _: dict) -> str | None:
    # L197-L203 refuse a suspended group while RayJobDeletionPolicy is off; it is on in v1.7.0.
    if autoscaling(spec):
        for group in workers(spec):
            if group.get("suspend") is True:
                return (f"worker group {group_name(group)} cannot be suspended with "
                        "Autoscaler enabled")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-version-and-env", "L222-L224")
def _version_and_env(spec: dict, _: dict) -> str | None:
    options = spec.get("autoscalerOptions") or {}
    if (
        autoscaling(spec)
        and options.get("version") is not None
        and env_var(head_container(spec), AUTOSCALER_V2_ENV)
    ):
        return (f"both .spec.autoscalerOptions.version and head Pod env var {AUTOSCALER_V2_ENV} "
                "are set, please only use the former")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-v2-restart-policy", "L226-L236")
def _v2_restart_policy(spec: dict, _: dict) -> str | None:
    if not (autoscaling(spec) and autoscaler_v2(spec)):
        return None
    if pod_spec(spec.get("headGroupSpec") or {}).get("restartPolicy") not in (None, "", "Never"):
        return "restartPolicy for head Pod should be Never or unset when using autoscaler V2"
    for group in workers(spec):
        if pod_spec(group).get("restartPolicy") not in (None, "", "Never"):
            return (f"restartPolicy for worker group {group_name(group)} should be Never or "
                    "unset when using autoscaler V2")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-idle-timeout", "L240-L245")
def _autoscaler_idle(spec: dict, _: dict) -> str | None:
    timeout = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if timeout is not None and timeout < 0:
        return f"autoscalerOptions.idleTimeoutSeconds must be non-negative, got {timeout}"
    return None


@_cluster("cluster.autoscaler-managed-env", "L247-L258")
def _autoscaler_env(spec: dict, _: dict) -> str | None:
    options = spec.get("autoscalerOptions")
    if options is not None and env_var(options, GEN_AUTOSCALER_START_CMD):
        return (f"autoscalerOptions.env must not contain {GEN_AUTOSCALER_START_CMD}: it is "
                "managed by KubeRay and injected automatically into the autoscaler "
                "container")  # fmt: skip
    return None


@_cluster("cluster.feature-gated-fields", "L260-L262,L315-L318,L323-L326")
def _gated(spec: dict, _: dict) -> str | None:
    # RayClusterHistoryServer, RayClusterNetworkPolicy and RayClusterMTLS are off in v1.7.0, so
    # the checks behind them (L263-L281, validateNetworkPolicy, validateTLSOptions) never run.
    # The operator checks authOptions (L284-L313) between the first gate and the other two.
    if spec.get("historyServerOptions") is not None:
        return "RayClusterHistoryServer feature gate is not enabled"
    for field, gate in (("networkPolicy", "RayClusterNetworkPolicy"),
                        ("tlsOptions", "RayClusterMTLS")):  # fmt: skip
        if spec.get(field) is not None:
            return f"spec.{field} requires the {gate} feature gate to be enabled"
    return None


def _token_version(spec: dict) -> tuple[int, ...] | str:
    """L285-L298: the rayVersion token auth needs, or the operator's message refusing it."""
    raw = spec.get("rayVersion") or ""
    if not raw:
        return ("authOptions.mode is 'token' but RayVersion was not specified. Ray version "
                "2.52.0 or later is required")  # fmt: skip
    try:
        version = parse_generic(str(raw))
    except ValueError as err:
        return f"authOptions.mode is 'token' but RayVersion format is invalid: {raw}, {err}"
    if version_less(version, "2.52.0"):
        return f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {raw}"
    return version


def _token_mode(spec: dict) -> bool:
    # util.go L796-798 IsAuthEnabled
    return (spec.get("authOptions") or {}).get("mode") == "token"


@_cluster("cluster.token-auth-ray-version", "L284-L298")
def _token_auth(spec: dict, _: dict) -> str | None:
    if not _token_mode(spec):
        return None
    found = _token_version(spec)
    return found if isinstance(found, str) else None


@_cluster("cluster.k8s-token-auth", "L300-L313")
def _k8s_auth(spec: dict, _: dict) -> str | None:
    auth = spec.get("authOptions") or {}
    if not k8s_token_auth(auth):
        return None
    if not _token_mode(spec):
        return "authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'"
    version = _token_version(spec)
    if isinstance(version, str):
        return None  # refused by cluster.token-auth-ray-version before L300 is reached
    if version_less(version, "2.55.0"):
        return (f"authOptions.enableK8sTokenAuth is enabled but minimum Ray version is 2.55.0, "
                f"got {spec.get('rayVersion')}")  # fmt: skip
    if auth.get("secretName"):
        return "authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is also set"
    return None


RAYCLUSTER_RULES: list[Rule] = []


@rule(RAYCLUSTER_RULES, "raycluster.name", "L32-L40")
def _cluster_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name.encode()) > MAX_RAYCLUSTER_NAME:
        return f"RayCluster name should be no more than {MAX_RAYCLUSTER_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayCluster name should be a valid DNS1035 label: {go_list(problems)}"
    return None


@rule(RAYCLUSTER_RULES, "raycluster.upgrade-strategy", "L42-L57")
def _cluster_upgrade(obj: dict, _: dict) -> str | None:
    kind = ((obj.get("spec") or {}).get("upgradeStrategy") or {}).get("type")
    if kind is None:
        return None
    if kind not in ("Recreate", "None"):
        return (f"The RayCluster spec is invalid: Spec.UpgradeStrategy.Type value {kind} is "
                "invalid, valid options are Recreate or None")  # fmt: skip
    # util.go L62-67 GetCRDType: the label a RayJob or RayService puts on the cluster it creates
    # (rayjob_controller.go L1001, rayservice_controller.go L1509).
    creator = ((obj.get("metadata") or {}).get("labels") or {}).get(ORIGINATED_FROM_CRD_LABEL)
    if creator in ("RayJob", "RayService"):
        return f"upgradeStrategy cannot be set when RayCluster is created by {creator}"
    return None
