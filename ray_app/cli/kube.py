"""`ray-app kube-manifests | kube-check | release-assets`: the KubeRay objects, generated,
checked as the API server and the operator would, and pinned for a release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.cli.serve import SERVE_CONFIG
from ray_app.core.settings import Settings

app = typer.Typer()
DEFAULT_CRDS = Path("../shared/kuberay/crds")


@app.command("kube-manifests")
def kube_manifests(
    base_dir: Annotated[Path, typer.Option(help="Kustomize base folder")] = Path("kuberay/base"),
    serve_config_out: Annotated[Path, typer.Option(help="Serve config")] = SERVE_CONFIG,
) -> None:
    """Write the generated KubeRay objects (RayCluster, RayJobs, RayService) and Serve config."""
    from ray_app.platform.manifests import write_manifests

    for path in write_manifests(base_dir, serve_config_out):
        typer.echo(str(path))


@app.command("kube-check")
def kube_check(
    kuberay_dir: Annotated[Path, typer.Option(help="folder with base/ and overlays/")] = Path(
        "kuberay"
    ),
    crds: Annotated[
        Path | None,
        typer.Option(help=f"KubeRay v1.7 CRD folder (env RAY_APP_KUBERAY_CRDS) [{DEFAULT_CRDS}]"),
    ] = None,
) -> None:
    """Render every overlay and validate each object: CRD schemas, KubeRay's admission rules,
    core schemas; and every RayJob the pipeline's launcher can build from the overlay."""
    from ray_app.platform.kubecheck import check_all

    folder = crds or Settings().kuberay_crds or DEFAULT_CRDS
    report = check_all(kuberay_dir, folder)
    for line in report.lines:
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


@app.command("release-assets")
def release_assets_cmd(
    image: Annotated[str, typer.Option(help="pushed repository, e.g. ghcr.io/owner/ray-app")],
    digest: Annotated[str, typer.Option(help="digest of the pushed CPU image (sha256:...)")],
    gpu_digest: Annotated[str, typer.Option(help="digest of the pushed GPU image")],
    out: Annotated[Path, typer.Option(help="folder for the assets")] = Path("dist"),
    kuberay_dir: Annotated[Path, typer.Option(help="folder with overlays/")] = Path("kuberay"),
) -> None:
    """Pipeline, Katib Experiments and rendered overlays, every image pinned to the digests."""
    from ray_app.platform.release import release_assets

    for path in release_assets(out, image, digest, gpu_digest, kuberay_dir):
        typer.echo(str(path))
