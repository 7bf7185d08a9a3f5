"""Least-privilege users of an MLflow tracking server that runs MLflow's basic-auth app
(`mlflow server --app-name basic-auth`, kuberay/base/mlflow.yaml; docs/mlflow.md).

    ray-app mlflow-users --tracking-uri http://mlflow.ray-app.svc:5000

Run as the admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow's clients
read). Two users, each created (or its password reset: a rotation) and granted exactly:

- the writer (training and tuning jobs, the pipeline, the monitor): EDIT on the experiment, on
  its `-monitoring` experiment and on the registered model: log runs, register versions, move
  the alias and tag it; not delete them, not grant anything (MANAGE).
- the reader (Serve replicas): READ on the registered model (resolve the alias) and on the
  experiment (the versions' files are the logged models' artifacts, under it); nothing else.

With the server's `default_permission = NO_PERMISSIONS` these grants are all a user has. The
experiments and the registered model are created here when missing (by the admin), because a
grant names an existing experiment's id. Running it again changes nothing but the passwords.
"""

from __future__ import annotations

from typing import Any, Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, SecretStr

from ray_app.core.config import TrackingConfig
from ray_app.core.errors import UserError
from ray_app.core.redact import redact

Permission = Literal["READ", "EDIT"]
EXISTS = "RESOURCE_ALREADY_EXISTS"


class Credential(BaseModel):
    """A user's name and password (the password never printed)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr


class Grant(BaseModel):
    username: str
    resource_type: Literal["experiment", "registered_model"]
    resource: str  # the experiment's name or the registered model's name
    resource_id: str  # what MLflow keys the grant on: the experiment's id, the model's name
    permission: Permission


class UsersResult(BaseModel):
    tracking_uri: str
    created: list[str]
    password_reset: list[str]
    grants: list[Grant]


def monitoring_experiment(cfg: TrackingConfig) -> str:
    """The experiment the monitor logs to (monitoring/report.py)."""
    return f"{cfg.experiment}-monitoring"


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as exc:  # created meanwhile by a job
        if exc.error_code != EXISTS:
            raise
        made = client.get_experiment_by_name(name)
        if made is None:
            raise
        return str(made.experiment_id)


def _registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != EXISTS:
            raise


def _user(auth: Any, user: Credential) -> bool:
    """Create `user`, or reset its password when it exists; True when created."""
    password = user.password.get_secret_value()
    if not password:
        raise UserError(f"MLflow user {user.username!r}: empty password")
    try:
        auth.create_user(user.username, password)
        return True
    except MlflowException as exc:
        if exc.error_code != EXISTS:
            raise
    auth.update_user_password(user.username, password)
    return False


def _grant(auth: Any, grant: Grant) -> None:
    """The grant, replacing one the user already has on that resource (any level)."""
    args = (grant.username, grant.resource_type, grant.resource_id)
    try:
        auth.grant_user_permission(*args, grant.permission)
    except MlflowException as exc:
        if exc.error_code != EXISTS:
            raise
        auth.revoke_user_permission(*args)
        auth.grant_user_permission(*args, grant.permission)


def plan(cfg: TrackingConfig, writer: str, reader: str,
         experiment_ids: dict[str, str]) -> list[Grant]:  # fmt: skip
    """The grants, given the experiments' ids (name -> id)."""
    grants = []
    for name, permissions in ((cfg.experiment, {writer: "EDIT", reader: "READ"}),
                              (monitoring_experiment(cfg), {writer: "EDIT"})):  # fmt: skip
        for username, permission in permissions.items():
            grants.append(Grant(username=username, resource_type="experiment", resource=name,
                                resource_id=experiment_ids[name],
                                permission=permission))  # fmt: skip
    for username, permission in ((writer, "EDIT"), (reader, "READ")):
        grants.append(Grant(username=username, resource_type="registered_model",
                            resource=cfg.registered_model, resource_id=cfg.registered_model,
                            permission=permission))  # fmt: skip
    return grants


def ensure_users(cfg: TrackingConfig, writer: Credential, reader: Credential) -> UsersResult:
    """Create or update the writer and reader users on the tracking server at
    `cfg.tracking_uri` and grant them what they need, as the admin the environment names."""
    from mlflow.server import get_app_client

    if not cfg.tracking_uri.startswith(("http://", "https://")):
        raise UserError(f"{redact(cfg.tracking_uri)}: users live on a tracking server (http:// "
                        "or https://), not in a local store")  # fmt: skip
    if writer.username == reader.username:
        raise UserError("the writer and the reader must be two users")
    auth = get_app_client("basic-auth", tracking_uri=cfg.tracking_uri)
    client = MlflowClient(cfg.tracking_uri)
    try:
        created: list[str] = []
        reset: list[str] = []
        for user in (writer, reader):
            (created if _user(auth, user) else reset).append(user.username)
        ids = {name: _experiment_id(client, name)
               for name in (cfg.experiment, monitoring_experiment(cfg))}  # fmt: skip
        _registered_model(client, cfg.registered_model)
        grants = plan(cfg, writer.username, reader.username, ids)
        for grant in grants:
            _grant(auth, grant)
    except MlflowException as exc:
        raise UserError(f"MLflow at {redact(cfg.tracking_uri)}: {redact(exc.message)} (run "
                        "as its admin: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
                        ) from None  # fmt: skip
    return UsersResult(tracking_uri=redact(cfg.tracking_uri), created=created,
                       password_reset=reset, grants=grants)  # fmt: skip
