"""Names shared by several layers, each defined once (defaults of settings live in
`ray_app.core.config`, which reads them from here)."""

from __future__ import annotations

from pathlib import Path

# The package ships the canonical UCI files beside the source tree (repo root /data).
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"

# The runtime image (docker/Dockerfile) as the release pushes it; Katib trials, pipeline steps
# and RayJobs default to it.
IMAGE = "ghcr.io/ray-app/ray-app:0.1.0"

# MLflow: the embedded default store, the experiment, the registered model and its alias.
LOCAL_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "adult-income"
REGISTERED_MODEL = "adult-income"
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}"

# A local Ray head (`ray start --head`): its dashboard (Job Submission and Serve REST API).
LOCAL_DASHBOARD = "http://127.0.0.1:8265"
LOCAL_STORAGE_PATH = Path("ray_results")
SERVE_PORT = 8000

# In-cluster names (kuberay/ manifests, the launcher's defaults).
NAMESPACE = "ray-app"
SHARED_PVC = "ray-shared"
SHARED_MOUNT = "/mnt/ray-shared"
# Ray Train's storage_path must be reachable from every node: the RWX volume, not a pod's disk.
CLUSTER_STORAGE_PATH = f"{SHARED_MOUNT}/ray_results"
# The prediction log: the RayService's ingress writes it, the monitor CronJob reads it (both
# get this one value as RAY_APP_PREDICTION_LOG).
CLUSTER_PREDICTION_LOG = f"{SHARED_MOUNT}/predictions"
# Namespace-qualified, so pipeline pods in KFP's namespaces reach it too.
CLUSTER_TRACKING_URI = f"http://mlflow.{NAMESPACE}.svc:5000"
CLUSTER_NAME = "ray-app"
SERVICE_NAME = "adult-income"
# KubeRay names the Serve Service `<RayService>-serve-svc` (utils/util.go GenerateServeServiceName).
CLUSTER_SERVE_URL = f"http://{SERVICE_NAME}-serve-svc.{NAMESPACE}.svc:{SERVE_PORT}"

# The Serve application's name (in the Serve config and in KubeRay's status).
APP_NAME = "adult-income"

# The largest architecture a model bundle (model.json) may ask for: loading builds the model
# before reading any weights, so a hostile model.json could otherwise allocate without limit.
# Each is well over what our configs and search spaces produce (ray_app.training.search: depth
# <= 4, width <= 512, n_frequencies <= 64, num_embedding_dim <= 24; cat_embedding_dim 8;
# ensembles of <= 32; the UCI schema's largest vocabulary is 41 categories).
MAX_MODEL_DEPTH = 8
MAX_MODEL_WIDTH = 4096
MAX_N_FREQUENCIES = 512
MAX_EMBEDDING_DIM = 256
MAX_ENSEMBLE = 32
MAX_CARDINALITY = 10_000
