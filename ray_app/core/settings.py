"""Every environment variable ray_app reads, in one settings object (pydantic-settings).

Built once at an edge (a CLI command, a Serve replica's start, a pipeline step, a training
worker's entry) and passed down; nothing below the edges reads `os.environ`. Ray's own
variables (RAY_ADDRESS aside) are read by Ray itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The process environment, typed. Unset variables are None (the config tree decides)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    tracking_uri: str | None = Field(None, validation_alias="MLFLOW_TRACKING_URI")
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    storage_path: Path | None = Field(None, validation_alias="RAY_APP_STORAGE_PATH")
    data_dir: Path | None = Field(None, validation_alias="RAY_APP_DATA_DIR")
    # Where the serving graph logs what it scores and the monitor reads it (one setting for
    # both; the RayService's pods and the monitor CronJob get the same value).
    prediction_log: str | None = Field(None, validation_alias="RAY_APP_PREDICTION_LOG")
    # /predict's API keys, comma-separated (two during a rotation); empty: open.
    api_keys: SecretStr = Field(SecretStr(""), validation_alias="RAY_APP_API_KEY")
    kuberay_crds: Path | None = Field(None, validation_alias="RAY_APP_KUBERAY_CRDS")
    # A Ray head with token auth (Ray 2.60): what the local launcher sends to its REST APIs.
    ray_auth_token: SecretStr | None = Field(None, validation_alias="RAY_AUTH_TOKEN")
    ray_auth_token_path: Path = Field(
        Path("~/.ray/auth_token"), validation_alias="RAY_AUTH_TOKEN_PATH"
    )
    ray_auth_mode: str | None = Field(None, validation_alias="RAY_AUTH_MODE")
    # Multi-user Kubeflow Pipelines: a bearer token for its authenticating proxy.
    kfp_token: SecretStr | None = Field(None, validation_alias="RAY_APP_KFP_TOKEN")
    # `ray-app mlflow-users`: the tracking server's least-privilege users (its admin is
    # MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's clients themselves).
    mlflow_writer_username: str = Field(
        "ray-app-writer", validation_alias="RAY_APP_MLFLOW_WRITER_USERNAME"
    )
    mlflow_writer_password: SecretStr | None = Field(
        None, validation_alias="RAY_APP_MLFLOW_WRITER_PASSWORD"
    )
    mlflow_reader_username: str = Field(
        "ray-app-reader", validation_alias="RAY_APP_MLFLOW_READER_USERNAME"
    )
    mlflow_reader_password: SecretStr | None = Field(
        None, validation_alias="RAY_APP_MLFLOW_READER_PASSWORD"
    )
    # `module:function` called after every epoch in every training process (instrumentation;
    # the tests install their fault injection here). Unset in normal use.
    epoch_hook: str | None = Field(None, validation_alias="RAY_APP_EPOCH_HOOK")

    def prediction_log_location(self, location: str | None) -> str | None:
        """Where the prediction log lives: `location` when set ("off": nowhere, None), else
        RAY_APP_PREDICTION_LOG, else `<RAY_APP_STORAGE_PATH or ./ray_results>/predictions`
        (local folders made absolute, so every process names the same one)."""
        if location == "off":
            return None
        found = location or self.prediction_log
        if found is None:
            found = str((self.storage_path or Path("ray_results")) / "predictions")
        return found if "://" in found else str(Path(found).expanduser().resolve())

    def keys(self) -> tuple[bytes, ...]:
        """The API keys, one per comma-separated entry (blank entries ignored)."""
        raw = self.api_keys.get_secret_value()
        return tuple(k.strip().encode() for k in raw.split(",") if k.strip())

    def auth_token(self) -> str | None:
        """The Ray auth token: RAY_AUTH_TOKEN, else the token file (Ray's own clients read
        both, in this order); None when there is neither or RAY_AUTH_MODE=disabled."""
        if (self.ray_auth_mode or "").lower() == "disabled":
            return None
        if self.ray_auth_token is not None:
            return self.ray_auth_token.get_secret_value() or None
        path = self.ray_auth_token_path.expanduser()
        if not path.is_file():
            return None
        return path.read_text().strip() or None
