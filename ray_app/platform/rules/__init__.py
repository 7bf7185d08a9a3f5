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
we write, and are not ported; nor is ValidateRayCronJobSpec (RayCronJob's gate is off), nor
what sits behind a gate that is off (a field that needs it is refused, as the operator does).
Each message is the operator's text, from validation.go and from the k8s.io/apimachinery and Go
checks it calls (k8s.py). tests/unit/platform/test_rules_operator_cases.py runs the rules on the
operator's own test table (validation_test.go).
"""

from __future__ import annotations

from typing import Any

from ray_app.platform.rules.base import (
    KUBERAY_TAG,
    ORIGINATED_FROM_CRD_LABEL,
    SOURCE,
    Rule,
    Violation,
)
from ray_app.platform.rules.cluster import CLUSTER_RULES, RAYCLUSTER_RULES
from ray_app.platform.rules.job import RAYJOB_CLUSTER_AT, RAYJOB_RULES
from ray_app.platform.rules.service import RAYSERVICE_CLUSTER_AT, RAYSERVICE_RULES

__all__ = ["ALL_RULES", "KUBERAY_TAG", "SOURCE", "Rule", "Violation", "admission_errors"]

ALL_RULES: list[Rule] = CLUSTER_RULES + RAYCLUSTER_RULES + RAYJOB_RULES + RAYSERVICE_RULES


def _run(rules: list[Rule], target: dict, annotations: dict, wrap: str = "") -> list[Violation]:
    out = []
    for rule in rules:
        message = rule.check(target, annotations)
        if message:
            out.append(Violation(rule.id, rule.lines, wrap + message))
    return out


def _created_cluster(kind: str, cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster a RayJob or RayService creates from its cluster spec, as far as
    ValidateRayClusterUpgradeOptions reads it: the spec and the ray.io/originated-from-crd label
    (rayjob_controller.go L997-L1017, rayservice_controller.go L1504-L1540). The RayCluster
    controller refuses it if the spec sets upgradeStrategy.type (validation.go L49-L55)."""
    return {"metadata": {"labels": {ORIGINATED_FROM_CRD_LABEL: kind}}, "spec": cluster_spec}


def admission_errors(obj: dict[str, Any]) -> list[Violation]:
    """Every KubeRay v1.7 rule `obj` breaks, in the operator's order: the first is what the
    operator says, except where it checks per group what we check per rule (validation.go
    L108-L151 checks each group in full before the next) or where one rule holds checks the
    operator makes far apart (cluster.feature-gated-fields: L260 and L316-L326, around auth).

    A RayJob's or RayService's cluster spec is checked with ValidateRayClusterSpec, whose errors
    the operator wraps as 'The RayJob spec is invalid: ...' (L609-L611, L685-L687); and then as
    the RayCluster the operator would create from it."""
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
        cluster = spec.get("rayClusterSpec")
        if cluster is not None:
            out += _run(CLUSTER_RULES, cluster, annotations, "The RayJob spec is invalid: ")
        out += _run(after, obj, annotations)
        if cluster is not None:
            out += _run(RAYCLUSTER_RULES[1:], _created_cluster(kind, cluster), {})
        return out
    if kind == "RayService":
        before, after = (RAYSERVICE_RULES[:RAYSERVICE_CLUSTER_AT],
                         RAYSERVICE_RULES[RAYSERVICE_CLUSTER_AT:])  # fmt: skip
        cluster = spec.get("rayClusterConfig") or {}
        out = _run(before, obj, annotations)
        out += _run(CLUSTER_RULES, cluster, annotations, "The RayService spec is invalid: ")
        out += _run(after, obj, annotations)
        return out + _run(RAYCLUSTER_RULES[1:], _created_cluster(kind, cluster), {})
    return []
