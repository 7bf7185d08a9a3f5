"""The pod-level hardening shared by the generated Ray pods (manifests.py): the `restricted`
Pod Security Standard's security contexts, the emptyDirs a read-only Ray container writes to,
the head's service account token, mounted in the autoscaler container alone, and the MLflow
user each pod logs in as."""

from __future__ import annotations

from typing import Any, Literal


def security_context(read_only: bool = False) -> dict[str, Any]:
    """Non-root, no privilege escalation, no capabilities (the image's user is uid 1000): what
    the `restricted` Pod Security Standard asks of a container (ray_app/platform/podsecurity.py).
    `read_only`: the root filesystem too; the pod mounts emptyDirs where the process writes."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if read_only:
        context["readOnlyRootFilesystem"] = True
    return context


# The pod-level part of the restricted profile (every container inherits it).
POD_SECURITY_CONTEXT = {
    "fsGroup": 100,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Where a Ray container writes, with its root filesystem read-only: each an emptyDir. The image's
# HOME is /home/ray (rayproject/ray; Python itself lives under it, so HOME stays read-only).
#   /tmp/ray            Ray's session dir (logs, sockets, runtime_env packages). The name is
#                       KubeRay's own: pod.go L862-L870 (v1.7.0) adds a `ray-logs` emptyDir at
#                       /tmp/ray to the head and the autoscaler; with ours in place it mounts
#                       ours into the autoscaler (addEmptyDir, L1546-L1569), so both share it.
#   /tmp                tempfile (MLflow client uploads, torch, the job's outputs)
#   ~/.cache            torch hub, pip, triton caches
#   ~/.ray              Ray's usage-stats config (usage_lib.py) and auth token file
#   ~/ray_results       Ray Train/Tune's default storage when none is given
RAY_HOME = "/home/ray"
RAY_WRITABLE = {
    "ray-logs": "/tmp/ray",
    "tmp": "/tmp",
    "home-cache": f"{RAY_HOME}/.cache",
    "home-ray": f"{RAY_HOME}/.ray",
    "ray-results": f"{RAY_HOME}/ray_results",
}
# The head's pod does not mount its service account token (automountServiceAccountToken:
# false): the Ray container runs the jobs' drivers and needs no Kubernetes API. The autoscaler
# sidecar does (enableInTreeAutoscaling: it lists and scales the cluster's pods with the head's
# service account, which KubeRay sets, pod.go L243-L249): this projected volume, the same one
# the ServiceAccount admission plugin would add, is mounted in the autoscaler container only
# (autoscalerOptions.volumeMounts, merged by pod.go mergeAutoscalerOverrides L1021-L1023).
TOKEN_VOLUME = "autoscaler-token"  # pragma: allowlist secret
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def token_volume() -> dict[str, Any]:
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }  # fmt: skip


# The MLflow users of the pods (MLflow's basic-auth app, kuberay/base/mlflow.yaml): each a
# Secret with `username` and `password`, read by MLflow's client as MLFLOW_TRACKING_USERNAME /
# MLFLOW_TRACKING_PASSWORD. Jobs' clusters (training, tuning, the interactive RayCluster, the
# GPU group) log and register as the writer; the RayService's replicas only read, as the
# reader. `ray-app mlflow-users` creates both users and their grants (ray_app/tracking/users.py).
MLFLOW_WRITER_SECRET = "ray-app-mlflow-writer"  # pragma: allowlist secret (a Secret name)
MLFLOW_READER_SECRET = "ray-app-mlflow-reader"  # pragma: allowlist secret (a Secret name)
MlflowUser = Literal["writer", "reader"]


def mlflow_credentials(user: MlflowUser) -> list[dict[str, Any]]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD from the user's Secret. Optional: a tracking server
    without auth (an existing one, docs/mlflow.md) needs no Secret, and its pods start."""
    secret = MLFLOW_WRITER_SECRET if user == "writer" else MLFLOW_READER_SECRET
    return [
        {"name": f"MLFLOW_TRACKING_{key.upper()}",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in ("username", "password")
    ]  # fmt: skip
