"""Every Ray pod of the gke overlays fits the *allocatable* share of the node type it selects,
as GKE computes it, with room left for the node's DaemonSets.

GKE's reservation ("Standard cluster architecture", section "Node allocatable resources",
cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes):
  CPU: 6 % of the first core, 1 % of the next (up to 2), 0.5 % of the next 2 (up to 4),
       0.25 % of every core above 4;
  memory: 25 % of the first 4 GiB, 20 % of the next 4 GiB (up to 8), 10 % of the next 8 GiB
       (up to 16), 6 % of the next 112 GiB (up to 128), 2 % above 128 GiB;
  plus the kubelet's hard eviction threshold of 100 MiB.
"""

from __future__ import annotations

import pytest

from ray_app.platform.kubecheck import render_overlay
from tests.support.samples import KUBERAY

# Capacity of the machine types the overlays name (vCPU, GiB): Compute Engine's tables.
MACHINES = {"n2-standard-8": (8, 32.0), "g2-standard-8": (8, 32.0)}
# Room for GKE's own DaemonSets on every node (kube-proxy, fluentbit, metrics agent, CSI and
# GPU drivers): an allowance, not a measurement.
DAEMONSETS_CPU, DAEMONSETS_GIB = 0.5, 1.0


def allocatable(cpus: float, gib: float) -> tuple[float, float]:
    """(CPU, GiB) a GKE Standard node leaves to pods."""
    cpu_reserved = 0.06 * min(cpus, 1) + 0.01 * max(0, min(cpus, 2) - 1)
    cpu_reserved += 0.005 * max(0, min(cpus, 4) - 2) + 0.0025 * max(0, cpus - 4)
    tiers = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02)]
    mem_reserved, left = 0.0, gib
    for size, share in tiers:
        part = min(left, size)
        mem_reserved += part * share
        left -= part
    return cpus - cpu_reserved, gib - mem_reserved - 100 / 1024


def test_the_formula_gives_gkes_published_figures():
    """GKE's own example: an 8-vCPU, 32 GiB node keeps 7.91 CPU and about 28.3 GiB."""
    cpu, gib = allocatable(8, 32)
    assert cpu == pytest.approx(7.91)
    assert gib == pytest.approx(32 - 3.56 - 100 / 1024)


def _quantity(text: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "m": 1 / 1000}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def _pod_templates(obj: dict) -> list[dict]:
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    return [g["template"]["spec"] for g in groups if "template" in g]


@pytest.mark.parametrize("overlay", ["gke", "gke-gpu"])
def test_every_ray_pod_fits_the_allocatable_share_of_its_node(overlay: str):
    checked = 0
    for obj in render_overlay(KUBERAY / "overlays" / overlay):
        if obj["kind"] not in ("RayCluster", "RayJob", "RayService"):
            continue
        for pod in _pod_templates(obj):
            machine = pod.get("nodeSelector", {}).get("node.kubernetes.io/instance-type")
            assert machine in MACHINES, f"{obj['metadata']['name']}: no node type selected"
            cpu, gib = allocatable(*MACHINES[machine])
            requests = pod["containers"][0]["resources"]["requests"]
            need_cpu = _quantity(str(requests["cpu"])) + DAEMONSETS_CPU
            need_gib = _quantity(str(requests["memory"])) + DAEMONSETS_GIB
            assert need_cpu <= cpu and need_gib <= gib, (obj["metadata"]["name"], requests)
            checked += 1
    assert checked >= 8
