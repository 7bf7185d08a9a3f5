"""Starting or joining Ray: the only place `ray.init` is called."""

from __future__ import annotations

from ray_app.config import RayConfig


def ensure_ray(cfg: RayConfig) -> str:
    """Join `cfg.address` (from --ray-address or RAY_ADDRESS), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return "already-initialized"
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=True)
        return cfg.address
    # Embedded default: a fresh local Ray sized to this machine ("local": never the cluster a
    # leftover /tmp/ray/ray_current_cluster names, which may be dead). With its dashboard (on
    # 127.0.0.1): without it Ray loads no State API, and Ray Train's PlacementGroupCleaner, which
    # asks the State API whether a Train controller is alive, never frees the worker group of a
    # controller that was killed (a Tune trial stopped by ASHA): the CPUs stayed reserved and the
    # next distributed trial waited for ever. See ray/_private/services.py (modules-to-load).
    ray.init(address="local", include_dashboard=True, log_to_driver=True)
    return "local"
