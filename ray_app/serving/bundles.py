"""Which bundle a server scores with: a local folder, or a registry version (an alias is
resolved once and the pinned version downloaded)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray_app.core.config import ServeConfig
from ray_app.core.errors import UserError
from ray_app.serving.config import model_uri_of
from ray_app.tracking.registry import pin, registry_bundle


@contextmanager
def fetch_bundle(args: ServeConfig, version: str | None = None) -> Iterator[tuple[Path, str]]:
    """Local bundle directory and its version ('local' for a bundle_dir), for the block: a
    downloaded one is removed when it ends, so load everything the server needs inside it.

    Without `version`, the configured URI (an alias is resolved once, then the pinned version
    is downloaded, so the files and the version agree even if the alias moves meanwhile).
    """
    if args.bundle_dir:
        yield Path(args.bundle_dir), "local"
        return
    if not args.model_uri:
        raise UserError("serve args need model_uri or bundle_dir")
    import mlflow

    if version is None:
        uri, version = pin(args.model_uri, args.tracking_uri)
    else:
        uri = model_uri_of(args, version)
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    with registry_bundle(uri) as bundle:
        yield bundle, version
