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

from typing import Any

from ray_app.platform.rules.base import KUBERAY_TAG, SOURCE, Rule, Violation
from ray_app.platform.rules.cluster import CLUSTER_RULES, RAYCLUSTER_RULES
from ray_app.platform.rules.job import RAYJOB_CLUSTER_AT, RAYJOB_RULES
from ray_app.platform.rules.service import RAYSERVICE_CLUSTER_AT, RAYSERVICE_RULES

__all__ = ["ALL_RULES", "KUBERAY_TAG", "SOURCE", "Rule", "Violation", "admission_errors"]

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
