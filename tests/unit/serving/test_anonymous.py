"""No API key, no API: a replica (or the plain server) without RAY_APP_API_KEY refuses to start
unless its Serve config says `allow_anonymous: true`, which only the documents bound to a
loopback host say by themselves; the RayService's pods cannot start without the key Secret."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml

from ray_app.core.config import PredictionLogConfig, ServeConfig
from ray_app.platform import manifests as kuberay
from ray_app.serving import graph
from ray_app.serving.config import POD_HOST, serve_config
from ray_app.serving.guards import NO_KEYS, AnonymousRefused
from tests.support.procs import REPO
from tests.support.samples import KUBERAY

KEYS = "k-1,k-2"  # pragma: allowlist secret (test keys)
NO_LOG = PredictionLogConfig(location="off")


@pytest.fixture()
def warnings():
    """What the replica logs on Serve's logger (which does not propagate to the root's)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    graph.logger.addHandler(handler)
    yield records
    graph.logger.removeHandler(handler)


def test_a_replica_without_a_key_refuses_to_start(monkeypatch, warnings):
    monkeypatch.delenv("RAY_APP_API_KEY", raising=False)
    with pytest.raises(AnonymousRefused) as refused:
        graph._configure_replica(None, ServeConfig(prediction_log=NO_LOG))  # type: ignore[arg-type]
    assert str(refused.value) == NO_KEYS and "\n" not in NO_KEYS
    assert "RAY_APP_API_KEY" in NO_KEYS and "ray-app-api-key" in NO_KEYS
    monkeypatch.setenv("RAY_APP_API_KEY", " , ")  # an empty Secret is no key either
    with pytest.raises(AnonymousRefused):
        graph._configure_replica(None, ServeConfig(prediction_log=NO_LOG))  # type: ignore[arg-type]
    assert warnings == []


def test_allowed_anonymous_starts_with_one_warning(monkeypatch, warnings):
    monkeypatch.delenv("RAY_APP_API_KEY", raising=False)
    args = ServeConfig(prediction_log=NO_LOG, allow_anonymous=True)
    graph._configure_replica(None, args)  # type: ignore[arg-type]
    assert graph._keys() == ()
    assert [r.getMessage() for r in warnings] == [
        "RAY_APP_API_KEY is not set (allow_anonymous): /predict answers anyone who reaches the port"
    ]


def test_a_replica_with_keys_starts_quietly_whatever_the_setting(monkeypatch, warnings):
    monkeypatch.setenv("RAY_APP_API_KEY", KEYS)
    for allowed in (False, True):
        graph._configure_replica(None, ServeConfig(prediction_log=NO_LOG, allow_anonymous=allowed))  # type: ignore[arg-type]
        assert graph._keys() == (b"k-1", b"k-2")
    assert warnings == []


def test_only_loopback_documents_allow_anonymous_by_themselves():
    """`serve run kuberay/serve-config.yaml` and `ray-app serve` on 127.0.0.1 work without a
    key; the RayService's serveConfigV2 (0.0.0.0) and any other host do not, unless the args
    say so."""
    allowed = [serve_config(host=h)["applications"][0]["args"]["allow_anonymous"]
               for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")]  # fmt: skip
    assert allowed == [True] * 4
    refused = [serve_config(host=h)["applications"][0]["args"]["allow_anonymous"]
               for h in (POD_HOST, "10.0.0.7", "::", "api.example.com")]  # fmt: skip
    assert refused == [False] * 4
    explicit = serve_config(ServeConfig(allow_anonymous=True), host=POD_HOST)
    assert explicit["applications"][0]["args"]["allow_anonymous"] is True
    committed = yaml.safe_load((KUBERAY / "serve-config.yaml").read_text())
    assert committed["applications"][0]["args"]["allow_anonymous"] is True
    body = kuberay.serve_config_apply(kuberay.serve_config_v2())
    v2 = yaml.safe_load(body["spec"]["serveConfigV2"])
    assert v2["applications"][0]["args"]["allow_anonymous"] is False


def test_the_rayservice_pods_require_the_key_secret():
    """Every Serve container reads RAY_APP_API_KEY from the Secret, not optionally: without the
    Secret the kubelet does not start the pod (CreateContainerConfigError)."""
    service = yaml.safe_load((KUBERAY / "base" / "rayservice.yaml").read_text())
    spec = service["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    refs = [e["valueFrom"]["secretKeyRef"] for pod in pods for c in pod["spec"]["containers"]
            for e in c.get("env", []) if e["name"] == "RAY_APP_API_KEY"]  # fmt: skip
    assert len(refs) == len(pods) >= 2
    assert all(ref == {"name": "ray-app-api-key", "key": "keys"} for ref in refs), refs


def test_the_plain_server_refuses_a_network_host_without_a_key(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ray_app.serving.plain", "--host", "0.0.0.0",
                           "--bundle-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=REPO)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {NO_KEYS}"  # one line, before any model is read
