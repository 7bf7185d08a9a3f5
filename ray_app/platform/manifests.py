"""KubeRay objects generated from the package: one cluster spec, one Serve config, one CLI.

    ray-app kube-manifests                  # writes kuberay/base/ray*.yaml (tested up to date)

The RayCluster, both RayJobs and the RayService share `cluster_spec`; the RayService embeds
`serve_config()` (the document `serve run kuberay/serve-config.yaml` runs); the RayJobs run the
`ray-app` CLI. Overlays in kuberay/overlays change sizes, storage and exposure, not structure.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Literal

import yaml

from ray_app.core.constants import (
    CLUSTER_NAME,
    CLUSTER_PREDICTION_LOG,
    CLUSTER_STORAGE_PATH,
    CLUSTER_TRACKING_URI,
    NAMESPACE,
    SERVICE_NAME,
    SHARED_MOUNT,
    SHARED_PVC,
)
from ray_app.platform.podspec import (
    POD_SECURITY_CONTEXT,
    RAY_WRITABLE,
    TOKEN_PATH,
    TOKEN_VOLUME,
    MlflowUser,
    mlflow_credentials,
    security_context,
    token_volume,
)
from ray_app.serving.config import POD_HOST, SERVE_ENV, render_config, serve_config

RAY_VERSION = "2.60.0"
# Image placeholders: overlays map them to the registry and tag with kustomize `images:`, the
# release pins both to the pushed digests (platform/release.py). GPU_IMAGE is the GPU group's.
IMAGE = "ray-app"
GPU_IMAGE = "ray-app-gpu"
# Server-side apply field managers (docs/kubernetes.md, "Who owns which field"): the release
# (and a first deployment) owns every field of the rendered overlay; the deploy step owns the
# RayService's serveConfigV2, which the release never applies.
RELEASE_MANAGER = "ray-app-release"
DEPLOY_MANAGER = "ray-app-deploy"
LAUNCH_MANAGER = "ray-app-launcher"  # creates (and deletes) the jobs' own RayJobs
# An optional pull secret for a private registry (new GHCR packages are private): every pod
# spec names it; while it does not exist the kubelet pulls without it (and logs a warning).
PULL_SECRET = "ray-app-registry"  # pragma: allowlist secret (a Secret name)
API_KEY_ENV = "RAY_APP_API_KEY"  # pragma: allowlist secret (a variable name)
JobKind = Literal["train", "tune"]
# Seconds a job may run before KubeRay fails it (DeadlineExceeded).
DEADLINES: dict[str, int] = {"train": 3600, "tune": 4 * 3600}

HEAD_RESOURCES = {"cpu": "2", "memory": "6Gi"}
WORKER_RESOURCES = {"cpu": "2", "memory": "4Gi"}


def _resources(amounts: dict[str, str]) -> dict[str, Any]:
    # requests == limits: Guaranteed QoS, and Ray sizes itself from the limits.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(extra: dict[str, str], user: MlflowUser) -> list[dict[str, Any]]:
    base = {"MLFLOW_TRACKING_URI": CLUSTER_TRACKING_URI,
            "RAY_APP_STORAGE_PATH": CLUSTER_STORAGE_PATH,
            "RAY_APP_PREDICTION_LOG": CLUSTER_PREDICTION_LOG}  # fmt: skip
    plain: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in {**base, **extra}.items()]
    return plain + mlflow_credentials(user)


def _container(
    name: str,
    resources: dict[str, str],
    env: dict[str, str],
    ports: list,
    image: str = IMAGE,
    user: MlflowUser = "writer",
) -> dict:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(env, user),
        "resources": _resources(resources),
        "securityContext": security_context(read_only=True),
        "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT}]
        + [{"name": name, "mountPath": path} for name, path in RAY_WRITABLE.items()],
    }
    if ports:
        container["ports"] = ports
    return container


def pull_secrets() -> list[dict[str, str]]:
    return [{"name": PULL_SECRET}]


def _pod(container: dict[str, Any], *, worker: bool) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_PVC}}
    ]
    volumes += [{"name": name, "emptyDir": {}} for name in RAY_WRITABLE]
    if not worker:
        volumes.append(token_volume())
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # Autoscaler v2 replaces failed pods itself; a restarted Ray container cannot rejoin.
        "restartPolicy": "Never",
        "securityContext": dict(POD_SECURITY_CONTEXT),
        "imagePullSecrets": pull_secrets(),
        # Workers never call the Kubernetes API; on the head only the autoscaler does, with
        # the token mounted in its container alone (TOKEN_VOLUME).
        "automountServiceAccountToken": False,
    }
    return {"spec": spec}


SERVE_LABEL = "ray-app.io/serve"
API_KEY_SECRET = "ray-app-api-key"  # nosec B105  # pragma: allowlist secret (its name)
API_KEY_FROM_SECRET = {
    "name": API_KEY_ENV,
    # Not optional: a pod without the Secret does not start (CreateContainerConfigError
    # names it), and a replica with an empty key refuses to (serving/guards.check_keys).
    "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": "keys"}},
}


def cluster_spec(serve: bool = False) -> dict[str, Any]:
    """RayCluster spec shared by the RayCluster, the RayJobs and the RayService."""
    env = dict(SERVE_ENV) if serve else {}
    head_ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "metrics", "containerPort": 8080},
    ]
    worker_ports: list[dict[str, Any]] = [{"name": "metrics", "containerPort": 8080}]
    if serve:
        head_ports.append({"name": "serve", "containerPort": 8000})
        worker_ports.append({"name": "serve", "containerPort": 8000})
    # Serve replicas read the registry (the reader); every other cluster runs jobs (the writer).
    user: MlflowUser = "reader" if serve else "writer"
    head = _container("ray-head", HEAD_RESOURCES, env, head_ports, user=user)
    worker = _container("ray-worker", WORKER_RESOURCES, env, worker_ports, user=user)
    if serve:
        # /predict's API keys from the Secret, required (serveConfigV2 leaves allow_anonymous
        # false). Rotate by writing "old,new" into it.
        for container in (head, worker):
            container["env"].append(API_KEY_FROM_SECRET)
        # Ready when the app's own /health answers (graph wired; "no-model" on an empty
        # registry counts as up). Replaces KubeRay's injected proxy probe; its timeout must
        # exceed /health's own 2 s ping of the model deployment (the default is 1 s).
        worker["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": 8000},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 12,
        }
    head_pod, worker_pod = _pod(head, worker=False), _pod(worker, worker=True)
    if serve:
        # Selects the pods whose Serve port is open to users (networkpolicy.yaml, ray-serve).
        for pod in (head_pod, worker_pod):
            pod["metadata"] = {"labels": {SERVE_LABEL: "true"}}
    return {
        "rayVersion": RAY_VERSION,
        # Token auth: KubeRay creates the secret and hands it to the head, workers and submitter.
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 120,
            "resources": _resources({"cpu": "500m", "memory": "512Mi"}),
            "securityContext": security_context(read_only=True),
            # KubeRay adds /tmp/ray (the head's `ray-logs`); tempfiles and the API token here.
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True},
            ],
        },
        "headGroupSpec": {
            # No Ray work on the head: it runs the GCS, the dashboard and the job drivers.
            # The dashboard listens on the pod network only; the head Service is ClusterIP.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "serviceType": "ClusterIP",
            "template": head_pod,
        },
        "workerGroupSpecs": [
            {
                "groupName": "cpu",
                "replicas": 1,
                "minReplicas": 1,
                "maxReplicas": 4,
                "rayStartParams": {},
                "template": worker_pod,
            }
        ],
    }


# GPU worker group (kuberay/components/gpu): one L4 per node on GKE (g2-standard-8: 8 vCPU,
# 32 GiB), scaled from zero; sized to the node's allocatable share (docs/kubernetes.md).
GPU_NODE = "g2-standard-8"
GPU_WORKER_RESOURCES = {"cpu": "7", "memory": "26Gi", "nvidia.com/gpu": "1"}


def gpu_worker_group() -> dict[str, Any]:
    """The GPU group the gpu component adds to every cluster (image: the GPU build)."""
    worker = _container(
        "ray-worker",
        GPU_WORKER_RESOURCES,
        {},
        [{"name": "metrics", "containerPort": 8080}],
        image=GPU_IMAGE,
    )
    pod = _pod(worker, worker=True)
    pod["spec"]["nodeSelector"] = {"cloud.google.com/gke-accelerator": "nvidia-l4",
                                   "node.kubernetes.io/instance-type": GPU_NODE}  # fmt: skip
    pod["spec"]["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    return {
        "groupName": "gpu",
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": 4,
        "rayStartParams": {},
        "template": pod,
    }


def gpu_patches() -> dict[str, list[dict[str, Any]]]:
    """JSON patches of kuberay/components/gpu: the GPU group appended to each cluster spec."""
    group = gpu_worker_group()
    return {
        "gpu-raycluster.yaml": [{"op": "add", "path": "/spec/workerGroupSpecs/-", "value": group}],
        "gpu-rayjob.yaml": [
            {"op": "add", "path": "/spec/rayClusterSpec/workerGroupSpecs/-", "value": group}
        ],
    }


def _meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": {"app.kubernetes.io/component": component}}


def raycluster() -> dict[str, Any]:
    """Long-lived cluster for interactive work and RayJobs that reuse it (clusterSelector)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _meta(CLUSTER_NAME, "cluster"),
        "spec": cluster_spec(),
    }


def job_payload(
    kind: JobKind,
    args: list[str] | None = None,
    tracking_uri: str = CLUSTER_TRACKING_URI,
    storage_path: str = CLUSTER_STORAGE_PATH,
) -> tuple[str, dict[str, Any]]:
    """Entrypoint and runtime env of a training/tuning job (RayJob or Job Submission API)."""
    entrypoint = shlex.join(["ray-app", kind, "--json", *(args or [])])
    runtime_env = {
        "env_vars": {"MLFLOW_TRACKING_URI": tracking_uri, "RAY_APP_STORAGE_PATH": storage_path}
    }
    return entrypoint, runtime_env


def with_image(obj: Any, image: str) -> Any:
    """Copy of a manifest with every container using the placeholder IMAGE set to `image`."""
    if isinstance(obj, list):
        return [with_image(item, image) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out = {key: with_image(value, image) for key, value in obj.items()}
    if out.get("image") == IMAGE and "name" in out:
        out["image"] = image
    return out


SUBMITTER_COMPONENT = "ray-job-submitter"


def submitter_template() -> dict[str, Any]:
    """The RayJob's submitter pod (`ray job submit` in K8sJobMode). KubeRay's default one
    (common/job.go GetSubmitterTemplate, L215-L245 at v1.7.0) has the head's image and
    resources but no pull secret and no securityContext; KubeRay fills in the command
    (rayjob_controller.go configureSubmitterContainer, L640-L646: when `command` is empty)."""
    container = {
        "name": "ray-job-submitter",
        "image": IMAGE,
        "resources": {"requests": {"cpu": "500m", "memory": "200Mi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": security_context(),
    }  # fmt: skip
    # The label: the NetworkPolicy that lets it reach the head's dashboard (networkpolicy.yaml).
    return {"metadata": {"labels": {"app.kubernetes.io/component": SUBMITTER_COMPONENT}},
            "spec": {"containers": [container], "restartPolicy": "Never",
                     "automountServiceAccountToken": False,
                     "securityContext": dict(POD_SECURITY_CONTEXT),
                     "imagePullSecrets": pull_secrets()}}  # fmt: skip


def rayjob(
    kind: JobKind,
    args: list[str] | None = None,
    name: str | None = None,
    reuse_cluster: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    suspend: bool = False,
    ray_cluster_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayJob running `ray-app train|tune` on its own cluster (or on `reuse_cluster`).

    `ray_cluster_spec` replaces the generated cluster (the launcher passes the one of the
    overlay the user deployed: its sizes, GPU group and image).
    """
    entrypoint, default_env = job_payload(kind, args)
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "runtimeEnvYAML": yaml.safe_dump(runtime_env or default_env, sort_keys=False),
        "activeDeadlineSeconds": DEADLINES[kind],
        "submitterConfig": {"backoffLimit": 2},
        "submitterPodTemplate": submitter_template(),
    }
    if reuse_cluster:
        # validation.go L567-L578 (KubeRay v1.7): clusterSelector refuses backoffLimit > 0,
        # suspend, and (through L753-L755) a TTL without shutdownAfterJobFinishes.
        spec["clusterSelector"] = {"ray.io/cluster": reuse_cluster}
    else:
        # A retry gets a new cluster; the job resumes from its checkpoints in shared storage.
        spec["backoffLimit"] = 1
        spec["shutdownAfterJobFinishes"] = True
        spec["ttlSecondsAfterFinished"] = 600
        spec["rayClusterSpec"] = ray_cluster_spec or cluster_spec()
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(name or f"ray-app-{kind}", kind),
        "spec": spec,
    }


def serve_config_v2(doc: dict[str, Any] | None = None) -> str:
    """The RayService's serveConfigV2: the document of kuberay/serve-config.yaml, bound to
    all interfaces (pod networking: the Service reaches the pod's IP)."""
    return yaml.safe_dump(doc or serve_config(host=POD_HOST), sort_keys=False)


def rayservice() -> dict[str, Any]:
    """The Serve graph on its own cluster; a config change is applied in place by KubeRay.

    No serveConfigV2: that field belongs to the deploy step (field manager DEPLOY_MANAGER,
    `ray-app deploy`, `serve_config_apply`), so the release, which owns everything here,
    never applies it and never conflicts with a deploy (docs/kubernetes.md)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(SERVICE_NAME, "serve"),
        "spec": {
            # A cluster-spec change starts a new cluster and moves traffic once it is ready.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": cluster_spec(serve=True),
        },
    }


def serve_config_apply(serve_doc: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The server-side apply body of a deploy: the RayService's serveConfigV2, nothing else
    (what DEPLOY_MANAGER owns)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": SERVICE_NAME, "namespace": namespace},
        "spec": {"serveConfigV2": serve_doc},
    }


HEADER = (
    "# Generated by `ray-app kube-manifests` from ray_app/platform/manifests.py. Do not edit.\n"
)


def manifests() -> dict[str, dict[str, Any]]:
    """File name -> object, for kuberay/base."""
    return {
        "raycluster.yaml": raycluster(),
        # Suspended templates: applying an overlay starts no cluster. `ray-app launch train` and
        # the pipeline create their own, unsuspended, RayJob on the template's cluster spec; a
        # `kubectl patch` of `suspend` would take the field from the release (its next apply:
        # 409), see docs/kubernetes.md "Who owns which field".
        "rayjob-train.yaml": rayjob("train", suspend=True),
        "rayjob-tune.yaml": rayjob("tune", suspend=True),
        "rayservice.yaml": rayservice(),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, runtimeEnvYAML) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(obj: dict[str, Any]) -> str:
    return HEADER + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


def write_manifests(
    base_dir: Path, serve_config_path: Path, gpu_dir: Path | None = None
) -> list[Path]:
    """Write the generated base objects, the GPU component's patches and the Serve config."""
    base_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, obj in manifests().items():
        path = base_dir / name
        path.write_text(render(obj))
        written.append(path)
    gpu_dir = gpu_dir or base_dir.parent / "components" / "gpu"
    gpu_dir.mkdir(parents=True, exist_ok=True)
    for name, patch in gpu_patches().items():
        path = gpu_dir / name
        path.write_text(HEADER + yaml.dump(patch, Dumper=_Dumper, sort_keys=False, width=100))
        written.append(path)
    from ray_app.platform.admission import binding, policy

    path = base_dir / "admission.yaml"
    path.write_text(HEADER + yaml.dump_all([policy(), binding()], Dumper=_Dumper,
                                           sort_keys=False, width=100))  # fmt: skip
    written.append(path)
    serve_config_path.write_text(render_config(serve_config()))
    written.append(serve_config_path)
    return written
