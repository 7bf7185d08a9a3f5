"""ValidateRayJobMetadata / ValidateRayJobSpec (validation.go L533-L630, L751-L966; the
deletion strategy is in deletion.py). Messages are the operator's, verbatim."""

from __future__ import annotations

import yaml

from ray_app.platform.rules.base import (
    CLUSTER_SELECTOR_KEY,
    MAX_RAYJOB_NAME,
    Rule,
    k8s_token_auth,
    pod_spec,
    rule,
    spec_of,
)
from ray_app.platform.rules.deletion import INVALID, deletion_strategy
from ray_app.platform.rules.k8s import dns1035_problems, go_list

RAYJOB_RULES: list[Rule] = []


@rule(RAYJOB_RULES, "rayjob.name", "L533-L541")
def _job_name(obj: dict, _: dict) -> str | None:
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name.encode()) > MAX_RAYJOB_NAME:
        return (f"The RayJob metadata is invalid: RayJob name should be no more than "
                f"{MAX_RAYJOB_NAME} characters")  # fmt: skip
    if problems := dns1035_problems(name):
        return (f"The RayJob metadata is invalid: RayJob name should be a valid DNS1035 label: "
                f"{go_list(problems)}")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.suspend-needs-shutdown", "L547-L549")
def _suspend_shutdown(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        return (INVALID + "a RayJob with shutdownAfterJobFinishes set to false is not allowed "
                "to be suspended")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.ttl", "L551-L553,L752-L755")
def _ttl(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    ttl = spec.get("ttlSecondsAfterFinished") or 0
    if ttl < 0:
        return INVALID + "TTLSecondsAfterFinished must be a non-negative integer"
    if ttl > 0 and not spec.get("shutdownAfterJobFinishes"):
        return (INVALID + "a RayJob with shutdownAfterJobFinishes set to false cannot have "
                "TTLSecondsAfterFinished")  # fmt: skip
    return None


# L556-L558 validateDeletionConfiguration, after its TTL part (rayjob.ttl): deletion.py.
RAYJOB_RULES.append(Rule("rayjob.deletion-strategy", "L556-L558,L757-L966", deletion_strategy))


@rule(RAYJOB_RULES, "rayjob.cluster-selector", "L560-L578")
def _cluster_selector(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    selector = spec.get("clusterSelector") or {}
    if spec.get("suspend") and selector:
        return INVALID + "the ClusterSelector mode doesn't support the suspend operation"
    if spec.get("rayClusterSpec") is None and not selector:
        return INVALID + "one of RayClusterSpec or ClusterSelector must be set"
    if selector:
        if not selector.get(CLUSTER_SELECTOR_KEY):
            return "cluster name in ClusterSelector should not be empty"
        if spec.get("submissionMode") == "SidecarMode":
            return "ClusterSelector is not supported in SidecarMode"
        if (spec.get("backoffLimit") or 0) > 0:
            return INVALID + "BackoffLimit is incompatible with ClusterSelector mode"
    return None


@rule(RAYJOB_RULES, "rayjob.submission-mode", "L580-L603")
def _submission_mode(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        return INVALID + "BackoffLimit is incompatible with InteractiveMode"
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
        return INVALID + "K8s token auth mode is currently not supported for RayJob"
    return None


RAYJOB_CLUSTER_AT = len(RAYJOB_RULES)  # L609-L611: ValidateRayClusterSpec(rayClusterSpec)

# encoding/json's names for what a YAML document can be instead of a mapping.
_JSON_KINDS = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}


@rule(RAYJOB_RULES, "rayjob.runtime-env-yaml", "L614-L618")
def _runtime_env(obj: dict, _: dict) -> str | None:
    # dashboardclient.UnmarshalRuntimeEnvYAML: sigs.k8s.io/yaml into map[string]any. Its YAML
    # parser (go-yaml) words syntax errors its own way; PyYAML's words are given instead.
    text = spec_of(obj).get("runtimeEnvYAML") or ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"failed to unmarshal RuntimeEnvYAML: {text}: error converting YAML to JSON: {exc}"
    if parsed is not None and not isinstance(parsed, dict):
        kind = _JSON_KINDS.get(type(parsed), "string")  # a date or binary becomes a string
        return (f"failed to unmarshal RuntimeEnvYAML: {text}: error unmarshaling JSON: while "
                f"decoding JSON: json: cannot unmarshal {kind} into Go value of type "
                "types.RuntimeEnvType")  # fmt: skip
    return None


@rule(RAYJOB_RULES, "rayjob.deadlines-and-backoff", "L619-L627")
def _deadlines(obj: dict, _: dict) -> str | None:
    spec = spec_of(obj)
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        value = spec.get(field)
        if value is not None and value <= 0:
            return f"{INVALID}{field} must be a positive integer"
    if (spec.get("backoffLimit") or 0) < 0:
        return INVALID + "backoffLimit must be a positive integer"
    return None
