"""ValidateRayJobSpec / ValidateRayJobMetadata (validation.go L533-L627, L753-L966)."""

from __future__ import annotations

import yaml

from ray_app.platform.rules.base import (
    CLUSTER_SELECTOR_KEY,
    MAX_RAYJOB_NAME,
    Rule,
    autoscaling,
    dns1035_problems,
    k8s_token_auth,
    pod_spec,
    rule,
    spec_of,
)

RAYJOB_RULES: list[Rule] = []


@rule(RAYJOB_RULES, "rayjob.name", "L533-L541")
def _job_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > MAX_RAYJOB_NAME:
        return f"RayJob name should be no more than {MAX_RAYJOB_NAME} characters"
    if problems := dns1035_problems(name):
        return f"RayJob name should be a valid DNS1035 label: {problems}"
    return None


@rule(RAYJOB_RULES, "rayjob.suspend-needs-shutdown", "L547-L549")
def _suspend_shutdown(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        return ("a RayJob with shutdownAfterJobFinishes set to false is not allowed to be "
                "suspended")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.ttl", "L551-L553,L753-L755")
def _ttl(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0:
        return "TTLSecondsAfterFinished must be a non-negative integer"
    if ttl > 0 and not spec.get("shutdownAfterJobFinishes"):
        return ("a RayJob with shutdownAfterJobFinishes set to false cannot have "
                "TTLSecondsAfterFinished")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.deletion-strategy", "L758-L792,L928-L966")
def _deletion_strategy(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
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
        if "DeleteWorkers" in policies and autoscaling(spec.get("rayClusterSpec") or {}):
            return ("DeletionStrategy=DeleteWorkers currently does not support RayCluster with "
                    "autoscaling enabled")  # fmt: skip
        if spec.get("shutdownAfterJobFinishes") and "DeleteNone" in policies:
            return "shutdownAfterJobFinshes is set to 'true' while deletion policy is 'DeleteNone'"
        return None
    if not rules:
        return ("DeletionStrategy requires either BOTH onSuccess and onFailure, OR the "
                "deletionRules field (cannot be empty)")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.cluster-selector", "L560-L578")
def _cluster_selector(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
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


@rule(RAYJOB_RULES, "rayjob.submission-mode", "L587-L603")
def _submission_mode(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        return "BackoffLimit is incompatible with InteractiveMode"
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate") is not None:
            return "Currently, SidecarMode doesn't support SubmitterPodTemplate"
        if spec.get("submitterConfig") is not None:
            return "Currently, SidecarMode doesn't support SubmitterConfig"
        head = pod_spec(((spec.get("rayClusterSpec") or {}).get("headGroupSpec")) or {})
        if head.get("restartPolicy") not in (None, "", "Never"):
            return "restartPolicy for head Pod should be Never or unset when using SidecarMode"
    return None


@rule(RAYJOB_RULES, "rayjob.k8s-token-auth", "L605-L608")
def _job_k8s_auth(obj: dict, _: dict) -> str | None:
    cluster = spec_of(obj).get("rayClusterSpec")
    if cluster is not None and k8s_token_auth(cluster.get("authOptions")):
        return "K8s token auth mode is currently not supported for RayJob"
    return None


RAYJOB_CLUSTER_AT = len(RAYJOB_RULES)  # L609-L611: ValidateRayClusterSpec(rayClusterSpec)


@rule(RAYJOB_RULES, "rayjob.runtime-env-yaml", "L614-L618")
def _runtime_env(obj: dict, _: dict) -> str | None:
    text = spec_of(obj).get("runtimeEnvYAML") or ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"failed to unmarshal RuntimeEnvYAML: {exc}"
    if parsed is not None and not isinstance(parsed, dict):
        # dashboardclient.UnmarshalRuntimeEnvYAML decodes into map[string]interface{}.
        return f"failed to unmarshal RuntimeEnvYAML: not a mapping: {text!r}"
    return None


@rule(RAYJOB_RULES, "rayjob.deadlines-and-backoff", "L619-L627")
def _deadlines(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        value = spec.get(field)
        if value is not None and value <= 0:
            return f"{field} must be a positive integer"
    if (spec.get("backoffLimit") or 0) < 0:
        return "backoffLimit must be a positive integer"
    return None
