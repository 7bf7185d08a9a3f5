"""The admission port (tests/fakes/admission.py) against KubeRay v1.7.0's own test table.

tests/fixtures/kuberay/validation_cases.yaml transcribes every case of
ray-operator/controllers/ray/utils/validation_test.go (commit 59d663ae; README beside it). Each
case whose function the port covers must get the operator's verdict (`expect_error`) and, where
the Go case checks one, a message containing `error_contains`. Every other case is skipped for
one listed reason: a function the port leaves out, a feature gate it does not model, or an
input only an unported rule reads. `SUMMARY` counts both; the first test fails if a case is
neither checked nor skipped for a reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import admission

CASES_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "kuberay" / "validation_cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CASES_FILE.read_text())


def _cluster_spec(case: dict) -> dict:
    spec = case["object"].get("spec") or {}
    if case["kind"] == "RayJob":
        return spec.get("rayClusterSpec") or {}
    if case["kind"] == "RayService":
        return spec.get("rayClusterConfig") or {}
    return spec


COVERED = {
    "ValidateRayJobSpec": lambda o, g: admission.validate_rayjob_spec(o, g),
    "ValidateRayJobMetadata": lambda o, g: admission.validate_rayjob_metadata(o.get("metadata")),
    "ValidateRayJobStatus": lambda o, g: admission.validate_rayjob_status(o),
    "ValidateRayServiceSpec": lambda o, g: admission.validate_rayservice_spec(o, g),
    "ValidateRayServiceMetadata": lambda o, g: admission.validate_rayservice_metadata(
        o.get("metadata")
    ),
    "ValidateClusterUpgradeOptions": lambda o, g: admission.validate_cluster_upgrade_options(o),
    "ValidateRayClusterSpec": lambda o, g: admission.validate_raycluster_spec(
        o.get("spec"), (o.get("metadata") or {}).get("annotations"), g
    ),
}
NOT_COVERED = {
    "ValidateRayClusterStatus": "function not ported: ValidateRayClusterStatus (validation.go "
    "L23-L30) belongs to the RayCluster controller, which the fake does not run",
    "ValidateRayClusterMetadata": "function not ported: ValidateRayClusterMetadata (L32-L40) "
    "belongs to the RayCluster controller, which the fake does not run",
    "ValidateRayClusterUpgradeOptions": "function not ported: ValidateRayClusterUpgradeOptions "
    "(L42-L57) belongs to the RayCluster controller, which the fake does not run",
    "ValidateRayCronJobSpec": "function not ported: ValidateRayCronJobSpec (L968-L1003); "
    "RayCronJob is gated off in v1.7.0 and the project has none",
    "validateNetworkPolicy": "function not ported: validateNetworkPolicy (L377-L444), the "
    "network-policy rules",
    "validateTLSOptions": "function not ported: validateTLSOptions (L446-L524), the TLS rules",
}


def classify(case: dict) -> tuple[str, str]:
    """('checked', '') or ('skipped', reason) for one case."""
    function = case["function"]
    if function not in COVERED:
        return "skipped", NOT_COVERED[function]
    for gate, value in sorted((case.get("feature_gates") or {}).items()):
        if gate not in admission.MODELLED_GATES and value != admission.FEATURE_GATE_DEFAULTS[gate]:
            default = admission.FEATURE_GATE_DEFAULTS[gate]
            return "skipped", (
                f"sets feature gate {gate}={value} (v1.7.0 default {default}); "
                "only unported rules read it"
            )
    annotations = (case["object"].get("metadata") or {}).get("annotations")
    unported = admission.unported_inputs(_cluster_spec(case), annotations)
    if unported:
        return "skipped", "needs an unported rule: " + "; ".join(unported)
    return "checked", ""


VERDICTS = [(case, *classify(case)) for case in CASES]
SUMMARY = Counter(
    "checked" if kind == "checked" else reason.split(":")[0] for _, kind, reason in VERDICTS
)


def _id(case: dict) -> str:
    return f"{case['test']}/{case['case']}"[:120]


def test_every_case_is_checked_or_skipped_for_a_listed_reason():
    """validation_cases.yaml (README: 248 cases of validation_test.go at v1.7.0): each case is
    checked or skipped with a reason; the counts are printed (pytest -s) and pinned."""
    assert len(CASES) == 248
    assert all(kind == "checked" or reason for _, kind, reason in VERDICTS)
    checked = sum(kind == "checked" for _, kind, _ in VERDICTS)
    skipped = Counter(reason for _, kind, reason in VERDICTS if kind == "skipped")
    print(f"\nKubeRay v1.7.0 validation cases: {checked} checked, {sum(skipped.values())} skipped")
    for reason, count in sorted(skipped.items(), key=lambda item: -item[1]):
        print(f"  {count:3d}  {reason}")
    assert checked + sum(skipped.values()) == len(CASES)
    assert dict(SUMMARY) == {
        "checked": 149,
        "function not ported": 48,
        "sets feature gate GCSFaultToleranceEmbeddedStorage=True (v1.7.0 default False); only "
        "unported rules read it": 22,
        "sets feature gate RayClusterHistoryServer=True (v1.7.0 default False); only unported "
        "rules read it": 19,
        "needs an unported rule": 10,
    }


@pytest.mark.parametrize(
    "case",
    # Only the cases the port covers: the others are counted, with their reasons, above.
    [pytest.param(case, id=_id(case)) for case, kind, _ in VERDICTS if kind != "skipped"],
)
def test_port_gives_the_operators_verdict(case):
    """One case of validation_test.go (its `source` lines) against the port of the function it
    calls in validation.go: the verdict, and the message where the Go case checks it."""
    gates = admission.gates_with(case.get("feature_gates"))
    error = COVERED[case["function"]](case["object"], gates)
    assert (error is not None) == case["expect_error"], (case["source"], error)
    if case.get("error_contains"):
        assert error is not None and case["error_contains"] in error, (case["source"], error)


def test_objects_that_need_an_unported_rule_are_refused_not_admitted():
    """validation.go L153-L195 (GCS fault tolerance) is not ported: a RayService whose only
    questionable input is gcsFaultToleranceOptions cannot be judged, so the fake raises instead
    of admitting it."""
    service: dict[str, Any] = {
        "kind": "RayService",
        "metadata": {"name": "svc"},
        "spec": {
            "rayClusterConfig": {
                "gcsFaultToleranceOptions": {"redisAddress": "redis:6379"},
                "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head"}]}}},
            }
        },
    }
    with pytest.raises(admission.NotPorted, match="gcsFaultToleranceOptions"):
        admission.validate_rayservice(service)
    # A ported rule that fires still gives the verdict (the Go function errs either way).
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"] = []
    assert admission.validate_rayservice(service) == (
        "The RayService spec is invalid: headGroupSpec should have at least one container"
    )


def test_only_the_gates_a_ported_rule_reads_can_be_changed():
    """features.go L106-L116: v1.7.0's defaults; RayJobDeletionPolicy (validation.go L197, L763)
    and RayServiceIncrementalUpgrade (util.go L917-L923) are the two the port reads."""
    assert admission.gates_with({"RayJobDeletionPolicy": False})["RayJobDeletionPolicy"] is False
    assert admission.gates_with({"RayClusterMTLS": False})["RayClusterMTLS"] is False  # the default
    with pytest.raises(admission.NotPorted, match="RayClusterMTLS"):
        admission.gates_with({"RayClusterMTLS": True})


def test_go_parsers_follow_go():
    """validateInitializingTimeout (L648-L678) tries time.ParseDuration, then strconv.Atoi; the
    auth and priority rules (L289-L297, L1123-L1129) use version.ParseGeneric and LessThan."""
    assert admission.go_parse_duration("1h30m") == 5400
    assert admission.go_parse_duration("-5m") == -300
    assert admission.go_parse_duration("0") == 0
    with pytest.raises(ValueError, match="missing unit"):
        admission.go_parse_duration("300")
    assert admission.go_atoi("-100") == -100
    with pytest.raises(ValueError):
        admission.go_atoi("5m")
    assert admission.parse_generic_version("v2.52.0-rc1") == [2, 52, 0]
    with pytest.raises(ValueError, match="could not parse"):
        admission.parse_generic_version("invalid")
    assert admission._version_less([2, 51, 9], [2, 52, 0])
    assert not admission._version_less([2, 52], [2, 52, 0])
