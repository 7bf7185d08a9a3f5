"""MLflow as the Kubernetes layer runs it (kuberay/base/mlflow.yaml): a real `mlflow server
--app-name basic-auth` on a real PostgreSQL, its schemas migrated first by the commands of the
Deployment's initContainer, users made by `ray-app mlflow-users`; jobs as the writer, Serve
as the reader. One server (and one Ray head with the writer's credentials, as the Ray pods
get them from a Secret) for the module.

Claims: concurrent writers (4 Tune trials at once and a training run) lose nothing; the alias
moves by promotion exactly once per better model; writes without credentials are refused
(401), the reader's too (403); the reader loads the champion as a Serve replica does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ray_app.core.config import ServeConfig, TrackingConfig
from ray_app.ml.scoring import Scorer
from ray_app.serving.bundles import fetch_bundle
from ray_app.tracking import history as alias_history
from ray_app.tracking import registry
from ray_app.tracking.registry import RegistryUnreachable
from ray_app.tracking.store import input_example
from tests.support.procs import BIN, ENV, free_port, ray_head
from tests.support.services import mlflow_server, postgres_server

pytestmark = pytest.mark.slow

ADMIN = "admin"
WRITER, READER = "ray-app-writer", "ray-app-reader"  # `ray-app mlflow-users`' defaults


def _as(user: str, password: str) -> dict[str, str]:
    """MLflow clients' credentials (what the pods get from the Secrets)."""
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """PostgreSQL -> `mlflow db upgrade` + the auth schema's upgrade (the initContainer) ->
    `mlflow server --app-name basic-auth` (users in the same database) -> `ray-app mlflow-users`.
    {url, pw: {user: password}, log, users}."""
    work = tmp_path_factory.mktemp("mlflow-pg")
    pw = {name: secrets.token_hex(12) for name in (ADMIN, WRITER, READER)}
    with postgres_server() as db:
        for command in ([str(BIN / "mlflow"), "db", "upgrade", db],
                        [str(BIN / "python"), "-m", "mlflow.server.auth", "db", "upgrade",
                         "--url", db]):  # fmt: skip
            done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
        config = work / "basic_auth.ini"
        # As the Deployment's initContainer writes it: nothing unless granted; a checked
        # password is cached for 60 s (one hash per user and worker, not one per request: the
        # ~100 artifact uploads of a logged model took minutes on 2 loaded cores without it).
        config.write_text(
            f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = {db}\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
               "MLFLOW_AUTH_ADMIN_PASSWORD": pw[ADMIN],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # fmt: skip
        port = free_port()
        with mlflow_server(work, port, backend=db, extra=["--app-name", "basic-auth"],
                           env=env) as url:  # fmt: skip
            made = subprocess.run(
                [str(BIN / "ray-app"), "mlflow-users", "--tracking-uri", url, "--json"],
                env={**ENV, **_as(ADMIN, pw[ADMIN]),
                     "RAY_APP_MLFLOW_WRITER_PASSWORD": pw[WRITER],
                     "RAY_APP_MLFLOW_READER_PASSWORD": pw[READER]},
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr[-3000:]
            users = json.loads(made.stdout.strip().splitlines()[-1])
            yield {"url": url, "pw": pw, "log": work / f"mlflow-{port}.log", "users": users,
                   "work": work}  # fmt: skip


@pytest.fixture(scope="module")
def writer_head(server, tmp_path_factory) -> Iterator[dict]:
    """A Ray head whose processes (trials, Train workers) carry the writer's credentials, as
    the Ray pods' containers do (manifests.py: from the writer's Secret)."""
    work = tmp_path_factory.mktemp("writer-head")
    with ray_head(work / "head.log", _as(WRITER, server["pw"][WRITER])) as (_, env):
        yield {"address": env["TEST_RAY_GCS_ADDRESS"], "env": env, "work": work}


@contextlib.contextmanager
def acting_as(user: str, password: str | None, url: str) -> Iterator[MlflowClient]:
    """This process's MLflow clients as `user` (None: no credentials)."""
    mp = pytest.MonkeyPatch()
    for key, value in _as(user, password or "").items():
        if password is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)
    mlflow.set_tracking_uri(url)
    try:
        yield MlflowClient(url)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def jobs(server, writer_head) -> dict:
    """`ray-app tune` (4 trials at once; no retrain of the best: ~30 s more, and its version
    would come after the trials, one writer alone) and `ray-app train`, started at the same
    moment against the server, as the writer. {tune, train, out}."""
    common = ["--subsample", "3000", "--tracking-uri", server["url"], "--ray-address",
              writer_head["address"], "--workers", "1", "--json"]  # fmt: skip
    commands = {
        "tune": ["tune", "--num-samples", "4", "--max-concurrent", "4", "--max-epochs", "2",
                 "--name", "pg-search", "--no-retrain", *common],
        "train": ["train", "--epochs", "1", *common],
    }  # fmt: skip
    procs = {}
    for name, args in commands.items():
        cwd = writer_head["work"] / name
        cwd.mkdir()
        procs[name] = subprocess.Popen(
            [str(BIN / "ray-app"), *args, "--storage-path", str(cwd / "rr")],
            env=writer_head["env"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    out = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {out[name][1][-3000:]}"
    results = {name: json.loads(out[name][0].strip().splitlines()[-1]) for name in procs}
    return {**results, "out": out}


def test_users_are_made_with_least_privilege(server):
    grants = {(g["username"], g["resource_type"], g["resource"]): g["permission"]
              for g in server["users"]["grants"]}  # fmt: skip
    assert server["users"]["created"] == [WRITER, READER]
    assert grants == {
        (WRITER, "experiment", "adult-income"): "EDIT",
        (WRITER, "experiment", "adult-income-monitoring"): "EDIT",
        (WRITER, "registered_model", "adult-income"): "EDIT",
        (READER, "experiment", "adult-income"): "READ",
        (READER, "registered_model", "adult-income"): "READ",
    }
    # The migrations ran before the server: it found both schemas current, created nothing.
    assert "Creating initial MLflow database tables" not in server["log"].read_text()


def test_concurrent_trials_and_a_training_run_lose_nothing(server, jobs):
    tune, train = jobs["tune"], jobs["train"]
    assert tune["trials"] == 4 and tune["errored"] == 0
    assert tune["concurrent_trials"] == 4  # all four trials ran at once, beside the train job
    with acting_as(ADMIN, server["pw"][ADMIN], server["url"]) as client:
        experiment = client.get_experiment_by_name("adult-income")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parent = tune["mlflow_parent_run_id"]
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
        expected = {parent, *(r.info.run_id for r in trials), train["mlflow_run_id"]}
        # Every run is there, once, and finished; nothing else was logged.
        assert len(trials) == 4
        assert {r.info.run_id for r in runs} == expected and len(runs) == len(expected) == 6
        assert {r.info.status for r in runs} == {"FINISHED"}
        # Every epoch of every trial, one metric step each: as many as the search consumed.
        steps = [[m.step for m in client.get_metric_history(r.info.run_id, "val_log_loss")]
                 for r in trials]  # fmt: skip
        assert sum(len(s) for s in steps) == tune["epochs_consumed"] == 8
        assert all(s == sorted(set(s)) for s in steps)  # no step twice
        history = client.get_metric_history(train["mlflow_run_id"], "val_log_loss")
        assert len(history) == train["epochs_run"] == 1
        # Every registered version: the training run's (the search registers none here).
        versions = client.search_model_versions("name='adult-income'")
        assert [int(v.version) for v in versions] == [train["model_version"]] == [1]
    logs = "".join(err for _, err in jobs["out"].values()) + server["log"].read_text()
    assert "database is locked" not in logs


def test_alias_moves_by_promotion_exactly_once_per_better_model(server, jobs):
    cfg = TrackingConfig(tracking_uri=server["url"])
    promoted = [r for r in (jobs["train"],) if r["champion"]["promoted"]]
    with acting_as(WRITER, server["pw"][WRITER], server["url"]) as client:
        moves = alias_history.history(cfg)
        # The training run's promotion (the first champion): one recorded move.
        assert sorted(m.to_version for m in moves) == sorted(str(r["model_version"])
                                                             for r in promoted)  # fmt: skip
        assert {m.kind for m in moves} == {"promotion"} and len(promoted) == 1
        champion = alias_history.current(cfg)
        assert champion == moves[-1].to_version

        # Two more versions of the champion's files: a worse one, then a better one.
        source = client.get_model_version("adult-income", champion)
        scored: list[Path] = []

        def loss_of(bundle: Path) -> float:  # the champion, re-scored: a fixed figure
            scored.append(bundle)
            return 0.40

        def register() -> str:
            # MLflow 3: the source is the logged model (models:/m-<id>), named by its id too.
            logged = source.source.removeprefix("models:/")
            made = client.create_model_version("adult-income", source.source, source.run_id,
                                               model_id=logged)  # fmt: skip
            return str(made.version)

        worse = register()
        kept = registry.promote_if_better(cfg, worse, 0.45, loss_of, 100)
        assert not kept.promoted and alias_history.current(cfg) == champion
        assert len(alias_history.history(cfg)) == len(moves)

        better = register()
        won = registry.promote_if_better(cfg, better, 0.30, loss_of, 100)
        after = alias_history.history(cfg)
        assert won.promoted and alias_history.current(cfg) == better
        assert len(after) == len(moves) + 1
        assert (after[-1].from_version, after[-1].to_version) == (champion, better)
        # The champion was re-scored both times, through the proxied artifact store.
        assert len(scored) == 2


def _post(url: str, path: str, body: dict, auth: tuple[str, str] | None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(f"{url}{path}", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_writes_without_credentials_or_as_the_reader_are_refused(server, jobs):
    url, pw = server["url"], server["pw"]
    with acting_as(ADMIN, pw[ADMIN], url) as client:
        versions_before = len(client.search_model_versions("name='adult-income'"))
        champion = client.get_model_version_by_alias("adult-income", "champion")
    register = (
        "/api/2.0/mlflow/model-versions/create",
        {
            "name": "adult-income",
            "source": champion.source,
            "run_id": champion.run_id,
            "model_id": champion.source.removeprefix("models:/"),
        },
    )
    move = ("/api/2.0/mlflow/registered-models/alias",
            {"name": "adult-income", "alias": "champion", "version": "1"})  # fmt: skip
    for path, body in (register, move):
        assert _post(url, path, body, None) == 401, path
        assert _post(url, path, body, (READER, "not-the-password")) == 401, path
        assert _post(url, path, body, (READER, pw[READER])) == 403, path
    # The same requests are well formed: the writer's goes through (an alias of its own).
    probe = {**move[1], "alias": "probe"}
    assert _post(url, move[0], probe, (WRITER, pw[WRITER])) == 200
    with acting_as(ADMIN, pw[ADMIN], url) as client:
        client.delete_registered_model_alias("adult-income", "probe")
        assert len(client.search_model_versions("name='adult-income'")) == versions_before
        after = client.get_model_version_by_alias("adult-income", "champion")
        assert after.version == champion.version


def test_the_reader_loads_the_champion_as_serve_does(server, jobs):
    args = ServeConfig(tracking_uri=server["url"])  # model_uri: the champion alias
    with acting_as(READER, server["pw"][READER], server["url"]) as client:
        champion = client.get_model_version_by_alias("adult-income", "champion").version
        started = time.monotonic()
        with fetch_bundle(args) as (bundle, version):  # what the replicas' loader calls
            scorer = Scorer.from_bundle(bundle)
        assert version == str(champion)
        probability = scorer.predict_proba(input_example())
        assert 0.0 < float(probability[0]) < 1.0
        assert time.monotonic() - started < 60
    # Without credentials the registry does not answer it (the replica serves 'no-model').
    with (acting_as(READER, None, server["url"]), pytest.raises(RegistryUnreachable),
          fetch_bundle(args)):  # fmt: skip
        pass
