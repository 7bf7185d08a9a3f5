"""Each security gate of .ci/gates.sh bites: a planted problem makes its tool fail.
(That the project itself passes every gate is the `gates` stage of `make test`, not a test.)

The tools live in .venv-gates (`make gates-setup`; `make test` and `make test-fast` create it).
A missing gate is a failure, not a silent skip; skipping them takes an explicit
RAY_APP_SKIP_GATE_TESTS=1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import REPO

GATES = REPO / ".venv-gates" / "bin"
VENV = REPO / ".venv" / "bin"

if os.environ.get("RAY_APP_SKIP_GATE_TESTS") == "1":
    pytest.skip("RAY_APP_SKIP_GATE_TESTS=1", allow_module_level=True)
if not (GATES / "semgrep").exists():
    raise RuntimeError(".venv-gates missing: run `make gates-setup` (or make test)")


def _run(*cmd: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)


def _semgrep(target: Path) -> subprocess.CompletedProcess:
    return _run(GATES / "semgrep", "scan", "--config", REPO / ".semgrep", "--metrics=off",
                "--disable-version-check", "--error", "--quiet", target, cwd=target)  # fmt: skip


def test_semgrep_bites_on_torch_load_without_weights_only(tmp_path: Path):
    (tmp_path / "ray_app").mkdir()
    (tmp_path / "ray_app" / "restore.py").write_text(
        "import ray\nimport torch\n\nray.init()\n\n\n"
        "def restore(path):\n"
        "    unsafe = torch.load(path)\n"
        "    safe = torch.load(path, weights_only=True)\n"
        "    return unsafe, safe\n"
    )
    proc = _semgrep(tmp_path)
    assert proc.returncode != 0
    assert "torch-load-without-weights-only" in proc.stdout
    assert "8┆" in proc.stdout and "9┆" not in proc.stdout  # only the unsafe call
    assert "import-side-effect" in proc.stdout  # module-level ray.init()


def _workflow(tmp_path: Path, uses: str) -> Path:
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "name: ci\non: [push]\npermissions:\n  contents: read\njobs:\n  build:\n"
        "    runs-on: ubuntu-24.04\n    steps:\n"
        f"      - uses: {uses}\n        with:\n          persist-credentials: false\n"
        "      - run: echo ok\n"
    )
    return path


def test_zizmor_bites_on_an_unpinned_action(tmp_path: Path):
    pinned = _workflow(tmp_path / "a", "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8")
    ok = _run(GATES / "zizmor", "--offline", "--min-severity", "low", pinned)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    unpinned = _workflow(tmp_path / "b", "actions/checkout@v5")
    bad = _run(GATES / "zizmor", "--offline", "--min-severity", "low", unpinned)
    assert bad.returncode != 0
    assert "unpinned-uses" in bad.stdout + bad.stderr


def test_actionlint_bites_on_a_broken_workflow(tmp_path: Path):
    path = _workflow(tmp_path, "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8")
    path.write_text(path.read_text().replace("runs-on: ubuntu-24.04", "runs-on: ${{ matrix.os }}"))
    proc = _run(GATES / "actionlint", path)
    assert proc.returncode != 0
    assert "matrix" in proc.stdout


def test_detect_secrets_bites_on_a_planted_key(tmp_path: Path):
    # Assembled at run time so the repository itself holds no secret-looking line (the secrets
    # gate scans this file too, and did flag the first version of it).
    key_id = "AKIA" + "Z7Q4" + "MRYX" + "3PLK" + "TW2V"
    value = "uT9x" + "Qm4Lr2" + "Vb8Nk1" + "Zp6Wc3" + "Hs5Jd7" + "Fa0Ye9" + "Gt"
    name = "aws_" + "secret" + "_access_key"
    planted = tmp_path / "settings.py"
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\n{name} = "{value}"\n')
    clean = tmp_path / "clean.py"
    clean.write_text('REGION = "eu-west-1"\n')
    baseline = REPO / ".secrets.baseline"
    ok = _run(GATES / "detect-secrets-hook", "--baseline", baseline, clean)
    assert ok.returncode == 0, ok.stdout
    bad = _run(GATES / "detect-secrets-hook", "--baseline", baseline, planted)
    assert bad.returncode != 0
    assert "AWS Access Key" in bad.stdout


def test_checkov_bites_on_a_root_container(tmp_path: Path):
    rendered = _run(VENV / "kubectl", "kustomize", REPO / "kuberay" / "overlays" / "local")
    text = rendered.stdout
    (tmp_path / "ok.yaml").write_text(text)
    root = text.replace("runAsNonRoot: true", "runAsNonRoot: false").replace(
        "runAsUser: 1000", "runAsUser: 0"
    )
    (tmp_path / "root.yaml").write_text(root)
    ok = _run(GATES / "checkov", "--quiet", "--compact", "--skip-download",
              "-f", tmp_path / "ok.yaml")  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-3000:]
    bad = _run(GATES / "checkov", "--quiet", "--compact", "--skip-download",
               "-f", tmp_path / "root.yaml")  # fmt: skip
    assert bad.returncode != 0
    assert "CKV_K8S_23" in bad.stdout or "CKV_K8S_20" in bad.stdout  # root admission


def test_checkov_bites_on_a_root_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        (REPO / "docker" / "Dockerfile").read_text().replace("USER 1000:100", "USER root")
    )
    proc = _run(GATES / "checkov", "--quiet", "--compact", "--skip-download", "-f", bad)
    assert proc.returncode != 0
    assert "CKV_DOCKER_8" in proc.stdout  # last USER is root
