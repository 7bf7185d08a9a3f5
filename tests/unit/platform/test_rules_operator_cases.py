"""Our port of KubeRay's admission rules (ray_app.platform.rules) against the operator's own
test table: the cases of ray-operator/controllers/ray/utils/validation_test.go at v1.7.0,
transcribed in tests/fixtures/kuberay/validation_cases.yaml (README beside it). Every case that
applies to what we port must give the operator's verdict (error or none) and, where the Go case
checks it, its message; the cases that do not apply are listed below with why, and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_app.platform.rules.base import Rule, spec_of
from ray_app.platform.rules.cluster import CLUSTER_RULES, RAYCLUSTER_RULES
from ray_app.platform.rules.job import RAYJOB_CLUSTER_AT, RAYJOB_RULES
from ray_app.platform.rules.service import RAYSERVICE_CLUSTER_AT, RAYSERVICE_RULES

CASES = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "fixtures" / "kuberay" / "validation_cases.yaml")
    .read_text()
)  # fmt: skip
# The v1.7.0 defaults our port assumes (ray_app/platform/rules/__init__.py).
GATES = {"RayJobDeletionPolicy": True, "RayServiceIncrementalUpgrade": True,
         "RayClusterNetworkPolicy": False, "RayClusterMTLS": False,
         "RayClusterHistoryServer": False, "GCSFaultToleranceEmbeddedStorage": False}  # fmt: skip
# Functions we do not port, and why (the manifests never use what they check).
NOT_PORTED = {
    "ValidateRayClusterStatus": "checks the status the operator writes, not what we write",
    "ValidateRayJobStatus": "checks the status the operator writes, not what we write",
    "validateTLSOptions": "TLS (RayClusterMTLS gate, off in v1.7.0): not used",
    "validateNetworkPolicy": "networkPolicy (RayClusterNetworkPolicy gate, off): not used",
    "ValidateRayCronJobSpec": "RayCronJob (its gate is off in v1.7.0): not used",
}


def _run(rules: list[Rule], target: dict, annotations: dict) -> list[str]:
    return [message for rule in rules if (message := rule.check(target, annotations))]


def _spec_rules(rules: list[Rule], cluster_at: int, prefix: str) -> list[Rule]:
    return [r for r in rules if not r.id.endswith(".name") and r.id.startswith(prefix)]


def verdict(case: dict[str, Any]) -> list[str]:
    """What our port says of the case's object, through the function the Go case calls."""
    obj = case["object"]
    annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
    spec = spec_of(obj)
    name_rule = {"RayCluster": RAYCLUSTER_RULES[:1], "RayJob": RAYJOB_RULES[:1],
                 "RayService": RAYSERVICE_RULES[:1]}[case["kind"]]  # fmt: skip
    function = case["function"]
    if function == "ValidateRayClusterSpec":
        return _run(CLUSTER_RULES, spec, annotations)
    if function == "ValidateRayClusterUpgradeOptions":
        return _run(RAYCLUSTER_RULES[1:], obj, annotations)
    if function in ("ValidateRayClusterMetadata", "ValidateRayJobMetadata"):
        return _run(name_rule, obj, annotations)
    if function == "ValidateRayServiceMetadata":
        return _run(RAYSERVICE_RULES[:2], obj, annotations)  # name, initializing timeout
    if function == "ValidateRayJobSpec":
        before, after = RAYJOB_RULES[1:RAYJOB_CLUSTER_AT], RAYJOB_RULES[RAYJOB_CLUSTER_AT:]
        out = _run(before, obj, annotations)
        if spec.get("rayClusterSpec") is not None:
            out += _run(CLUSTER_RULES, spec["rayClusterSpec"], annotations)
        return out + _run(after, obj, annotations)
    if function in ("ValidateRayServiceSpec", "ValidateClusterUpgradeOptions"):
        before = RAYSERVICE_RULES[2:RAYSERVICE_CLUSTER_AT]
        after = RAYSERVICE_RULES[RAYSERVICE_CLUSTER_AT:]
        if function == "ValidateClusterUpgradeOptions":
            return _run(after[-1:], obj, annotations)  # the upgrade strategy rule alone
        out = _run(before, obj, annotations)
        out += _run(CLUSTER_RULES, spec.get("rayClusterConfig") or {}, annotations)
        return out + _run(after, obj, annotations)
    raise AssertionError(f"no mapping for {function}")


def why_skipped(case: dict[str, Any]) -> str | None:
    if case["function"] in NOT_PORTED:
        return f"{case['function']}: {NOT_PORTED[case['function']]}"
    for gate, value in case["feature_gates"].items():
        if GATES.get(gate) != value:
            return f"feature gate {gate}={value} (our port assumes v1.7.0's {GATES.get(gate)})"
    return None


APPLICABLE = [c for c in CASES if why_skipped(c) is None]
SKIPPED = {f"{c['test']} / {c['case']}": why_skipped(c) for c in CASES if why_skipped(c)}


def test_every_case_is_either_checked_or_skipped_for_a_listed_reason():
    assert len(CASES) == 248
    assert len(APPLICABLE) + len(SKIPPED) == len(CASES)
    reasons: dict[str, int] = {}
    for reason in SKIPPED.values():
        key = reason.split(":")[0] if reason.startswith("Validate") or reason.startswith(
            "validate") else reason  # fmt: skip
        reasons[key] = reasons.get(key, 0) + 1
    print(f"{len(APPLICABLE)} cases checked; skipped: {reasons}")
    # 248 cases - 42 of functions not ported - 42 that set a gate away from its v1.7.0 default.
    assert len(APPLICABLE) == 164


@pytest.mark.parametrize("case", APPLICABLE, ids=[f"{c['test']}-{c['case']}"[:120]
                                                  for c in APPLICABLE])  # fmt: skip
def test_our_port_gives_the_operators_verdict(case: dict[str, Any]):
    found = verdict(case)
    assert bool(found) == case["expect_error"], (case["source"], found)
    if case["expect_error"] and case["error_contains"]:
        assert case["error_contains"] in found[0], (case["source"], found[0])
