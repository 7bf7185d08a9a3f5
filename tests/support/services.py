"""Servers the tests start and stop: a real `mlflow server` (on a sqlite store, or on a real
PostgreSQL with MLflow's basic-auth app), a real PostgreSQL and a real Prometheus (Debian's
packages, installed by `.ci/system_tools.sh`)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from .procs import BIN, ENV, free_port, stop_group, wait_http


@contextlib.contextmanager
def mlflow_server(work: Path, port: int, backend: str | None = None,
                  extra: list[str] | None = None,
                  env: dict[str, str] | None = None) -> Iterator[str]:  # fmt: skip
    """`mlflow server` on 127.0.0.1:`port` (proxied artifacts under `work`); yields its URL.
    `env`: more environment (the basic-auth app's config and admin). Its own process group,
    stopped by PID."""
    store = backend or f"sqlite:///{work / 'mlflow-server.db'}"
    log = (work / f"mlflow-{port}.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store, "--artifacts-destination", str(work / "artifacts"),
         "--workers", "1", *(extra or [])],
        env={**ENV, **(env or {})}, cwd=work, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, 120,
                  lambda: (work / f"mlflow-{port}.log").read_text()[-3000:])  # fmt: skip
        yield url
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        log.close()


def _pg_binary(name: str) -> str:
    """Debian's postgresql package keeps initdb and postgres in /usr/lib/postgresql/<major>/bin
    (not on PATH); the newest major there, else PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    binary = found[-1] if found else shutil.which(name)
    assert binary, f"{name} is missing: run .ci/system_tools.sh (Debian package postgresql)"
    return binary


@contextlib.contextmanager
def postgres_server(database: str = "mlflow", user: str = "mlflow") -> Iterator[str]:
    """A real PostgreSQL on 127.0.0.1 (a free port, a fresh cluster in a temp folder) with one
    database owned by one password-authenticated role; yields its postgresql:// URI.

    initdb and postgres refuse to run as root (CI is root): there they run as `nobody`
    (setpriv, which execs, so the postgres PID is the one started). Its own process group,
    stopped by PID (SIGINT: PostgreSQL's fast shutdown); the folder is removed. Durability is
    off (fsync), as nothing here outlives the test."""
    import psycopg
    from psycopg import sql

    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    work = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # socket path < 107 bytes
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(work, nobody.pw_uid, nobody.pw_gid)
        as_user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups"]  # fmt: skip
    superuser = secrets.token_hex(16)
    password = secrets.token_hex(16)
    pwfile = work / "pwfile"
    pwfile.write_text(superuser + "\n")
    if as_user:
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(work)}
    data = work / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
         "--no-sync"],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = (work / "postgres.log").open("w")
    proc = subprocess.Popen(
        [*as_user, postgres, "-D", str(data), "-p", str(port), "-k", str(work),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    admin = f"postgresql://postgres:{superuser}@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(admin, connect_timeout=2)
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"postgres did not start:\n{(work / 'postgres.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(user)
                )
            )
        conn.close()
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        stop_group(proc, signal.SIGINT, 15)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def prometheus_server(work: Path, target: str, interval_s: float = 1.0) -> Iterator[str]:
    """A real Prometheus scraping `target` (host:port, path /metrics) every `interval_s`;
    yields its URL. Its own process group and storage folder, stopped by PID."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run .ci/system_tools.sh (Debian package prometheus)"
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{round(interval_s * 1000)}ms",
                   "evaluation_interval": f"{round(interval_s * 1000)}ms"},
        "scrape_configs": [{"job_name": "ray-app", "static_configs": [{"targets": [target]}]}],
    }))  # fmt: skip
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc, 60, lambda: (work / "prometheus.log").read_text()[-3000:])
        yield url
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        log.close()


def prom_query(url: str, expr: str) -> list[dict]:
    """An instant query through Prometheus's HTTP API: the result's series."""
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=30) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])
