"""Starting or joining Ray: the only place `ray.init` is called."""

from __future__ import annotations

import contextlib
from typing import Any

from ray_app.core.config import RayConfig
from ray_app.core.errors import UserError
from ray_app.core.settings import Settings

FIX = ("start it (`ray start --head`), fix --ray-address / RAY_ADDRESS, or leave both unset "
       "to start a local Ray")  # fmt: skip


def _resolve(address: str) -> str:
    """`auto`: the head `ray start` last started here, as Ray's cluster file names it (dead or
    alive: `_check_reachable` says which). Never Ray's own fallback for `auto`, which joins any
    GCS process it finds on the machine: with one other Ray running (another user's, a test's)
    that one would be joined instead of the head the user meant."""
    if address != "auto":
        return address
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    found = read_ray_address()
    if not found:
        raise UserError(f"--ray-address auto: no Ray cluster file ({get_ray_address_file(None)}"
                        f"; no head started with `ray start` here): {FIX}")  # fmt: skip
    return str(found)


def _check_reachable(address: str, given: str | None = None) -> None:
    """An explicit address with nothing behind it fails here, in seconds and in one line;
    `ray.init` would retry for minutes (a dead head named by a stale cluster file for `auto`).
    `given`: what the user wrote, when `address` was resolved from it."""
    given = given or address
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    if address.startswith("ray://"):
        target: str | None = address.removeprefix("ray://")
    else:
        try:
            target = canonicalize_bootstrap_address(address)
        except Exception as exc:
            raise UserError(
                f"no Ray cluster for --ray-address {address!r} ({exc}): {FIX}"
            ) from None
    if target is None:
        return  # "local"
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(f"cannot reach a Ray cluster at {target} (--ray-address / RAY_ADDRESS "
                        f"{given!r}): {reason}; {FIX}") from None  # fmt: skip
    if not address.startswith("ray://"):
        _check_token(target)


def _check_token(target: str) -> None:
    """A cluster with token auth refuses an RPC without its token at once; `ray.init` would
    retry for ~24 s before failing. One GCS call with the token `ray.init` would send (Ray's
    own loader: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, none when
    RAY_AUTH_MODE=disabled; ray/_private/worker.py, maybe_enable_token_auth_if_token_available)
    tells in milliseconds. Any other answer is left to `ray.init`."""
    import grpc
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    loader = AuthenticationTokenLoader.instance()
    headers: dict[str, str] = {}
    disabled = (Settings().ray_auth_mode or "").lower() == "disabled"
    if not disabled and loader.has_token(ignore_auth_mode=True):
        headers = loader.get_token_for_http_header(ignore_auth_mode=True)
    with grpc.insecure_channel(target) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(),  # type: ignore[attr-defined]
                              metadata=list(headers.items()), timeout=5)  # fmt: skip
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                which = "a different one" if headers else "none"
                raise UserError(
                    f"the Ray cluster at {target} wants an auth token and this command has "
                    f"{which}: set RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token"
                ) from None


def ensure_ray(cfg: RayConfig) -> str:
    """Join `cfg.address` (from --ray-address or RAY_ADDRESS), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return "already-initialized"
    if cfg.address:
        address = _resolve(cfg.address)
        _check_reachable(address, cfg.address)
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # token auth: Ray retries ~24 s, then a ConnectionError
            if "token" in str(exc).lower() or "auth" in type(exc).__name__.lower():
                raise UserError(
                    f"the Ray cluster at {cfg.address} wants an auth token this command does "
                    "not have: set RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token"
                ) from None
            raise
        return cfg.address
    # Embedded default: a fresh local Ray sized to this machine ("local": never the cluster a
    # leftover /tmp/ray/ray_current_cluster names, which may be dead). With its dashboard (on
    # 127.0.0.1): without it Ray loads no State API, and Ray Train's PlacementGroupCleaner, which
    # asks the State API whether a Train controller is alive, never frees the worker group of a
    # controller that was killed (a Tune trial stopped by ASHA): the CPUs stayed reserved and the
    # next distributed trial waited for ever. See ray/_private/services.py (modules-to-load).
    _start_local(ray)
    return "local"


def ensure_local_token(settings: Settings | None = None) -> None:
    """The token a Ray started here (`ray.init` of a new local Ray, `ray-app serve`'s `serve
    run`) authenticates with, readable by this user only.

    Ray 2.60 starts a new local Ray with token auth unless RAY_AUTH_MODE says otherwise
    (ray/_private/worker.py: enable_token_auth_by_default), but writes a missing token with the
    process umask (authentication_token_setup.py, generate_and_save_token: ~/.ray/auth_token,
    0644 under the usual 022), so any local user who can list $HOME could read it and submit
    jobs to 127.0.0.1:8265 as you. So the token is made here first, 0600 (and a readable one
    made earlier is narrowed to 0600); Ray then finds it and uses it. RAY_AUTH_MODE itself is
    left to Ray: set in this process after Ray's config was read, it would not take effect
    (Ray refreshes its config only when it sets the mode itself). Nothing happens with
    RAY_AUTH_MODE=disabled or a RAY_AUTH_TOKEN in the environment."""
    import os
    import secrets

    settings = settings or Settings()
    if (
        settings.ray_auth_mode or "token"
    ).lower() != "token" or settings.ray_auth_token is not None:
        return
    path = settings.ray_auth_token_path.expanduser()
    if settings.auth_token() is None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))  # what Ray's own generator makes: 256 bits
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _start_local(ray: Any) -> None:
    """`ray.init` of a fresh local Ray whose processes all know its dashboard's address.

    The State API calls Ray makes inside workers (Train V2's PlacementGroupCleaner) look for
    "the" Ray of the machine when RAY_ADDRESS is unset; with a second Ray running (a `ray
    start` head, another command's local Ray) they fail ("Found multiple active Ray
    instances") and a stopped trial's worker group is never freed. So the dashboard gets a
    port chosen here, and RAY_ADDRESS names it while Ray starts: the raylet inherits it and
    passes it to every worker. This process's own environment is left as it was."""
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    ensure_local_token()
    os.environ.update(RAY_ADDRESS=url)
    try:
        context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                           dashboard_port=port, log_to_driver=True)  # fmt: skip
    finally:
        os.environ.pop("RAY_ADDRESS", None)
    if context.dashboard_url and not context.dashboard_url.endswith(f":{port}"):
        import logging

        logging.getLogger(__name__).warning(
            "Ray's dashboard took %s, not the port %s its workers were told", context.dashboard_url,
            port)  # fmt: skip


def check_shared_storage(storage_path: str | Any, option: str = "--storage-path",
                         why: str = "Checkpoints are written and read on every node",
                         timeout_s: float = 60.0) -> None:  # fmt: skip
    """Refuse, before any work starts, a local `storage_path` that some Ray node cannot see.

    Ray Train and Tune write checkpoints from the workers' nodes and read them back on the
    driver's and on whichever node a restarted worker lands; Ray Data writes `ray-app
    predict`'s output from the nodes of its tasks. A folder on one machine's own disk fails at
    the first checkpoint, at the first restart, or (output) leaves its files scattered over
    the nodes' disks. So the driver writes a marker there and a 0-CPU task on every node that
    can run work (CPUs or GPUs) looks for it. A URI (s3://, gs://, ...) is left to its
    filesystem; one node (a laptop) is not asked. `option` and `why` word the error.
    """
    import os
    import secrets
    from pathlib import Path

    if not _several_nodes(storage_path):
        return
    folder = Path(storage_path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    marker = folder / f".ray-app-reach-{token}"
    marker.write_text(token)
    try:
        blind = _nodes_not_seeing(str(marker), token, timeout_s)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(marker)
    if blind:
        raise UserError(
            f"{option} {folder} is not shared: Ray node(s) {', '.join(blind)} do not see "
            f"it (a folder on this machine's own disk). {why}: give a folder mounted at the "
            "same path on every node (NFS, the RayCluster's shared volume) or a URI "
            "(s3://bucket/path, gs://bucket/path)"
        )


def check_shared_input(path: str, option: str = "--data", timeout_s: float = 60.0) -> None:
    """Refuse, before any work starts, a local input file that some Ray node cannot read (its
    read tasks run on every node): each node with CPUs or GPUs must see it with the size the
    driver sees. Nothing is written next to the user's data."""
    import os

    if not _several_nodes(path):
        return
    blind = _nodes_not_seeing(path, os.path.getsize(path), timeout_s)
    if blind:
        raise UserError(
            f"{option} {path} is not shared: Ray node(s) {', '.join(blind)} do not see it (a "
            "file on this machine's own disk). The files are read on the worker nodes: give "
            "a folder mounted at the same path on every node (NFS, the RayCluster's shared "
            "volume) or a URI (s3://bucket/path, gs://bucket/path)"
        )


def _several_nodes(path: str | Any) -> bool:
    """Whether `path` is local and Ray work may run on a node other than this one."""
    import ray

    if "://" in str(path) or not ray.is_initialized():
        return False
    here = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] != here for n in _work_nodes())


def _work_nodes() -> list[dict[str, Any]]:
    """The live Ray nodes that can run work (CPUs or GPUs; a head with none is not one)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and (
        n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]  # fmt: skip


def _nodes_not_seeing(path: str, expected: str | int, timeout_s: float) -> list[str]:
    """'<node id> (<address>)' of each work node on which `path` does not hold `expected`
    (its text, or its size in bytes), asked by a 0-CPU task pinned to the node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def sees(path: str, expected: str | int) -> bool:
        import os

        try:
            if isinstance(expected, int):
                return os.path.getsize(path) == expected
            with open(path) as handle:
                return handle.read() == expected
        except OSError:
            return False

    nodes = _work_nodes()
    refs = {n["NodeID"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(path, expected) for n in nodes}  # fmt: skip
    blind = []
    for node in nodes:
        try:
            ok = ray.get(refs[node["NodeID"]], timeout=timeout_s)
        except Exception:  # the node died meanwhile, or never ran the probe
            ok = False
        if not ok:
            blind.append(f"{node['NodeID'][:12]} ({node['NodeManagerAddress']})")
    return blind
