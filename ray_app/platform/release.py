"""Release assets with one image reference: what the release pushes is what everything runs.

    ray-app release-assets --image ghcr.io/<owner>/ray-app \\
        --digest sha256:<cpu> --gpu-digest sha256:<gpu> --out dist

`.github/workflows/release.yml` pushes `<image>:<version>` and `<image>:<version>-gpu` (version
= the tag without its `v`, which must equal pyproject's), then calls this with the pushed
digests. Every output references those digests and nothing else: the compiled pipeline's
steps and its `launch.image` default (the RayJobs the launcher builds without a template),
the Katib trials, and every rendered overlay (Ray pods, MLflow, the GPU group's GPU build).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ray_app.core.errors import UserError
from ray_app.platform import manifests

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Kustomize image names the overlays map (manifests.IMAGE for every Ray/MLflow container,
# manifests.GPU_IMAGE for the GPU worker group).
PLACEHOLDERS = {manifests.IMAGE: "digest", manifests.GPU_IMAGE: "gpu_digest"}


def _pin_kustomization(path: Path, repository: str, digests: dict[str, str]) -> None:
    """`kustomize edit set image NAME=repository@digest` for each placeholder it maps."""
    doc = yaml.safe_load(path.read_text())
    for entry in doc.get("images") or []:
        key = PLACEHOLDERS.get(entry.get("name", ""))
        if key:
            entry.pop("newTag", None)
            entry["newName"] = repository
            entry["digest"] = digests[key]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def release_assets(
    out: Path, repository: str, digest: str, gpu_digest: str, kuberay_dir: Path
) -> list[Path]:
    """Write the release's assets, every image pinned to the pushed digests."""
    from ray_app.platform.katib import write_experiments
    from ray_app.platform.kubecheck import overlays, render_overlay
    from ray_app.platform.pipeline.definition import compile_pipeline

    for name, value in (("--digest", digest), ("--gpu-digest", gpu_digest)):
        if not DIGEST.match(value):
            raise UserError(f"{name} {value!r}: expected sha256:<64 hex digits>")
    if repository != repository.lower() or "@" in repository or ":" in repository.split("/")[-1]:
        raise UserError(f"--image {repository!r}: a lower-case repository without tag or digest")
    image = f"{repository}@{digest}"
    out.mkdir(parents=True, exist_ok=True)
    written = [compile_pipeline(out / "adult_income_pipeline.yaml", image)]
    written += write_experiments(out / "katib", image=image)
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "kuberay"
        shutil.copytree(kuberay_dir, pinned)
        digests = {"digest": digest, "gpu_digest": gpu_digest}
        for kustomization in pinned.glob("overlays/*/kustomization.yaml"):
            _pin_kustomization(kustomization, repository, digests)
        for folder in overlays(pinned):
            target = out / f"kuberay-{folder.parent.name}-{folder.name}.yaml"
            docs = render_overlay(folder)
            target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            written.append(target)
    # The RayService's serveConfigV2, applied by the deploy job as the deploy step's field
    # manager (the overlays leave it out: docs/kubernetes.md, "Who owns which field").
    serve = out / "rayservice-serve-config.yaml"
    serve.write_text(yaml.safe_dump(manifests.serve_config_apply(manifests.serve_config_v2()),
                                    sort_keys=False))  # fmt: skip
    written.append(serve)
    images = {"image": image, "gpu_image": f"{repository}@{gpu_digest}"}
    summary = out / "images.json"
    summary.write_text(json.dumps(images, indent=1) + "\n")
    return [*written, summary]


def container_images(obj: Any) -> list[str]:
    """Every `image` of a container anywhere in a manifest (pods, templates, patches)."""
    found: list[str] = []
    if isinstance(obj, dict):
        if isinstance(obj.get("image"), str) and "name" in obj:
            found.append(obj["image"])
        for value in obj.values():
            found += container_images(value)
    elif isinstance(obj, list):
        for item in obj:
            found += container_images(item)
    return found
