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
    # leftover /tmp/ray/ray_current_cluster names, which may be dead); no dashboard.
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return "local"
