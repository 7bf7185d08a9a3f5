"""KubeRay v1.7's admission rules, ported: what the operator refuses beyond the CRD schema.

The API server accepts any object its CRD schema allows; the operator then runs
`ray-operator/controllers/ray/utils/validation.go` on it and, on the first violation, marks a
RayJob `ValidationFailed` (never reconciled again), a RayService `Ready=False/ValidationFailed`,
or leaves a RayCluster unreconciled with a warning event. `ray-app kube-check` runs these rules
on every rendered overlay and on every object the launcher can build, so such an object never
reaches a cluster.

Source: ray-project/kuberay tag v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7);
every rule cites the lines of validation.go (and constant.go) it ports. Feature gates take
their v1.7.0 defaults (`ray-operator/pkg/features/features.go`): RayJobDeletionPolicy and
RayServiceIncrementalUpgrade on; RayClusterNetworkPolicy, RayClusterMTLS,
RayClusterHistoryServer and GCSFaultToleranceEmbeddedStorage off. Status-only rules
(ValidateRayClusterStatus, ValidateRayJobStatus) check what the operator writes, not what
we write, and are not ported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

KUBERAY_TAG = "v1.7.0"
# The tag's git commit (not a secret; detect-secrets flags any long hex string).
KUBERAY_COMMIT = "59d663aeec13760646da3db9c1cf8cfe883e30b7"  # pragma: allowlist secret
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

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_GO_DURATION = re.compile(r"^[-+]?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$")


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


def _rule(registry: list[Rule], rule_id: str, lines: str) -> Callable[[Check], Check]:
    def add(check: Check) -> Check:
        registry.append(Rule(rule_id, lines, check))
        return check

    return add


# --- helpers: the operator's own predicates (utils/util.go at v1.7.0) --------------------------


def _autoscaling(spec: dict[str, Any]) -> bool:
    # util.go L751-754 IsAutoscalingEnabled
    return spec.get("enableInTreeAutoscaling") is True


def _autoscaler_v2(spec: dict[str, Any]) -> bool:
    # util.go L756-758 IsAutoscalingV2Enabled
    return (spec.get("autoscalerOptions") or {}).get("version") == "v2"


def _env(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def _head_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = (((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    return containers[0]  # RayContainerIndex = 0 (constant.go L51)


def _pod_spec(group: dict[str, Any]) -> dict[str, Any]:
    return (group.get("template") or {}).get("spec") or {}


def _workers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("workerGroupSpecs") or [])


def _version(text: str) -> tuple[int, ...] | None:
    # k8s.io/apimachinery version.ParseGeneric: 'X.Y[.Z]' with an optional leading 'v'.
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())


def _k8s_token_auth(auth: dict[str, Any] | None) -> bool:
    # util.go L800-802 IsK8sAuthEnabled
    return bool((auth or {}).get("enableK8sTokenAuth"))


def dns1035_problems(name: str) -> list[str]:
    """k8s.io/apimachinery validation.IsDNS1035Label."""
    problems = []
    if len(name) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1035.match(name):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character"
        )
    return problems


def _qualified_name_problems(key: str) -> list[str]:
    """k8s.io/apimachinery validation.IsQualifiedName (label keys)."""
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        problems.append("prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (at most 63)"
        )
    return problems


def _label_value_problems(value: str) -> list[str]:
    """k8s.io/apimachinery validation.IsValidLabelValue."""
    if value == "":
        return []
    if len(value) > 63 or not _QUALIFIED.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        ]
    return []


def _groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Head", spec.get("headGroupSpec") or {}
    for group in _workers(spec):
        yield str(group.get("groupName", "")), group


# --- ValidateRayClusterSpec (validation.go L103-327): wherever a cluster spec appears ----------

CLUSTER_RULES: list[Rule] = []


def _cluster(rule_id: str, lines: str) -> Callable[[Check], Check]:
    return _rule(CLUSTER_RULES, rule_id, lines)


@_cluster("cluster.head-container", "L104-L106")
def _head_has_container(spec: dict, _: dict) -> str | None:
    containers = _pod_spec(spec.get("headGroupSpec") or {}).get("containers") or []
    return None if containers else "headGroupSpec should have at least one container"


@_cluster("cluster.group-resources", "L60-L69,L108-L110,L139-L141")
def _group_resources(spec: dict, _: dict) -> str | None:
    for name, group in _groups(spec):
        params = group.get("rayStartParams") or {}
        in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        if in_params and group.get("resources"):
            return (f"resource fields should not be set in both rayStartParams and Resources "
                    f"for {name} group; please use only one")  # fmt: skip
    return None


@_cluster("cluster.group-labels", "L72-L100,L111-L113,L142-L144")
def _group_labels(spec: dict, _: dict) -> str | None:
    for name, group in _groups(spec):
        if "labels" in (group.get("rayStartParams") or {}):
            return (f"rayStartParams['labels'] is not supported for {name} group; please use "
                    "the top-level Labels field instead")  # fmt: skip
        for key, value in (group.get("labels") or {}).items():
            for problem in _qualified_name_problems(str(key)):
                return f"invalid label key for {name} group: '{key}', error: {problem}"
            for problem in _label_value_problems(str(value)):
                return (f"invalid label value for key '{key}' in {name} group: '{value}', "
                        f"error: {problem}")  # fmt: skip
    return None


@_cluster("cluster.worker-container", "L119-L121")
def _worker_has_container(spec: dict, _: dict) -> str | None:
    for group in _workers(spec):
        if not _pod_spec(group).get("containers"):
            return "workerGroupSpec should have at least one container"
    return None


@_cluster("cluster.replicas-without-autoscaling", "L125-L127")
def _replicas_required(spec: dict, _: dict) -> str | None:
    if _autoscaling(spec):
        return None
    for group in _workers(spec):
        if group.get("minReplicas") is None or group.get("maxReplicas") is None:
            return (f"worker group {group.get('groupName')} must set both minReplicas and "
                    "maxReplicas when autoscaling is disabled")  # fmt: skip
    return None


@_cluster("cluster.replicas-range", "L128-L138")
def _replicas_range(spec: dict, _: dict) -> str | None:
    for group in _workers(spec):
        name, low, high = group.get("groupName"), group.get("minReplicas"), group.get("maxReplicas")
        if low is not None and low < 0:
            return f"worker group {name} has negative minReplicas {low}"
        if high is not None and high < 0:
            return f"worker group {name} has negative maxReplicas {high}"
        if low is not None and high is not None and low > high:
            return f"worker group {name} has minReplicas {low} greater than maxReplicas {high}"
    return None


def _v2_via_env(spec: dict) -> bool:
    env = _env(_head_container(spec), AUTOSCALER_V2_ENV)
    return env is not None and env.get("value") in ("1", "true")


@_cluster("cluster.worker-idle-timeout", "L145-L147,L1006-L1027")
def _worker_idle_timeout(spec: dict, _: dict) -> str | None:
    for group in _workers(spec):
        timeout = group.get("idleTimeoutSeconds")
        if timeout is None:
            continue
        if timeout < 0:
            return (f"worker group {group.get('groupName')}: idleTimeoutSeconds must be "
                    f"non-negative, got {timeout}")  # fmt: skip
        if not (_autoscaler_v2(spec) or _v2_via_env(spec)):
            return (f"worker group {group.get('groupName')}: idleTimeoutSeconds is set, but "
                    "autoscaler v2 is not enabled")  # fmt: skip
    return None


@_cluster("cluster.worker-priority", "L148-L150,L1113-L1142")
def _worker_priority(spec: dict, _: dict) -> str | None:
    for group in _workers(spec):
        priority, name = group.get("priority"), group.get("groupName")
        if not priority:
            continue
        version = _version(str(spec.get("rayVersion") or ""))
        if not spec.get("rayVersion"):
            return (f"worker group {name}: priority is set, but RayVersion was not specified. "
                    "Ray version 2.56.0 or later is required")  # fmt: skip
        if version is None or version < (2, 56, 0):
            return (f"worker group {name}: priority is set, but minimum Ray version is "
                    f"2.56.0, got {spec.get('rayVersion')}")  # fmt: skip
        if not (_autoscaler_v2(spec) or _v2_via_env(spec)):
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
    if _env(_head_container(spec), "RAY_REDIS_ADDRESS"):
        return ("RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
                "GcsFaultToleranceOptions is not set")  # fmt: skip
    return None


@_cluster("cluster.gcs-ft-options", "L167-L191,L333-L375")
def _ft_options(spec: dict, annotations: dict) -> str | None:
    options = spec.get("gcsFaultToleranceOptions")
    if options is None:
        return None
    head = _head_container(spec)
    if ((spec.get("headGroupSpec") or {}).get("rayStartParams") or {}).get("redis-password"):
        return (
            "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is enabled"
        )
    for name in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS"):
        if _env(head, name):
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
    if params.get("redis-username") or _env(_head_container(spec), "REDIS_USERNAME"):
        return ("cannot set redis username in rayStartParams or environment variables - use "
                "GcsFaultToleranceOptions.RedisUsername instead")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-v2-env-without-autoscaling", "L205-L212")
def _v2_env_without_autoscaling(spec: dict, _: dict) -> str | None:
    if not _autoscaling(spec) and _v2_via_env(spec):
        return (f"environment variable {AUTOSCALER_V2_ENV} cannot be set when "
                "enableInTreeAutoscaling is false")  # fmt: skip
    return None


@_cluster("cluster.suspended-group-with-autoscaling", "L214-L220")
def _suspended_group(spec: dict, _: dict) -> str | None:
    if _autoscaling(spec):
        for group in _workers(spec):
            if group.get("suspend") is True:
                return (f"worker group {group.get('groupName')} cannot be suspended with "
                        "Autoscaler enabled")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-version-and-env", "L222-L224")
def _version_and_env(spec: dict, _: dict) -> str | None:
    options = spec.get("autoscalerOptions") or {}
    if (
        _autoscaling(spec)
        and options.get("version")
        and _env(_head_container(spec), AUTOSCALER_V2_ENV)
    ):
        return (f"both .spec.autoscalerOptions.version and head Pod env var {AUTOSCALER_V2_ENV} "
                "are set, please only use the former")  # fmt: skip
    return None


@_cluster("cluster.autoscaler-v2-restart-policy", "L226-L236")
def _v2_restart_policy(spec: dict, _: dict) -> str | None:
    if not (_autoscaling(spec) and _autoscaler_v2(spec)):
        return None
    if _pod_spec(spec.get("headGroupSpec") or {}).get("restartPolicy") not in (None, "", "Never"):
        return "restartPolicy for head Pod should be Never or unset when using autoscaler V2"
    for group in _workers(spec):
        if _pod_spec(group).get("restartPolicy") not in (None, "", "Never"):
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
    if _env(options, "KUBERAY_GEN_AUTOSCALER_START_CMD"):
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
    version = _version(raw)
    if version is None:
        return f"authOptions.mode is 'token' but RayVersion format is invalid: {raw}"
    if version < (2, 52, 0):
        return f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {raw}"
    return None


@_cluster("cluster.k8s-token-auth", "L300-L313")
def _k8s_auth(spec: dict, _: dict) -> str | None:
    auth = spec.get("authOptions") or {}
    if not _k8s_token_auth(auth):
        return None
    if auth.get("mode") != "token":
        return "authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'"
    version = _version(str(spec.get("rayVersion") or "")) or (0,)
    if version < (2, 55, 0):
        return (f"authOptions.enableK8sTokenAuth is enabled but minimum Ray version is 2.55.0, "
                f"got {spec.get('rayVersion')}")  # fmt: skip
    if auth.get("secretName"):
        return "authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is also set"
    return None


# --- per kind: the operator's order, with the cluster spec rules at their place ----------------

RAYCLUSTER_RULES: list[Rule] = []
RAYJOB_RULES: list[Rule] = []
RAYSERVICE_RULES: list[Rule] = []


@_rule(RAYCLUSTER_RULES, "raycluster.name", "L32-L40")
def _cluster_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYCLUSTER_NAME:
        return f"RayCluster name should be no more than {MAX_RAYCLUSTER_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayCluster name should be a valid DNS1035 label: {problems}"
    return None


@_rule(RAYCLUSTER_RULES, "raycluster.upgrade-strategy", "L42-L57")
def _cluster_upgrade(obj: dict, _: dict) -> str | None:
    kind = ((obj.get("spec") or {}).get("upgradeStrategy") or {}).get("type")
    if kind is not None and kind not in ("Recreate", "None"):
        return (f"The RayCluster spec is invalid: Spec.UpgradeStrategy.Type value {kind} is "
                "invalid, valid options are Recreate or None")  # fmt: skip
    return None


@_rule(RAYJOB_RULES, "rayjob.name", "L533-L541")
def _job_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYJOB_NAME:
        return f"RayJob name should be no more than {MAX_RAYJOB_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayJob name should be a valid DNS1035 label: {problems}"
    return None


def _spec(obj: dict) -> dict[str, Any]:
    return obj.get("spec") or {}


@_rule(RAYJOB_RULES, "rayjob.suspend-needs-shutdown", "L547-L549")
def _suspend_shutdown(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        return ("a RayJob with shutdownAfterJobFinishes set to false is not allowed to be "
                "suspended")  # fmt: skip
    return None


@_rule(RAYJOB_RULES, "rayjob.ttl", "L551-L553,L753-L755")
def _ttl(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0:
        return "TTLSecondsAfterFinished must be a non-negative integer"
    if ttl > 0 and not spec.get("shutdownAfterJobFinishes"):
        return ("a RayJob with shutdownAfterJobFinishes set to false cannot have "
                "TTLSecondsAfterFinished")  # fmt: skip
    return None


@_rule(RAYJOB_RULES, "rayjob.deletion-strategy", "L758-L792,L928-L966")
def _deletion_strategy(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return None
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = bool(strategy.get("deletionRules"))
    if rules and spec.get("shutdownAfterJobFinishes"):
        return ("spec.shutdownAfterJobFinishes and spec.deletionStrategy.deletionRules are "
                "mutually exclusive")  # fmt: skip
    if rules and legacy:
        return "Cannot use both legacy onSuccess/onFailure fields and deletionRules simultaneously"
    if legacy:
        if strategy.get("onSuccess") is None or strategy.get("onFailure") is None:
            return ("both DeletionStrategy.OnSuccess and DeletionStrategy.OnFailure must be set "
                    "when using the legacy deletion policy fields")  # fmt: skip
        policies = [strategy[k].get("policy") for k in ("onSuccess", "onFailure")]
        if None in policies:
            return "the DeletionPolicyType of DeletionStrategy.OnSuccess/OnFailure cannot be unset"
        if spec.get("clusterSelector") and {"DeleteCluster", "DeleteWorkers"} & set(policies):
            return "the ClusterSelector mode doesn't support DeleteCluster or DeleteWorkers"
        if "DeleteWorkers" in policies and _autoscaling(spec.get("rayClusterSpec") or {}):
            return ("DeletionStrategy=DeleteWorkers currently does not support RayCluster with "
                    "autoscaling enabled")  # fmt: skip
        if spec.get("shutdownAfterJobFinishes") and "DeleteNone" in policies:
            return "shutdownAfterJobFinshes is set to 'true' while deletion policy is 'DeleteNone'"
        return None
    if not rules:
        return ("DeletionStrategy requires either BOTH onSuccess and onFailure, OR the "
                "deletionRules field (cannot be empty)")  # fmt: skip
    return None


@_rule(RAYJOB_RULES, "rayjob.cluster-selector", "L560-L578")
def _cluster_selector(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    selector = spec.get("clusterSelector") or {}
    if spec.get("suspend") and selector:
        return "the ClusterSelector mode doesn't support the suspend operation"
    if spec.get("rayClusterSpec") is None and not selector:
        return "one of RayClusterSpec or ClusterSelector must be set"
    if selector:
        if not selector.get(CLUSTER_SELECTOR_KEY):
            return "cluster name in ClusterSelector should not be empty"
        if spec.get("submissionMode") == "SidecarMode":
            return "ClusterSelector is not supported in SidecarMode"
        if (spec.get("backoffLimit") or 0) > 0:
            return "BackoffLimit is incompatible with ClusterSelector mode"
    return None


@_rule(RAYJOB_RULES, "rayjob.submission-mode", "L587-L603")
def _submission_mode(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        return "BackoffLimit is incompatible with InteractiveMode"
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate") is not None:
            return "Currently, SidecarMode doesn't support SubmitterPodTemplate"
        if spec.get("submitterConfig") is not None:
            return "Currently, SidecarMode doesn't support SubmitterConfig"
        head = _pod_spec(((spec.get("rayClusterSpec") or {}).get("headGroupSpec")) or {})
        if head.get("restartPolicy") not in (None, "", "Never"):
            return "restartPolicy for head Pod should be Never or unset when using SidecarMode"
    return None


@_rule(RAYJOB_RULES, "rayjob.k8s-token-auth", "L605-L608")
def _job_k8s_auth(obj: dict, _: dict) -> str | None:
    cluster = _spec(obj).get("rayClusterSpec")
    if cluster is not None and _k8s_token_auth(cluster.get("authOptions")):
        return "K8s token auth mode is currently not supported for RayJob"
    return None


RAYJOB_CLUSTER_AT = len(RAYJOB_RULES)  # L609-L611: ValidateRayClusterSpec(rayClusterSpec)


@_rule(RAYJOB_RULES, "rayjob.runtime-env-yaml", "L614-L618")
def _runtime_env(obj: dict, _: dict) -> str | None:
    text = _spec(obj).get("runtimeEnvYAML") or ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"failed to unmarshal RuntimeEnvYAML: {exc}"
    if parsed is not None and not isinstance(parsed, dict):
        # dashboardclient.UnmarshalRuntimeEnvYAML decodes into map[string]interface{}.
        return f"failed to unmarshal RuntimeEnvYAML: not a mapping: {text!r}"
    return None


@_rule(RAYJOB_RULES, "rayjob.deadlines-and-backoff", "L619-L627")
def _deadlines(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        value = spec.get(field)
        if value is not None and value <= 0:
            return f"{field} must be a positive integer"
    if (spec.get("backoffLimit") or 0) < 0:
        return "backoffLimit must be a positive integer"
    return None


@_rule(RAYSERVICE_RULES, "rayservice.name", "L632-L639")
def _service_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYSERVICE_NAME:
        return f"RayService name should be no more than {MAX_RAYSERVICE_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayService name should be a valid DNS1035 label: {problems}"
    return None


@_rule(RAYSERVICE_RULES, "rayservice.initializing-timeout", "L640-L678")
def _initializing_timeout(obj: dict, annotations: dict) -> str | None:
    value = str(annotations.get(INITIALIZING_TIMEOUT_ANNOTATION, ""))
    if not value:
        return None
    if _GO_DURATION.match(value):
        if value.startswith("-") or not re.search(r"[1-9]", value):
            return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive duration"
        return None
    if re.fullmatch(r"[-+]?\d+", value):
        if int(value) <= 0:
            return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive integer"
        return None
    return f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} has invalid format: {value}"


@_rule(RAYSERVICE_RULES, "rayservice.k8s-token-auth", "L681-L683")
def _service_k8s_auth(obj: dict, _: dict) -> str | None:
    if _k8s_token_auth((_spec(obj).get("rayClusterConfig") or {}).get("authOptions")):
        return "K8s token auth mode is currently not supported for RayService"
    return None


RAYSERVICE_CLUSTER_AT = len(RAYSERVICE_RULES)  # L685-L687: ValidateRayClusterSpec


@_rule(RAYSERVICE_RULES, "rayservice.head-service-name", "L689-L691")
def _head_service(obj: dict, _: dict) -> str | None:
    head = (_spec(obj).get("rayClusterConfig") or {}).get("headGroupSpec") or {}
    if ((head.get("headService") or {}).get("metadata") or {}).get("name"):
        return "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set"
    return None


@_rule(RAYSERVICE_RULES, "rayservice.upgrade-strategy", "L693-L712,L717-L749")
def _service_upgrade(obj: dict, _: dict) -> str | None:
    spec = _spec(obj)
    strategy = spec.get("upgradeStrategy") or {}
    kind = strategy.get("type")
    valid = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
    if kind is not None and kind not in valid:
        return f"Spec.UpgradeStrategy.Type value {kind} is invalid, valid options are {valid}"
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        return f"Spec.RayClusterDeletionDelaySeconds should be a non-negative integer, got {delay}"
    if kind == "NewClusterWithIncrementalUpgrade":  # RayServiceIncrementalUpgrade is on
        if not _autoscaling(spec.get("rayClusterConfig") or {}):
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


# --- running them --------------------------------------------------------------------------------

ALL_RULES: list[Rule] = CLUSTER_RULES + RAYCLUSTER_RULES + RAYJOB_RULES + RAYSERVICE_RULES


def _run(rules: list[Rule], target: dict, annotations: dict) -> list[Violation]:
    out = []
    for rule in rules:
        message = rule.check(target, annotations)
        if message:
            out.append(Violation(rule.id, rule.lines, message))
    return out


def admission_errors(obj: dict[str, Any]) -> list[Violation]:
    """Every KubeRay v1.7 rule `obj` breaks, in the operator's order (the first is what it says)."""
    kind = obj.get("kind")
    annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
    spec = obj.get("spec") or {}
    if kind == "RayCluster":
        return (_run(RAYCLUSTER_RULES[:1], obj, annotations)
                + _run(CLUSTER_RULES, spec, annotations)
                + _run(RAYCLUSTER_RULES[1:], obj, annotations))  # fmt: skip
    if kind == "RayJob":
        before, after = RAYJOB_RULES[:RAYJOB_CLUSTER_AT], RAYJOB_RULES[RAYJOB_CLUSTER_AT:]
        out = _run(before, obj, annotations)
        if spec.get("rayClusterSpec") is not None:
            out += _run(CLUSTER_RULES, spec["rayClusterSpec"], annotations)
        return out + _run(after, obj, annotations)
    if kind == "RayService":
        before, after = (RAYSERVICE_RULES[:RAYSERVICE_CLUSTER_AT],
                         RAYSERVICE_RULES[RAYSERVICE_CLUSTER_AT:])  # fmt: skip
        out = _run(before, obj, annotations)
        out += _run(CLUSTER_RULES, spec.get("rayClusterConfig") or {}, annotations)
        return out + _run(after, obj, annotations)
    return []
