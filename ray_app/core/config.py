"""One typed config tree for every entry point; built at the edge (CLI) and passed down.

Precedence, lowest first: the defaults below, a `--config` YAML file, the environment
(`ray_app.core.settings`), the command line's options (`build_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ray_app.core import constants as c
from ray_app.core.errors import UserError
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.core.settings import Settings

PathOrUri = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)]
# /predict bodies over this are refused with 413 before they are parsed.
MAX_BODY_BYTES = 2 * 1024 * 1024
# A /predict body must arrive within this (a client trickling it would hold a request slot).
BODY_TIMEOUT_S = 10.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the rows come from and how they are split."""

    # Strings, not Paths: a URI (s3://bucket/prefix/) must keep its '//'.
    train_path: PathOrUri | None = Field(
        None,
        description="file, folder, glob or URI of CSV / Parquet / raw UCI files; "
        "default: shipped adult.data",
    )
    test_path: PathOrUri | None = Field(
        None,
        description="likewise; default: shipped adult.test for the shipped training "
        "data, else a split of train_path",
    )
    data_dir: Path = c.REPO_DATA_DIR
    val_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.5, description="share held out for test when one file is given"
    )
    max_test_overlap: float = Field(
        0.01, ge=0.0, le=1.0, description="test rows that may repeat training rows (share)"
    )
    seed: int = 42
    subsample: int | None = Field(None, gt=100, description="use only N training rows (quick runs)")
    verify_checksums: bool = True


class FeatureConfig(_Strict):
    """How raw columns become model inputs (fitted on the training split only)."""

    numeric_scaling: Literal["quantile_normal", "standard"] = "quantile_normal"
    n_quantiles: int = Field(1000, ge=10, le=10_000)
    min_category_count: int = Field(1, ge=1, description="rarer categories go to the OOV bucket")


class ModelConfig(_Strict):
    """Architecture of the tabular MLP."""

    num_embedding: Literal["plr", "none"] = "plr"
    # The upper bounds also bound what a model bundle's model.json may ask for (ml.bundle).
    n_frequencies: int = Field(48, ge=1, le=c.MAX_N_FREQUENCIES)
    frequency_scale: float = Field(20.0, gt=0.0, description="sigma of the initial frequencies")
    num_embedding_dim: int = Field(16, ge=1, le=c.MAX_EMBEDDING_DIM)
    cat_embedding_dim: int = Field(8, ge=1, le=c.MAX_EMBEDDING_DIM)
    depth: int = Field(2, ge=1, le=c.MAX_MODEL_DEPTH)
    width: int = Field(256, ge=4, le=c.MAX_MODEL_WIDTH)
    dropout: float = Field(0.15, ge=0.0, lt=1.0)


class TrainConfig(_Strict):
    """Optimisation settings shared by train, tune and Katib trials."""

    max_epochs: int = Field(20, ge=1, le=500)
    batch_size: int = Field(256, ge=8, description="global batch, split across workers")
    lr: float = Field(1e-3, gt=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, lt=1.0)
    patience: int = Field(4, ge=1, description="early stopping on val_log_loss")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: decay the learning rate to 0 over max_epochs"
    )
    seed: int = 0
    ensemble: int = Field(
        1,
        ge=1,
        le=c.MAX_ENSEMBLE,
        description="K > 1: a deep ensemble of K members (seeds seed..seed+K-1), "
        "trained concurrently, their probabilities averaged",
    )


class RayConfig(_Strict):
    """Where and how wide to run Ray Train."""

    address: str | None = Field(None, description="None: RAY_ADDRESS or a new local Ray")
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: int = Field(1, ge=1)
    use_gpu: bool = False
    storage_path: Path = c.LOCAL_STORAGE_PATH
    max_failures: int = Field(2, ge=-1)
    shard_cache_mb: float = Field(
        2048,
        ge=0,
        description="a worker caches its training shard in memory up to this size; "
        "beyond it the shard is streamed from the object store each epoch",
    )
    # Train V2's controller polls workers at this interval and ray.train.report waits for it.
    health_check_interval_s: float = Field(0.1, gt=0.0)


class TrackingConfig(_Strict):
    """MLflow tracking and registry."""

    tracking_uri: str = c.LOCAL_TRACKING_URI
    experiment: str = c.EXPERIMENT
    registered_model: str = c.REGISTERED_MODEL
    register_model: bool = True
    champion_alias: str = c.CHAMPION_ALIAS

    @property
    def champion_uri(self) -> str:
        """models:/<registered model>@<champion alias>."""
        return f"models:/{self.registered_model}@{self.champion_alias}"

    def version_uri(self, version: str | int) -> str:
        """models:/<registered model>/<version>: a pinned version."""
        return f"models:/{self.registered_model}/{version}"


class SearchConfig(_Strict):
    """Hyperparameter search (Ray Tune with ASHA); the space is in ray_app.training.search."""

    num_samples: int = Field(16, ge=1)
    max_concurrent: int = Field(2, ge=1)
    max_epochs: int = Field(16, ge=1, description="epoch budget of one trial (ASHA max_t)")
    grace_period: int = Field(2, ge=1)
    reduction_factor: int = Field(3, ge=2)
    scheduler: Literal["asha", "fifo"] = "asha"
    workers_per_trial: int = Field(0, ge=0, description="0: loop in the trial; N: TorchTrainer")
    seed: int = 0
    name: str | None = None
    resume: bool = False
    retrain: bool = True


class PredictionLogConfig(BaseModel):
    """The serving graph's prediction log (`ray_app.serving.predlog`): every scored record,
    written off the request path as Parquet under `<location>/records/date=YYYY-MM-DD/`."""

    model_config = ConfigDict(extra="forbid")

    # None: RAY_APP_PREDICTION_LOG, else `<RAY_APP_STORAGE_PATH or ./ray_results>/predictions`,
    # resolved in the replica (so `serve run` and the RayService share one document); "off":
    # no log; otherwise a folder or an s3:// / gs:// URI.
    location: str | None = Field(None, description="folder or URI; 'off': no log")
    sample_rate: float = Field(1.0, gt=0.0, le=1.0, description="share of records logged")
    exclude: list[str] = Field(default_factory=list, description="features never written (privacy)")
    flush_s: float = Field(10.0, gt=0.0, description="a file is written at least this often")
    file_rows: int = Field(100_000, ge=1, description="a file is written at this many rows")
    buffer_rows: int = Field(
        200_000, ge=1, description="rows held while the sink is slow; more are dropped, counted"
    )

    @field_validator("exclude")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(FEATURE_COLUMNS))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; expected some of {FEATURE_COLUMNS}")
        return value


class ServeConfig(BaseModel):
    """`args` of the Serve application (the `args:` block of the Serve config YAML)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str | None = Field(c.CHAMPION_URI, description="MLflow model URI or registry alias")
    bundle_dir: str | None = Field(None, description="local model bundle (overrides model_uri)")
    # None: MLflow's own resolution (MLFLOW_TRACKING_URI in the replica's environment, else
    # ./mlflow.db), so `serve run` and the RayService (whose pods set the variable) share one doc.
    tracking_uri: str | None = None
    max_records: int = Field(1000, ge=1, description="records per /predict request")
    max_body_bytes: int = Field(
        MAX_BODY_BYTES, ge=1024, description="/predict body limit (413 before it is parsed)"
    )
    body_timeout_s: float = Field(
        BODY_TIMEOUT_S, gt=0.0, description="/predict body deadline (408 and closed after it)"
    )
    # No RAY_APP_API_KEY in a replica's environment: refuse to start unless this is true
    # (then /predict answers anyone who reaches the port). The documents bound to 127.0.0.1
    # (`serve run` on a laptop, `ray-app serve`) set it (serving/config.py); the RayService's
    # serveConfigV2 does not, so a cluster without the key Secret serves nothing.
    allow_anonymous: bool = Field(
        False, description="serve /predict without an API key (else no key: refuse to start)"
    )
    # A deep ensemble's members disagreeing by more than this on a record: label null and a
    # reason instead of a guess (None: always a label).
    abstain_above: float | None = Field(
        None, gt=0.0, le=0.5, description="spread above which a record gets no label"
    )
    batch_size: int = Field(256, ge=1, description="@serve.batch max_batch_size")
    # 0: a batch is whatever queued while the previous one ran (no added latency at low load).
    batch_wait_s: float = Field(0.0, ge=0.0, description="@serve.batch wait")
    torch_threads: int = Field(1, ge=1)
    # Cold start: an alias that resolves to nothing yet is looked up again this often.
    model_poll_s: float = Field(5.0, gt=0.0, description="no model yet: registry poll period")
    # Drift gauges on /metrics: PSI of the last `drift_window` scored rows against the training
    # reference, once at least `drift_min_rows` have been seen (fewer give noisy PSI).
    drift_window: int = Field(5000, ge=100, description="rows in the drift window")
    drift_min_rows: int = Field(500, ge=1, description="rows before PSI is exported")
    prediction_log: PredictionLogConfig = PredictionLogConfig()


class LaunchConfig(BaseModel):
    """Where a pipeline's (or a retrain's) Ray work runs and how its launcher waits."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["kuberay", "local"] = "kuberay"
    namespace: str = c.NAMESPACE
    # Used when no template RayJob is deployed (job_templates); the pipeline compiled for a
    # release carries the pushed digest here.
    image: str = c.IMAGE
    # kuberay: take the cluster spec from the deployed `ray-app-train|tune` RayJobs.
    job_templates: bool = True
    # kuberay: reuse this RayCluster (clusterSelector) instead of a cluster per job.
    reuse_cluster: str | None = None
    # local: the head's dashboard (Job Submission and Serve REST API).
    ray_address: str = c.LOCAL_DASHBOARD
    tracking_uri: str = c.CLUSTER_TRACKING_URI
    storage_path: str = c.CLUSTER_STORAGE_PATH
    poll_s: float = Field(10.0, gt=0)
    timeout_s: float | None = Field(
        None, gt=0, description="how long to wait for a job (None: every attempt the "
        "operator may make: (backoffLimit + 1) x (activeDeadlineSeconds + start))"
    )  # fmt: skip
    deploy_timeout_s: float = Field(1800, gt=0, description="until a deploy serves its version")
    cleanup: Literal["always", "on-success", "never"] = "on-success"
    service: str = c.SERVICE_NAME
    # kuberay: the RayService's Serve Service, whose /health names the served version.
    serve_url: str = c.CLUSTER_SERVE_URL
    serve_port: int = Field(c.SERVE_PORT, gt=0, lt=65536)
    # A failed or unhealthy application must stay so this long before deploy gives up (the
    # operator's status can lag one reconcile, ~2 s, behind the Serve controller).
    settle_s: float = Field(15.0, ge=0)


class MonitorConfig(_Strict):
    """`ray-app monitor`: when a feature has drifted, when performance has dropped."""

    psi_threshold: float = Field(0.2, gt=0.0, description="PSI above which a feature drifted")
    log_loss_tolerance: float = Field(
        0.10, ge=0.0, description="live log loss this share above the model's test log loss: "
        "a performance drop"
    )  # fmt: skip
    spread_ratio: float = Field(
        1.5, gt=1.0, description="an ensemble's mean spread on the rows this many times its "
        "validation mean: the label-free uncertainty warning"
    )  # fmt: skip
    retention_days: int | None = Field(
        None, ge=1, description="a prediction log's partitions older than this are removed "
        "by the monitor run (None: kept)"
    )  # fmt: skip


class AppConfig(_Strict):
    """The whole tree."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig = SearchConfig()
    serve: ServeConfig = ServeConfig()
    launch: LaunchConfig = LaunchConfig()
    monitor: MonitorConfig = MonitorConfig()

    @model_validator(mode="after")
    def _batch_fits_workers(self) -> AppConfig:
        if self.train.batch_size < self.ray.num_workers:
            raise ValueError("train.batch_size must be at least ray.num_workers")
        return self


def absolute_sqlite(tracking_uri: str) -> str:
    """sqlite:///mlflow.db -> sqlite:////abs/mlflow.db, for processes in other directories
    (Serve replicas, Ray jobs, pipeline steps)."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(tracking_uri.removeprefix("sqlite:///")).resolve())
    return tracking_uri


def plain_mlp(cfg: AppConfig) -> AppConfig:
    """The seed's setting for comparison: standard scaling, one hidden ReLU layer, no PLR."""
    return cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update={"numeric_scaling": "standard"}),
            "model": cfg.model.model_copy(
                update={"num_embedding": "none", "depth": 1, "width": 64, "dropout": 0.0}
            ),
        }
    )


def load_config_file(path: Path) -> dict[str, Any]:
    """The sections of a YAML config file (`--config`), as a plain tree for AppConfig; the
    tree's own validation then names any unknown or bad field."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, train, ray, ...), "
                        f"got {type(doc).__name__}")  # fmt: skip
    return doc


def _from_environment(settings: Settings) -> dict[str, dict[str, Any]]:
    """The sections the environment sets (None: the variable is unset)."""
    return {
        "data": {"data_dir": settings.data_dir},
        "ray": {"address": settings.ray_address, "storage_path": settings.storage_path},
        "tracking": {"tracking_uri": settings.tracking_uri},
    }


def build_config(
    config_file: Path | None = None,
    settings: Settings | None = None,
    **sections: dict[str, Any],
) -> AppConfig:
    """Validate into the typed tree: the tree's defaults, then the config file's values, then
    the environment (`settings`), then `sections` (the options given on the command line;
    None: not given). A bad value is a user error naming the file and the field."""
    tree = load_config_file(config_file) if config_file else {}
    layers = [_from_environment(settings) if settings else {}, sections]
    for layer in layers:
        for section, values in layer.items():
            given = {f: x for f, x in values.items() if x is not None}
            if not given:
                continue
            base = tree.get(section) or {}
            if not isinstance(base, dict):
                raise UserError(f"{config_file}: '{section}' must be a mapping of settings")
            tree[section] = {**base, **given}
    try:
        return AppConfig(**tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        where = f" ({config_file} and the options given)" if config_file else ""
        raise UserError(f"invalid configuration{where}: {problems}") from None


def dump_config(cfg: AppConfig) -> str:
    """The whole tree as YAML (`ray-app config show`, and the config.yaml of every MLflow run);
    loadable again with --config."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
