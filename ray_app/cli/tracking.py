"""`ray-app mlflow-users`: the tracking server's least-privilege users (basic-auth app)."""

from __future__ import annotations

import typer

from ray_app.cli.console import emit
from ray_app.cli.options import JsonOpt, Overrides, config, overrides
from ray_app.core.errors import UserError
from ray_app.core.settings import Settings

app = typer.Typer()


@app.command("mlflow-users")
@overrides("tracking")
def mlflow_users(options: Overrides, as_json: JsonOpt = False) -> None:
    """Create (or reset the passwords of) the writer and reader users of an MLflow server with
    basic auth and grant each only what it needs: the writer EDIT on the experiments and the
    registered model, the reader READ. Run as its admin (MLFLOW_TRACKING_USERNAME/PASSWORD);
    the users from RAY_APP_MLFLOW_{WRITER,READER}_{USERNAME,PASSWORD}."""
    from ray_app.tracking.users import Credential, ensure_users

    cfg = config(options)
    settings = Settings()
    users = []
    for role, name, password in (
        ("WRITER", settings.mlflow_writer_username, settings.mlflow_writer_password),
        ("READER", settings.mlflow_reader_username, settings.mlflow_reader_password),
    ):
        if password is None or not password.get_secret_value():
            raise UserError(f"RAY_APP_MLFLOW_{role}_PASSWORD is not set")
        users.append(Credential(username=name, password=password))
    result = ensure_users(cfg.tracking, users[0], users[1])
    emit(result.model_dump(), as_json, "MLflow users")
