"""An autoscaling Ray cluster on one machine: Ray's own autoscaler (v2, as our RayCluster's
`autoscalerOptions.version`) with Ray's fake multi-node provider, which "launches" a worker
node as one more local raylet (its own object store, workers and agents) joining our head.

Its settings come from the manifests, through Ray's own KubeRay translation: what KubeRay's
autoscaler reads from `cluster_spec()` (plus the GPU group the gpu component appends) is
`kuberay_autoscaling()`, and the local config takes min/max/idle/upscaling from it:

- one worker type, "cpu", of 1 CPU (the box has 2 cores; the manifest's pods have 2);
- min_workers from the GPU group (minReplicas 0), the group our manifests scale from zero:
  the "cpu" group keeps 1 pod up (minReplicas 1), so a start with no worker node has no
  other source in the manifests; max_workers from the "cpu" group (maxReplicas 4);
- upscaling_speed as KubeRay derives it from `upscalingMode: Default`;
- the idle timeout `idleTimeoutSeconds` (120 s) unless `idle_timeout_s` shortens it (the
  test does, for CI time: `side_by_side()` shows both).

The head has no CPUs (`rayStartParams.num-cpus: "0"`), token auth is on, as in the manifests
(the autoscaler and the nodes it starts inherit the head's RAY_AUTH_MODE/RAY_AUTH_TOKEN).
Every process is stopped by PID: the autoscaler's monitor process (found by this cluster's
token in its environment and its command line), the fake nodes it started (its descendants:
raylets, agents, workers), then the head's group; anything re-parented meanwhile still
carries the token and `ray_head` sweeps it.

Ray's `ray.cluster_utils.AutoscalingCluster` is not used: it runs `ray stop --force` (every
Ray on the machine), and the installed wheel lacks the `example.yaml` that its config and the
`fake_multinode` provider type load their defaults from; the provider class is loaded as an
"external" one instead (the same class, without the missing defaults file).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.cluster import LocalCluster
from tests.support.procs import BIN, REPO, descendants, free_port, ray_head, with_env

NODE_TYPE = "cpu"  # the manifest's worker group name
NODE_CPUS = 1
# The fake provider tags its head with this type and id (autoscaler v2 matches them).
FAKE_HEAD_TYPE = "ray.head.default"
FAKE_HEAD_ID = "f" * 51 + "00000"
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
# Only for the head and its autoscaler (the fake provider refuses to run without
# RAY_FAKE_CLUSTER); the driver's env does not carry them.
HEAD_ONLY_ENV = {
    "RAY_FAKE_CLUSTER": "1",
    "RAY_enable_autoscaler_v2": "1",
    "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID,
    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
    # The autoscaler's loop (KubeRay's default: 5 s).
    "AUTOSCALER_UPDATE_INTERVAL_S": "1",
}
# A fake node's object store: small, the box is shared (the data is 3,000 rows).
NODE_OBJECT_STORE = 256 * 1024**2


def kuberay_autoscaling() -> dict[str, Any]:
    """The autoscaling config KubeRay's autoscaler derives from our RayCluster (Ray's own
    translation of `cluster_spec()` with the gpu component's group appended)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    from ray_app.core.constants import CLUSTER_NAME, NAMESPACE
    from ray_app.platform.manifests import cluster_spec, gpu_worker_group

    spec = cluster_spec()
    spec["workerGroupSpecs"].append(gpu_worker_group())
    cr = {"metadata": {"name": CLUSTER_NAME, "namespace": NAMESPACE}, "spec": spec}
    return dict(_derive_autoscaling_config_from_ray_cr(cr))


def local_autoscaling(gcs_address: str, idle_timeout_s: float | None = None) -> dict[str, Any]:
    """The fake provider's config, its numbers taken from `kuberay_autoscaling()` (see the
    module's docstring for which group each comes from)."""
    kube = kuberay_autoscaling()
    groups = kube["available_node_types"]
    head = groups[kube["head_node_type"]]
    minutes = kube["idle_timeout_minutes"] if idle_timeout_s is None else idle_timeout_s / 60
    worker = {
        "min_workers": groups["gpu"]["min_workers"],
        "max_workers": groups[NODE_TYPE]["max_workers"],
        "resources": {"CPU": NODE_CPUS, "object_store_memory": NODE_OBJECT_STORE},
        "node_config": {},
    }
    legacy = {k: v for k, v in kube.items() if k not in
              {"provider", "cluster_name", "head_node_type", "available_node_types",
               "max_workers", "idle_timeout_minutes", "upscaling_speed"}}  # fmt: skip
    return {
        **legacy,
        "cluster_name": kube["cluster_name"],
        "provider": {
            "type": "external",
            "module": PROVIDER,
            "gcs_address": gcs_address,
            "head_node_id": FAKE_HEAD_ID,
            "launch_multiple": True,  # v2 asks for n nodes in one call
            "use_node_id_as_ip": True,  # every node has this machine's IP
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": FAKE_HEAD_TYPE,
        "available_node_types": {
            FAKE_HEAD_TYPE: {
                "resources": {"CPU": head["resources"]["CPU"]},
                "min_workers": 0,
                "max_workers": 0,
                "node_config": {},
            },
            NODE_TYPE: worker,
        },
        "max_workers": worker["max_workers"],
        "idle_timeout_minutes": minutes,
        "upscaling_speed": kube["upscaling_speed"],
    }


def side_by_side(local: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(setting, our RayCluster manifests, this local cluster): the rows the docs show.
    `local`: the config from `local_autoscaling()`; `env`: the head's environment."""
    from ray.autoscaler._private.constants import AUTOSCALER_UPDATE_INTERVAL_S

    from ray_app.platform.manifests import cluster_spec

    spec = cluster_spec()
    options = spec["autoscalerOptions"]
    kube = kuberay_autoscaling()
    groups = kube["available_node_types"]
    worker = local["available_node_types"][NODE_TYPE]
    head = local["available_node_types"][FAKE_HEAD_TYPE]
    v2 = env.get("RAY_enable_autoscaler_v2") == "1"
    return [
        ("autoscaler", f"{options['version']} (autoscalerOptions.version)",
         f"{'v2' if v2 else 'v1'} (RAY_enable_autoscaler_v2)"),
        ("node provider", "KubeRay: a pod a node", "fake multi-node: local raylets"),
        ("head CPUs", f"{spec['headGroupSpec']['rayStartParams']['num-cpus']} (rayStartParams)",
         f"{head['resources']['CPU']} (ray start --num-cpus)"),
        ("worker group", "cpu; gpu (gpu component)", NODE_TYPE),
        ("min workers", f"cpu: {groups['cpu']['min_workers']}, gpu: {groups['gpu']['min_workers']}",
         f"{worker['min_workers']} (the gpu group's)"),
        ("max workers", f"cpu: {groups['cpu']['max_workers']}, gpu: {groups['gpu']['max_workers']}",
         f"{worker['max_workers']} (the cpu group's)"),
        ("CPUs a worker node", f"cpu: {groups['cpu']['resources']['CPU']}, "
         f"gpu: {groups['gpu']['resources']['CPU']}", f"{worker['resources']['CPU']}"),
        ("idle timeout", f"{options['idleTimeoutSeconds']} s (idleTimeoutSeconds)",
         f"{local['idle_timeout_minutes'] * 60:g} s (idle_timeout_minutes "
         f"{local['idle_timeout_minutes']:.3g})"),
        ("upscaling", f"{options['upscalingMode']} (upscaling_speed {kube['upscaling_speed']})",
         f"upscaling_speed {local['upscaling_speed']}"),
        ("autoscaler loop", f"{AUTOSCALER_UPDATE_INTERVAL_S} s (Ray's default)",
         f"{env.get('AUTOSCALER_UPDATE_INTERVAL_S', AUTOSCALER_UPDATE_INTERVAL_S)} s "
         "(AUTOSCALER_UPDATE_INTERVAL_S)"),
        ("auth", f"{spec['authOptions']['mode']} (authOptions.mode)",
         f"{env.get('RAY_AUTH_MODE', 'none')} (RAY_AUTH_MODE)"),
    ]  # fmt: skip


@dataclass
class AutoscalingCluster(LocalCluster):
    """A LocalCluster whose worker nodes the autoscaler adds and removes (not `add_node`)."""

    config: dict[str, Any] = field(default_factory=dict)
    monitor_pid: int = 0  # the autoscaler: the fake provider starts the nodes from it
    logs: Path = Path()  # the head's session logs (deleted with the cluster's temp dir)
    head_env: dict[str, str] = field(default_factory=dict)  # `env` + the autoscaler's switches
    head_node_id: str = FAKE_HEAD_ID

    def worker_nodes(self) -> list[dict]:
        """The nodes Ray counts alive, other than the head."""
        return [n for n in self.alive_nodes() if n["node_id"] != self.head_node_id]

    def node_processes(self) -> list[int]:
        """The fake nodes' processes (raylets, agents, workers): the autoscaler's descendants."""
        return descendants(self.monitor_pid)

    def node_raylets(self) -> list[int]:
        """The raylets still running of fake nodes (one a node)."""
        return [p for p in self.node_processes() if _cmdline(p)[0].endswith("/raylet")]

    def autoscaler_log(self) -> str:
        """The autoscaler's own log (monitor.log; a copy in `work` once the cluster stopped)."""
        for log in (self.logs / "monitor.log", self.work / "monitor.log"):
            with contextlib.suppress(OSError):
                return log.read_text(errors="replace")
        return ""

    def status(self) -> str:
        """`ray status`: the autoscaler's view (active, pending, recent failures)."""
        proc = subprocess.run([str(BIN / "ray"), "status", f"--address={self.address}"],
                              env=self.env, capture_output=True, text=True, timeout=60)  # fmt: skip
        return proc.stdout + proc.stderr

    def stop_nodes(self) -> None:
        """SIGKILL the autoscaler (it would launch nodes again) and every fake node's process,
        by PID; the head itself is ray_head's to stop."""
        tree = self.node_processes()
        for pid in [self.monitor_pid, *tree]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_running(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)


def _running(pid: int) -> bool:
    """Not gone and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _monitor_pid(token: str) -> int | None:
    """The head's autoscaler process (its monitor.py), found by this cluster's token."""
    for pid in with_env(f"RAY_AUTH_TOKEN={token}"):
        if any(a.endswith("monitor.py") and "autoscaler" in a for a in _cmdline(pid)):
            return pid
    return None


@contextlib.contextmanager
def autoscaling_cluster(work: Path, idle_timeout_s: float | None = None,
                        ) -> Iterator[AutoscalingCluster]:  # fmt: skip
    """A head (0 CPUs) whose autoscaler starts "cpu" nodes of 1 CPU on demand (none at first)
    and removes them `idle_timeout_s` after they fall idle (the manifests' 120 s if None)."""
    work.mkdir(parents=True, exist_ok=True)
    gcs = free_port()
    config = local_autoscaling(f"127.0.0.1:{gcs}", idle_timeout_s)
    config_path = work / "autoscaling.json"
    config_path.write_text(json.dumps(config, indent=1))
    args = [f"--autoscaling-config={config_path}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}"]  # fmt: skip
    env = {"PYTHONPATH": str(REPO), **HEAD_ONLY_ENV}
    head_cpus = int(config["available_node_types"][FAKE_HEAD_TYPE]["resources"]["CPU"])
    head = ray_head(work / "head.log", env, num_cpus=head_cpus, port=gcs, args=args)
    with head as (url, head_env):
        token = head_env["RAY_AUTH_TOKEN"]
        monitor = _monitor_pid(token)
        assert monitor is not None, (work / "head.log").read_text()[-3000:]
        driver_env = {k: v for k, v in head_env.items() if k not in HEAD_ONLY_ENV}
        logs = next(Path(a.split("=", 1)[1]) for a in _cmdline(monitor)
                    if a.startswith("--logs-dir="))  # fmt: skip
        cluster = AutoscalingCluster(url, f"127.0.0.1:{gcs}", driver_env, work, config=config,
                                     monitor_pid=monitor, logs=logs, head_env=head_env)  # fmt: skip
        try:
            yield cluster
        finally:
            cluster.stop_nodes()
            # The autoscaler's log outlives the head's temp dir (ray_head removes it).
            with contextlib.suppress(OSError):
                shutil.copy(logs / "monitor.log", work / "monitor.log")


_IDLE = re.compile(r"draining ray: idle for ([\d.]+) secs")
_TRANSITION = re.compile(r"^(\S+ \S+)\s.*?(?:New instance |Update instance \w+->)(\w+) "
                         r"\(id=([\w-]+), type=([\w.]+)")  # fmt: skip


def instance_timeline(log: str) -> dict[str, dict[str, float]]:
    """{instance id: {status: when it entered it (unix s)}} for the worker instances, from the
    v2 autoscaler's log ("New instance QUEUED (id=..., type=cpu, ...)", "Update instance
    QUEUED->REQUESTED (id=...", ... RAY_RUNNING, RAY_STOP_REQUESTED, ..., TERMINATED), and
    "IDLE": since when a node drained as idle had been idle ("draining ray: idle for 10.3
    secs > timeout=10.0 secs")."""
    timeline: dict[str, dict[str, float]] = {}
    for line in log.splitlines():
        found = _TRANSITION.match(line)
        if not found or found[4] != NODE_TYPE:
            continue
        when = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        timeline.setdefault(found[3], {}).setdefault(found[2], when)
        idle = _IDLE.search(line)
        if idle:  # drained as idle: "IDLE" is when its idle time began
            timeline[found[3]]["IDLE"] = when - float(idle[1])
    return timeline
