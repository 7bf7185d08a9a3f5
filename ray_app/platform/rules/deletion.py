"""A RayJob's spec.deletionStrategy (validateDeletionConfiguration, validation.go L757-L966):
the RayJobDeletionPolicy feature, on in v1.7.0, so the gate check (L762-L765) never refuses.
Either the legacy onSuccess/onFailure policies (L927-L966) or deletionRules (L794-L925)."""

from __future__ import annotations

from typing import Any

from ray_app.platform.rules.base import autoscaling, spec_of

INVALID = "The RayJob spec is invalid: "
# L894-L898: the TTLs must not decrease along this order (workers go first, the RayJob last).
DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")
NEEDS_A_CLUSTER = ("DeleteCluster", "DeleteWorkers")


def _legacy(spec: dict[str, Any], strategy: dict[str, Any]) -> str | None:
    """validateLegacyDeletionPolicies (L927-L966)."""
    on_success, on_failure = strategy.get("onSuccess"), strategy.get("onFailure")
    if on_success is None or on_failure is None:
        return ("both DeletionStrategy.OnSuccess and DeletionStrategy.OnFailure must be set "
                "when using the legacy deletion policy fields of DeletionStrategy")  # fmt: skip
    policies = {"OnSuccess": on_success.get("policy"), "OnFailure": on_failure.get("policy")}
    for field, policy in policies.items():
        if policy is None:
            return (f"the DeletionPolicyType field of DeletionStrategy.{field} cannot be unset "
                    "when DeletionStrategy is enabled")  # fmt: skip
    if spec.get("clusterSelector"):
        for when, policy in zip(("on success", "on failure"), policies.values(), strict=True):
            if policy in NEEDS_A_CLUSTER:
                return f"the ClusterSelector mode doesn't support DeletionStrategy={policy} {when}"
    chosen = set(policies.values())
    if "DeleteWorkers" in chosen and autoscaling(spec.get("rayClusterSpec") or {}):
        return ("DeletionStrategy=DeleteWorkers currently does not support RayCluster with "
                "autoscaling enabled")  # fmt: skip
    if spec.get("shutdownAfterJobFinishes") and "DeleteNone" in chosen:
        return (INVALID + "shutdownAfterJobFinshes is set to 'true' while deletion policy is "
                "'DeleteNone'")  # fmt: skip
    return None


def _condition_problem(condition: dict[str, Any]) -> str | None:
    """validateDeletionCondition (L870-L888)."""
    has_job = condition.get("jobStatus") is not None
    has_deployment = condition.get("jobDeploymentStatus") is not None
    if has_job and has_deployment:
        return "cannot set both JobStatus and JobDeploymentStatus at the same time"
    if not has_job and not has_deployment:
        return "exactly one of JobStatus and JobDeploymentStatus must be set"
    if (condition.get("ttlSeconds") or 0) < 0:
        return "TTLSeconds must be non-negative"
    return None


def _ttl_problems(ttls: dict[str, int], kind: str, status: str) -> list[str]:
    """validateTTLConsistency (L890-L925): Workers <= Cluster <= Self."""
    problems, previous = [], None
    for policy in DELETION_ORDER:
        if policy not in ttls:
            continue
        if previous is not None and ttls[policy] < previous[1]:
            problems.append(f"for {kind} '{status}': {policy} TTL ({ttls[policy]}) must be >= "
                            f"{previous[0]} TTL ({previous[1]})")  # fmt: skip
        previous = (policy, ttls[policy])
    return problems


def _rules(spec: dict[str, Any], rules: list[dict[str, Any]]) -> str | None:
    """validateDeletionRules (L794-L868): every problem, joined by newlines (errors.Join).
    Go groups the rules in maps and ranges over them in random order; we keep first-seen order
    (JobStatus groups, then JobDeploymentStatus groups, as Go's two loops do)."""
    selector = bool(spec.get("clusterSelector"))
    scaling = autoscaling(spec.get("rayClusterSpec") or {})
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    problems = []
    for i, entry in enumerate(rules):
        condition, policy = entry.get("condition") or {}, str(entry.get("policy") or "")
        if problem := _condition_problem(condition):
            problems.append(f"deletionRules[{i}]: {problem}")
        elif selector and policy in NEEDS_A_CLUSTER:
            problems.append(f"deletionRules[{i}]: DeletionPolicyType '{policy}' not supported "
                            "when ClusterSelector is set")  # fmt: skip
        elif scaling and policy == "DeleteWorkers":
            problems.append(f"deletionRules[{i}]: DeletionPolicyType 'DeleteWorkers' not "
                            "supported with autoscaling enabled")  # fmt: skip
        else:
            kind = "JobStatus" if condition.get("jobStatus") is not None else "JobDeploymentStatus"
            status = str(condition["jobStatus" if kind == "JobStatus" else "jobDeploymentStatus"])
            ttls = grouped.setdefault((kind, status), {})
            if policy in ttls:
                problems.append(f"deletionRules[{i}]: duplicate rule for DeletionPolicyType "
                                f"'{policy}' and {kind} '{status}'")  # fmt: skip
            else:
                ttls[policy] = condition.get("ttlSeconds") or 0
    for kind in ("JobStatus", "JobDeploymentStatus"):
        for (of, status), ttls in grouped.items():
            if of == kind:
                problems += _ttl_problems(ttls, kind, status)
    return "\n".join(problems) or None


def deletion_strategy(obj: dict[str, Any], _: dict[str, str]) -> str | None:
    """L757-L792: which of the two forms, and not both; never with shutdownAfterJobFinishes."""
    spec = spec_of(obj)
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return None
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = strategy.get("deletionRules") or []
    if rules and spec.get("shutdownAfterJobFinishes"):
        return (INVALID + "spec.shutdownAfterJobFinishes and spec.deletionStrategy.deletionRules "
                "are mutually exclusive")  # fmt: skip
    if rules and legacy:
        return (INVALID + "Cannot use both legacy onSuccess/onFailure fields and deletionRules "
                "simultaneously")  # fmt: skip
    if legacy:
        return _legacy(spec, strategy)
    if rules:
        return _rules(spec, rules)
    return (INVALID + "DeletionStrategy requires either BOTH onSuccess and onFailure, OR the "
            "deletionRules field (cannot be empty)")  # fmt: skip
