"""One image reference: what the release pushes is what every manifest, step and trial runs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ray_app.core.constants import IMAGE
from ray_app.core.errors import UserError
from ray_app.platform import manifests as kuberay
from ray_app.platform.release import container_images, release_assets
from tests.support.procs import REPO
from tests.support.samples import KUBERAY

CPU = "sha256:" + "a" * 64
GPU = "sha256:" + "b" * 64
REPOSITORY = "ghcr.io/acme/ray-app"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    release_assets(out, REPOSITORY, CPU, GPU, KUBERAY)
    return out


def test_every_rendered_image_is_a_pushed_digest(dist: Path):
    cpu, gpu = f"{REPOSITORY}@{CPU}", f"{REPOSITORY}@{GPU}"
    rendered = sorted(dist.glob("kuberay-overlays-*.yaml"))
    assert [p.name for p in rendered] == ["kuberay-overlays-gke-gpu.yaml",
                                          "kuberay-overlays-gke-tls.yaml",
                                          "kuberay-overlays-gke.yaml",
                                          "kuberay-overlays-local.yaml"]  # fmt: skip
    for path in rendered:
        docs = list(yaml.safe_load_all(path.read_text()))
        images = set(container_images(docs))
        # Besides ours: the local overlay's in-cluster PostgreSQL (MLflow's store) runs the
        # postgres image (components/mlflow-postgres); gke's database is a managed one.
        third_party = {"postgres:17.6"} if "local" in path.name else set()
        want = ({cpu, gpu} if "gpu" in path.name else {cpu}) | third_party
        assert images == want, (path.name, images)
        for doc in docs:  # the GPU build runs exactly in the GPU worker groups
            spec = doc.get("spec", {})
            cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
            for group in cluster.get("workerGroupSpecs", []):
                want = gpu if group["groupName"] == "gpu" else cpu
                assert set(container_images(group)) == {want}
    assert json.loads((dist / "images.json").read_text()) == {"image": cpu, "gpu_image": gpu}


def test_pipeline_steps_and_its_rayjobs_use_the_pushed_digest(dist: Path):
    spec = next(yaml.safe_load_all((dist / "adult_income_pipeline.yaml").read_text()))
    steps = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert steps == {f"{REPOSITORY}@{CPU}"}
    # The launcher's image when no template RayJob is deployed: the `launch` default.
    launch = spec["root"]["inputDefinitions"]["parameters"]["launch"]["defaultValue"]
    assert launch["image"] == f"{REPOSITORY}@{CPU}"


def test_katib_trials_use_the_pushed_digest(dist: Path):
    for path in sorted((dist / "katib").glob("*.yaml")):
        images = set(container_images(yaml.safe_load(path.read_text())))
        assert images == {f"{REPOSITORY}@{CPU}"}, path.name


def test_committed_references_match_the_version_the_release_tags():
    """The release pushes :<pyproject version> and :<version>-gpu (release.yml); everything
    committed references those tags."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    repository, tag = IMAGE.rsplit(":", 1)
    assert tag == version
    for overlay in ("local", "gke", "gke-gpu"):
        doc = yaml.safe_load((KUBERAY / "overlays" / overlay / "kustomization.yaml").read_text())
        for entry in doc.get("images", []):
            suffix = "-gpu" if entry["name"] == kuberay.GPU_IMAGE else ""
            assert entry["name"] in (kuberay.IMAGE, kuberay.GPU_IMAGE)
            assert entry["newTag"] == version + suffix, (overlay, entry)
            if overlay != "local":  # local: an image built and loaded into kind by hand
                assert entry["newName"] == repository
    # The pipeline spec, then its Kubernetes platform spec (kfp.kubernetes): two documents.
    compiled = next(yaml.safe_load_all((REPO / "pipelines" / "adult_income.yaml").read_text()))
    images = {e["container"]["image"] for e in compiled["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}
    for path in (REPO / "katib").glob("*.yaml"):
        assert set(container_images(yaml.safe_load(path.read_text()))) == {IMAGE}


def test_release_workflow_pushes_those_tags_and_ships_the_pinned_assets():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    steps = workflow["jobs"]["image"]["steps"]
    meta = next(s for s in steps if s.get("id") == "meta")
    assert 'version="${TAG#v}"' in meta["run"] and "pyproject.toml" in meta["run"]
    assert "${OWNER,,}" in meta["run"]  # GHCR wants a lower-case owner
    pushes = [s["with"]["tags"] for s in steps if "build-push-action" in s.get("uses", "")]
    base = "${{ steps.meta.outputs.image }}:${{ steps.meta.outputs.version }}"
    assert pushes == [base, base + "-gpu"]
    assets = " ".join(s.get("run", "") for s in workflow["jobs"]["assets"]["steps"])
    assert re.search(r"ray-app release-assets --image \"\$IMAGE\" --digest \"\$DIGEST\"", assets)
    assert '--gpu-digest "$GPU_DIGEST"' in assets
    deploy = " ".join(s.get("run", "") for s in workflow["jobs"]["deploy"]["steps"])
    assert "kuberay-overlays-gke.yaml" in deploy  # the pinned asset, not a re-render
    # The release's fields, then the Serve config as the deploy step's manager.
    release = deploy.index(f"--server-side --field-manager={kuberay.RELEASE_MANAGER}")
    serve = deploy.index(f"--server-side --field-manager={kuberay.DEPLOY_MANAGER}")
    assert release < serve and "rayservice-serve-config.yaml" in deploy[serve:]
    # Every object of the overlay once: the RayCluster (whose atomic workerGroupSpecs the
    # autoscaler updates) with --force-conflicts, the others without.
    applies = [a.split("-f ")[0] for a in deploy.split('kubectl" apply')[1:]]
    overlay = [a for a in applies if kuberay.RELEASE_MANAGER in a]
    assert len(overlay) == 2
    others, cluster = overlay
    assert "-l 'app.kubernetes.io/component!=cluster'" in others and "force" not in others
    assert "--force-conflicts -l app.kubernetes.io/component=cluster" in cluster
    assert kuberay.raycluster()["metadata"]["labels"]["app.kubernetes.io/component"] == "cluster"
    assert "sed " not in deploy


def test_release_assets_refuse_a_tag_or_a_bad_digest(tmp_path: Path):
    with pytest.raises(UserError, match="sha256"):
        release_assets(tmp_path, REPOSITORY, "latest", GPU, KUBERAY)
    with pytest.raises(UserError, match="lower-case"):
        release_assets(tmp_path, "ghcr.io/Acme/ray-app", CPU, GPU, KUBERAY)
    with pytest.raises(UserError, match="without tag"):
        release_assets(tmp_path, "ghcr.io/acme/ray-app:0.1.0", CPU, GPU, KUBERAY)


def test_the_release_signs_what_it_pushes_and_grants_nothing_unused():
    """id-token / attestations: write are granted to the image job only, and used there: each
    pushed digest (CPU, GPU) gets a signed provenance attestation pushed beside it, by an
    action pinned to a commit."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        signs = [s for s in job["steps"] if "attest-build-provenance" in s.get("uses", "")]
        if name != "image":
            assert "id-token" not in granted and "attestations" not in granted and not signs
            continue
        rights = {name: granted.get(name) for name in ("id-token", "attestations")}
        assert rights == dict.fromkeys(rights, "write")
        builds = [s["id"] for s in job["steps"] if "build-push-action" in s.get("uses", "")]
        assert [s["with"]["subject-digest"] for s in signs] == [
            f"${{{{ steps.{b}.outputs.digest }}}}" for b in builds
        ]
        for step in signs:
            assert re.fullmatch(r"actions/attest-build-provenance@[0-9a-f]{40}", step["uses"])
            assert step["with"]["subject-name"] == "${{ steps.meta.outputs.image }}"
            assert step["with"]["push-to-registry"] is True
