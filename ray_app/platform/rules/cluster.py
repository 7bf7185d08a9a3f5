"""ValidateRayClusterSpec (validation.go L103-L327): wherever a cluster spec appears (a
RayCluster's spec, a RayJob's rayClusterSpec, a RayService's rayClusterConfig); and the
RayCluster's own rules (ValidateRayClusterMetadata, upgrade strategy)."""

from __future__ import annotations

from collections.abc import Callable

from ray_app.platform.rules.base import (
    AUTOSCALER_V2_ENV,
    EXTERNAL_STORAGE_NS_ANNOTATION,
    FT_ANNOTATION,
    MAX_RAYCLUSTER_NAME,
    Check,
    Rule,
    autoscaler_v2,
    autoscaling,
    dns1035_problems,
    env_var,
    groups,
    head_container,
    k8s_token_auth,
    label_value_problems,
    parse_version,
    pod_spec,
    qualified_name_problems,
    rule,
    workers,
)

CLUSTER_RULES: list[Rule] = []


def _cluster(rule_id: str, lines: str) -> Callable[[Check], Check]:
    return rule(CLUSTER_RULES, rule_id, lines)


@_cluster("cluster.head-container", "L104-L106")
def _head_has_container(spec: dict, _: dict) -> str | None:
    containers = pod_spec(spec.get("headGroupSpec") or {}).get("containers") or []
    return None if containers else "headGroupSpec should have at least one container"


@_cluster("cluster.group-resources", "L60-L69,L108-L110,L139-L141")
def _group_resources(spec: dict, _: dict) -> str | None:
    for name, group in groups(spec):
        params = group.get("rayStartParams") or {}
        in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        if in_params and group.get("resources"):
            return (f"resource fields should not be set in both rayStartParams and Resources "
                    f"for {name} group; please use only one")  # fmt: skip
    return None


@_cluster("cluster.group-labels", "L72-L100,L111-L113,L142-L144")
def _group_labels(spec: dict, _: dict) -> str | None:
    for name, group in groups(spec):
        if "labels" in (group.get("rayStartParams") or {}):
            return (f"rayStartParams['labels'] is not supported for {name} group; please use "
                    "the top-level Labels field instead")  # fmt: skip
        for key, value in (group.get("labels") or {}).items():
            for problem in qualified_name_problems(str(key)):
                return f"invalid label key for {name} group: '{key}', error: {problem}"
            for problem in label_value_problems(str(value)):
                return (f"invalid label value for key '{key}' in {name} group: '{value}', "
                        f"error: {problem}")  # fmt: skip
    return None


@_cluster("cluster.worker-container", "L119-L121")
def _worker_has_container(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        if not pod_spec(group).get("containers"):
            return "workerGroupSpec should have at least one container"
    return None


@_cluster("cluster.replicas-without-autoscaling", "L125-L127")
def _replicas_required(spec: dict, _: dict) -> str | None:
    if autoscaling(spec):
        return None
    for group in workers(spec):
        if group.get("minReplicas") is None or group.get("maxReplicas") is None:
            return (f"worker group {group.get('groupName')} must set both minReplicas and "
                    "maxReplicas when autoscaling is disabled")  # fmt: skip
    return None


@_cluster("cluster.replicas-range", "L128-L138")
def _replicas_range(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        name, low, high = group.get("groupName"), group.get("minReplicas"), group.get("maxReplicas")
        if low is not None and low < 0:
            return f"worker group {name} has negative minReplicas {low}"
        if high is not None and high < 0:
            return f"worker group {name} has negative maxReplicas {high}"
        if low is not None and high is not None and low > high:
            return f"worker group {name} has minReplicas {low} greater than maxReplicas {high}"
    return None


def _v2_via_env(spec: dict) -> bool:
    env = env_var(head_container(spec), AUTOSCALER_V2_ENV)
    return env is not None and env.get("value") in ("1", "true")


@_cluster("cluster.worker-idle-timeout", "L145-L147,L1006-L1027")
def _worker_idle_timeout(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        timeout = group.get("idleTimeoutSeconds")
        if timeout is None:
            continue
        if timeout < 0:
            return (f"worker group {group.get('groupName')}: idleTimeoutSeconds must be "
                    f"non-negative, got {timeout}")  # fmt: skip
        if not (autoscaler_v2(spec) or _v2_via_env(spec)):
            return (f"worker group {group.get('groupName')}: idleTimeoutSeconds is set, but "
                    "autoscaler v2 is not enabled")  # fmt: skip
    return None


@_cluster("cluster.worker-priority", "L148-L150,L1113-L1142")
def _worker_priority(spec: dict, _: dict) -> str | None:
    for group in workers(spec):
        priority, name = group.get("priority"), group.get("groupName")
        if not priority:
            continue
        version = parse_version(str(spec.get("rayVersion") or ""))
        if not spec.get("rayVersion"):
            return (f"worker group {name}: priority is set, but RayVersion was not specified. "
                    "Ray version 2.56.0 or later is required")  # fmt: skip
        if version is None or version < (2, 56, 0):
            return (f"worker group {name}: priority is set, but minimum Ray version is "
                    f"2.56.0, got {spec.get('rayVersion')}")  # fmt: skip
        if not (autoscaler_v2(spec) or _v2_via_env(spec)):
            return (f"worker group {name}: priority is set to {priority}, but autoscaler v2 "
                    "is not enabled")  # fmt: skip
    return None


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
    if env_var(head_container(spec), "RAY_REDIS_ADDRESS"):
        return ("RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
                "GcsFaultToleranceOptions is not set")  # fmt: skip
    return None


@_cluster("cluster.gcs-ft-options", "L167-L191,L333-L375")
def _ft_options(spec: dict, annotations: dict) -> str | None:
    options = spec.get("gcsFaultToleranceOptions")
    if options is None:
        return None
    head = head_container(spec)
    if ((spec.get("headGroupSpec") or {}).get("rayStartParams") or {}).get("redis-password"):
        return (
            "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is enabled"
        )
    for name in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS"):
        if env_var(head, name):
            return (
                f"cannot set `{name}` env var in head Pod when GcsFaultToleranceOptions is enabled"
            )
    if annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION):
        return (f"cannot set `{EXTERNAL_STORAGE_NS_ANNOTATION}` annotation when "
                "GcsFaultToleranceOptions is enabled")  # fmt: skip
    backend = options.get("backend") or "redis"
    if backend == "rocksdb":
        # GCSFaultToleranceEmbeddedStorage is off by default in v1.7.0.
        return ("the embedded RocksDB GCS fault tolerance backend requires the "
                "GCSFaultToleranceEmbeddedStorage feature gate to be enabled")  # fmt: skip
    if options.get("storage") is not None:
        return ("cannot set GcsFaultToleranceOptions.Storage when backend is 'redis' - it only "
                "applies to the 'rocksdb' backend")  # fmt: skip
    return None


@_cluster("cluster.redis-username", "L192-L195")
def _redis_username(spec: dict, _: dict) -> str | None:
    params = (spec.get("headGroupSpec") or {}).get("rayStartParams") or {}
    if params.get("redis-username") or env_var(head_container(spec), "REDIS_USERNAME"):
        return ("cannot set redis username in rayStartParams or environment variables - use "
                "GcsFaultToleranceOptions.RedisUsername instead")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-v2-env-without-autoscaling", "L205-L212")
def _v2_env_without_autoscaling(spec: dict, _: dict) -> str | None:
    if not autoscaling(spec) and _v2_via_env(spec):
        return (f"environment variable {AUTOSCALER_V2_ENV} cannot be set when "
                "enableInTreeAutoscaling is false")  # fmt: skip
    return None


@_cluster("cluster.suspended-group-with-autoscaling", "L214-L220")
def _suspended_group(spec: dict, _: dict) -> str | None:
    if autoscaling(spec):
        for group in workers(spec):
            if group.get("suspend") is True:
                return (f"worker group {group.get('groupName')} cannot be suspended with "
                        "Autoscaler enabled")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-version-and-env", "L222-L224")
def _version_and_env(spec: dict, _: dict) -> str | None:
    options = spec.get("autoscalerOptions") or {}
    if (
        autoscaling(spec)
        and options.get("version")
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
            return (f"restartPolicy for worker group {group.get('groupName')} should be Never "
                    "or unset when using autoscaler V2")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-idle-timeout", "L240-L245")
def _autoscaler_idle(spec: dict, _: dict) -> str | None:
    timeout = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if timeout is not None and timeout < 0:
        return f"autoscalerOptions.idleTimeoutSeconds must be non-negative, got {timeout}"
    return None


@_cluster("cluster.autoscaler-managed-env", "L252-L258")
def _autoscaler_env(spec: dict, _: dict) -> str | None:
    options = spec.get("autoscalerOptions") or {}
    if env_var(options, "KUBERAY_GEN_AUTOSCALER_START_CMD"):
        return ("autoscalerOptions.env must not contain KUBERAY_GEN_AUTOSCALER_START_CMD: it is "
                "managed by KubeRay")  # fmt: skip
    return None


@_cluster("cluster.feature-gated-fields", "L260-L262,L316-L318,L323-L326")
def _gated(spec: dict, _: dict) -> str | None:
    # RayClusterHistoryServer, RayClusterNetworkPolicy and RayClusterMTLS are off in v1.7.0.
    for field, gate in (("historyServerOptions", "RayClusterHistoryServer"),
                        ("networkPolicy", "RayClusterNetworkPolicy"),
                        ("tlsOptions", "RayClusterMTLS")):  # fmt: skip
        if spec.get(field) is not None:
            return f"spec.{field} requires the {gate} feature gate to be enabled"
    return None


@_cluster("cluster.token-auth-ray-version", "L284-L298")
def _token_auth(spec: dict, _: dict) -> str | None:
    if (spec.get("authOptions") or {}).get("mode") != "token":
        return None
    raw = str(spec.get("rayVersion") or "")
    if not raw:
        return ("authOptions.mode is 'token' but RayVersion was not specified. Ray version "
                "2.52.0 or later is required")  # fmt: skip
    version = parse_version(raw)
    if version is None:
        return f"authOptions.mode is 'token' but RayVersion format is invalid: {raw}"
    if version < (2, 52, 0):
        return f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {raw}"
    return None


@_cluster("cluster.k8s-token-auth", "L300-L313")
def _k8s_auth(spec: dict, _: dict) -> str | None:
    auth = spec.get("authOptions") or {}
    if not k8s_token_auth(auth):
        return None
    if auth.get("mode") != "token":
        return "authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'"
    version = parse_version(str(spec.get("rayVersion") or "")) or (0,)
    if version < (2, 55, 0):
        return (f"authOptions.enableK8sTokenAuth is enabled but minimum Ray version is 2.55.0, "
                f"got {spec.get('rayVersion')}")  # fmt: skip
    if auth.get("secretName"):
        return "authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is also set"
    return None


RAYCLUSTER_RULES: list[Rule] = []


@rule(RAYCLUSTER_RULES, "raycluster.name", "L32-L40")
def _cluster_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYCLUSTER_NAME:
        return f"RayCluster name should be no more than {MAX_RAYCLUSTER_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayCluster name should be a valid DNS1035 label: {problems}"
    return None


@rule(RAYCLUSTER_RULES, "raycluster.upgrade-strategy", "L42-L57")
def _cluster_upgrade(obj: dict, _: dict) -> str | None:
    kind = ((obj.get("spec") or {}).get("upgradeStrategy") or {}).get("type")
    if kind is not None and kind not in ("Recreate", "None"):
        return (f"The RayCluster spec is invalid: Spec.UpgradeStrategy.Type value {kind} is "
                "invalid, valid options are Recreate or None")  # fmt: skip
    return None
