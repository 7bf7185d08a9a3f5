"""One typed config tree for every entry point; built at the edge (CLI) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# The package ships the canonical UCI files beside the source tree (repo root /data).
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
# The runtime image (docker/Dockerfile) as CI's release job pushes it; Katib trials, pipeline
# steps and RayJobs default to it.
IMAGE = "ghcr.io/ray-app/ray-app:0.1.0"


PathOrUri = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)]


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
    data_dir: Path = REPO_DATA_DIR
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
    n_frequencies: int = Field(48, ge=1)
    frequency_scale: float = Field(20.0, gt=0.0, description="sigma of the initial frequencies")
    num_embedding_dim: int = Field(16, ge=1)
    cat_embedding_dim: int = Field(8, ge=1)
    depth: int = Field(2, ge=1, le=8)
    width: int = Field(256, ge=4, le=4096)
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
        le=32,
        description="K > 1: a deep ensemble of K members (seeds seed..seed+K-1), "
        "trained concurrently, their probabilities averaged",
    )
    # Test-only fault injection: rank 1 hard-exits once at this epoch (marker file in storage).
    fail_once_at_epoch: int | None = Field(None, ge=1)


class RayConfig(_Strict):
    """Where and how wide to run Ray Train."""

    address: str | None = Field(None, description="None: RAY_ADDRESS or a new local Ray")
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: int = Field(1, ge=1)
    use_gpu: bool = False
    storage_path: Path = Path("ray_results")
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

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "adult-income"
    registered_model: str = "adult-income"
    register_model: bool = True
    champion_alias: str = "champion"


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


class AppConfig(_Strict):
    """The whole tree."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _batch_fits_workers(self) -> AppConfig:
        if self.train.batch_size < self.ray.num_workers:
            raise ValueError("train.batch_size must be at least ray.num_workers")
        return self


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

    from ray_app.core.errors import UserError

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


def dump_config(cfg: AppConfig) -> str:
    """The whole tree as YAML (`ray-app config show`, and the config.yaml of every MLflow run);
    loadable again with --config."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
