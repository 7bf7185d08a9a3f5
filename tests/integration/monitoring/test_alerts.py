"""The PrometheusRule's alerts run by Prometheus's own rule engine (`promtool`, installed by
`.ci/system_tools.sh`): valid rules, and unit tests (alert_tests.yaml) that each alert fires on
the series that should fire it, only after its `for`, and not on those just below it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.samples import KUBERAY

RULE = KUBERAY / "components" / "monitoring" / "prometheusrule.yaml"
TESTS = Path(__file__).with_name("alert_tests.yaml")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run .ci/system_tools.sh (Debian package prometheus)"
    return found


@pytest.fixture
def rules(tmp_path) -> Path:
    """The PrometheusRule's `spec` as a plain rules file, with the unit tests beside it."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(RULE.read_text())["spec"]))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return path


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_rules_are_valid_prometheus_rules(promtool, rules):
    proc = _promtool(promtool, "check", "rules", str(rules), cwd=rules.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 4 rules found" in proc.stdout, proc.stdout


def test_every_alert_fires_when_it_should_and_not_otherwise(promtool, rules):
    proc = _promtool(promtool, "test", "rules", TESTS.name, cwd=rules.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every alert of the rule file has a test that expects it to fire.
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {t["alertname"] for g in tests for t in g["alert_rule_test"] if t["exp_alerts"]}
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert fired == alerts


def test_a_broken_expectation_fails_promtool(promtool, rules):
    """The unit tests can fail: the same tests with drift expected at PSI 0.19 do."""
    tests = yaml.safe_load(TESTS.read_text())
    group = tests["tests"][0]
    group["input_series"] = [s for s in group["input_series"] if "education" in s["series"]]
    group["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["feature"] = "education"
    tests["tests"] = [group]
    (rules.parent / "broken.yaml").write_text(yaml.safe_dump(tests))
    proc = _promtool(promtool, "test", "rules", "broken.yaml", cwd=rules.parent)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr, proc.stdout
