"""KubeRay manifests, Kustomize overlays, the compiled pipeline and the Dockerfile.

No API server or Docker engine here: overlays are rendered with the real kubectl v1.36
(kustomize v5.8), ray.io objects validated against the KubeRay v1.7 CRDs, core objects with
kubernetes-validate, the Dockerfile with hadolint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_app.core.constants import CLUSTER_PREDICTION_LOG, CLUSTER_TRACKING_URI, SERVE_PORT
from ray_app.platform import manifests as kuberay
from ray_app.platform.kubecheck import (
    check_overlay,
    load_crd_schemas,
    overlays,
    render_overlay,
    validate_ray_object,
)
from tests.support.procs import REPO
from tests.support.samples import CRDS, KUBERAY

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def schemas():
    return load_crd_schemas(CRDS)


@pytest.fixture(scope="module")
def local_objects() -> list[dict]:
    return render_overlay(KUBERAY / "overlays" / "local")


def test_generated_files_are_up_to_date(tmp_path: Path):
    written = kuberay.write_manifests(tmp_path / "base", tmp_path / "serve-config.yaml")
    assert len(written) == 8
    for path in written:
        committed = KUBERAY / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `ray-app kube-manifests`"
        )


def test_the_deploy_step_applies_the_serve_run_config_and_the_release_leaves_it_out():
    """One document, but for the address: 127.0.0.1 for `serve run` on a laptop, all
    interfaces in the RayService's pods. The release's RayService has no serveConfigV2 (the
    deploy step's field, docs/kubernetes.md); what the deploy step and the release job's
    second apply send is the serve run config."""
    service = yaml.safe_load((KUBERAY / "base" / "rayservice.yaml").read_text())
    assert "serveConfigV2" not in service["spec"]
    serve_run = yaml.safe_load((KUBERAY / "serve-config.yaml").read_text())
    assert serve_run["http_options"]["host"] == "127.0.0.1"
    body = kuberay.serve_config_apply(kuberay.serve_config_v2())
    assert set(body["spec"]) == {"serveConfigV2"}
    embedded = yaml.safe_load(body["spec"]["serveConfigV2"])
    assert embedded["http_options"]["host"] == "0.0.0.0"
    embedded["http_options"]["host"] = "127.0.0.1"
    # ...and anonymous /predict, which only the loopback document allows (test_anonymous.py).
    app = embedded["applications"][0]["args"]
    assert app["allow_anonymous"] is False
    app["allow_anonymous"] = True
    assert embedded == serve_run


@pytest.mark.parametrize("overlay", ["local", "gke", "gke-gpu", "gke-tls"])
def test_overlay_renders_and_every_object_validates(overlay: str, schemas):
    report = check_overlay(KUBERAY / "overlays" / overlay, schemas)
    assert report.errors == []
    kinds = {name.split("/")[0] for name in report.objects}
    assert {"RayCluster", "RayJob", "RayService", "Role", "RoleBinding", "ServiceAccount",
            "PersistentVolumeClaim", "Deployment", "Service", "Namespace"} <= kinds  # fmt: skip


def test_every_overlay_is_checked():
    assert [f"{p.parent.name}/{p.name}" for p in overlays(KUBERAY)] == [
        "overlays/gke", "overlays/gke-gpu", "overlays/gke-tls", "overlays/local",
        "kfp/multi-user", "kfp/single-user",
    ]  # fmt: skip


def test_the_tls_overlay_puts_a_certificate_in_front_of_predict_only():
    """components/tls: an Ingress in ray-app terminating TLS for its one host with a
    cert-manager certificate, routing /predict and /feedback (nothing else: /health, /metrics,
    /docs stay off the public side) to the Serve Service KubeRay names; the gke overlay has
    the same objects but the Ingress."""
    tls = render_overlay(KUBERAY / "overlays" / "gke-tls")
    gke = render_overlay(KUBERAY / "overlays" / "gke")
    ingresses = [o for o in tls if o["kind"] == "Ingress"]
    assert [o for o in tls if o["kind"] != "Ingress"] == gke and len(ingresses) == 1
    ingress = ingresses[0]
    assert ingress["metadata"]["namespace"] == "ray-app"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    (rule,) = ingress["spec"]["rules"]
    assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": "adult-income-tls"}]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/predict", "Exact"),
                                                           ("/feedback", "Exact")]  # fmt: skip
    service = next(o for o in tls if o["kind"] == "RayService")["metadata"]["name"]
    for path in paths:
        assert path["backend"]["service"] == {"name": f"{service}-serve-svc",
                                              "port": {"number": SERVE_PORT}}  # fmt: skip


def test_validation_bites_on_a_misspelt_field_and_a_bad_enum(schemas):
    cluster = kuberay.raycluster()
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    cluster["spec"]["autoscalerOptions"]["version"] = "v3"
    errors = " ".join(validate_ray_object(cluster, schemas))
    assert "'maxReplica' was unexpected" in errors
    assert "'v3' is not one of" in errors


def test_kube_check_cli_fails_on_a_broken_overlay(tmp_path: Path):
    shutil.copytree(KUBERAY, tmp_path / "kuberay")
    patch = tmp_path / "kuberay" / "overlays" / "local" / "size-raycluster.yaml"
    patch.write_text(patch.read_text().replace("maxReplicas", "maxReplicaz"))
    ok = subprocess.run([str(BIN / "ray-app"), "kube-check", "--kuberay-dir", str(KUBERAY),
                         "--crds", str(CRDS)], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([str(BIN / "ray-app"), "kube-check", "--kuberay-dir",
                          str(tmp_path / "kuberay"), "--crds", str(CRDS)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0
    assert "FAIL" in bad.stdout and "local" in bad.stdout


POSTGRES_IMAGE = "postgres:17.6"


def _containers(obj) -> list[dict]:
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers"):
                found += value
            else:
                found += _containers(value)
    elif isinstance(obj, list):
        for item in obj:
            found += _containers(item)
    return found


def test_every_container_is_non_root_and_bounded(local_objects):
    containers = _containers(local_objects)
    assert len(containers) >= 9
    for container in containers:
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert security["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"]["memory"]
        # The overlay's image, not the placeholder; the in-cluster MLflow database runs
        # PostgreSQL's own (components/mlflow-postgres).
        want = POSTGRES_IMAGE if container["name"] == "postgres" else "ray-app:0.1.0"
        assert container["image"] == want


def test_cluster_shape(local_objects):
    by_kind = {o["kind"]: o for o in local_objects}
    spec = by_kind["RayCluster"]["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["serviceType"] == "ClusterIP"  # dashboard stays inside the cluster
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    workers = spec["workerGroupSpecs"][0]
    assert 1 <= workers["minReplicas"] <= workers["maxReplicas"]
    service = by_kind["RayService"]["spec"]
    assert service["upgradeStrategy"]["type"] == "NewCluster"
    probe = service["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "readinessProbe"
    ]
    assert probe["httpGet"]["path"] == "/health"


def test_rayjobs_run_the_cli_on_shared_storage(local_objects):
    jobs = {o["metadata"]["name"]: o for o in local_objects if o["kind"] == "RayJob"}
    assert set(jobs) == {"ray-app-train", "ray-app-tune"}
    for kind, job in (("train", jobs["ray-app-train"]), ("tune", jobs["ray-app-tune"])):
        spec = job["spec"]
        assert spec["entrypoint"].startswith(f"ray-app {kind} ")
        env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
        assert env["RAY_APP_STORAGE_PATH"].startswith(kuberay.SHARED_MOUNT)
        assert spec["shutdownAfterJobFinishes"] is True
        # The generator's figures (a deadline per kind: a search runs longer than a training),
        # not just "set": a tune deadline cut to the training's would kill a search mid-way.
        assert spec["activeDeadlineSeconds"] == kuberay.DEADLINES[kind]
        assert (spec["ttlSecondsAfterFinished"], spec["backoffLimit"]) == (600, 1)
        pod = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == kuberay.SHARED_PVC
    pvc = next(o for o in local_objects if o["kind"] == "PersistentVolumeClaim"
               and o["metadata"]["name"] == kuberay.SHARED_PVC)  # fmt: skip
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # local: one node
    gke = render_overlay(KUBERAY / "overlays" / "gke")
    gke_pvc = next(o for o in gke if o["kind"] == "PersistentVolumeClaim"
                   and o["metadata"]["name"] == kuberay.SHARED_PVC)  # fmt: skip
    assert gke_pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def _env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_serving_pods_and_the_monitor_share_one_prediction_log(local_objects):
    """The RayService's ingress writes where the monitor CronJob reads: one variable, the
    same value, on a volume both mount (the CronJob's read-write: retention deletes)."""
    service = next(o for o in local_objects if o["kind"] == "RayService")
    cron = next(o for o in local_objects if o["kind"] == "CronJob")
    writers = _containers(service)
    reader = _containers(cron)[0]
    values = {_env_of(c)["RAY_APP_PREDICTION_LOG"] for c in [*writers, reader]}
    assert values == {CLUSTER_PREDICTION_LOG}
    assert CLUSTER_PREDICTION_LOG.startswith(kuberay.SHARED_MOUNT + "/")
    assert "--data=$(RAY_APP_PREDICTION_LOG)" in reader["command"]
    mount = next(m for m in reader["volumeMounts"] if m["mountPath"] == kuberay.SHARED_MOUNT)
    assert not mount.get("readOnly")
    for container in writers:
        assert any(m["mountPath"] == kuberay.SHARED_MOUNT for m in container["volumeMounts"])


def test_pipeline_rbac_is_least_privilege(local_objects):
    role = next(o for o in local_objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "ray-app"
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    assert all("*" not in item for item in allowed)
    assert not any(r == "secrets" for _, r, _ in allowed)
    assert ("ray.io", "rayjobs", "create") in allowed
    assert ("ray.io", "rayservices", "patch") in allowed
    assert ("ray.io", "rayservices", "delete") not in allowed
    assert ("", "pods/log", "get") in allowed
    assert not any(o["kind"].startswith("Cluster") for o in local_objects)


def test_every_pipeline_step_runs_non_root_with_its_own_mlflow_user():
    """The compiled pipeline's Kubernetes platform spec (kfp.kubernetes): every step pod as
    the image's non-root user (a `restricted` profile namespace admits it); train, tune and
    evaluate log in to MLflow as the writer, deploy as the reader, the others not at all.
    Regressions caught: a step left without securityContext (the profile refuses its pod), the
    deploy step given the writer's Secret, a Secret made required (no auth server: no run)."""
    spec = list(yaml.safe_load_all((REPO / "pipelines" / "adult_income.yaml").read_text()))
    executors = spec[0]["deploymentSpec"]["executors"]
    platform = spec[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(executors)  # every step, none forgotten
    users = {}
    for name, config in platform.items():
        context = config["securityContext"]
        assert context["runAsNonRoot"] is True and int(context["runAsUser"]) == 1000, name
        assert int(context["runAsGroup"]) == 100, name
        secrets = config.get("secretAsEnv", [])
        assert all(s["optional"] is True for s in secrets), name
        users[name] = {s["secretName"] for s in secrets}
        for s in secrets:
            assert {m["envVar"] for m in s["keyToEnv"]} == {
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}  # fmt: skip
    # The Secret names docs/mlflow.md tells operators to create, written out here.
    writer, reader = {"ray-app-mlflow-writer"}, {"ray-app-mlflow-reader"}
    assert users == {"exec-preprocess-op": set(), "exec-keep-op": set(), "exec-train-op": writer,
                     "exec-tune-op": writer, "exec-evaluate-op": writer,
                     "exec-deploy-op": reader}  # fmt: skip


def test_compiled_pipeline_is_up_to_date(tmp_path: Path):
    from ray_app.platform.pipeline.definition import compile_pipeline

    fresh = compile_pipeline(tmp_path / "p.yaml")
    committed = REPO / "pipelines" / "adult_income.yaml"
    # Compared as data: KFP's header comment lists dict defaults in no fixed order.
    read = lambda path: list(yaml.safe_load_all(path.read_text()))  # noqa: E731
    assert read(committed) == read(fresh), (
        "pipelines/adult_income.yaml is stale: run `ray-app pipeline compile`"
    )
    spec = read(committed)[0]
    tasks = spec["root"]["dag"]["tasks"]
    assert {"preprocess-op", "train-op", "evaluate-op"} <= set(tasks)
    assert "condition-branches-1" in tasks  # tune / no-tune (dsl.If/Else + OneOf)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/ray-app/ray-app:0.1.0"}


def test_hadolint_passes_on_the_dockerfile():
    proc = subprocess.run([str(BIN / "hadolint"), str(REPO / "docker" / "Dockerfile")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_bites_on_a_root_unpinned_image(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nUSER root\nRUN pip install torch\n")
    proc = subprocess.run([str(BIN / "hadolint"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest
    assert "DL3002" in proc.stdout  # last USER is root
    assert "DL3013" in proc.stdout  # unpinned pip install


def _rules(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip


def test_kfp_single_user_account_gets_the_runtime_and_the_launcher_roles(local_objects):
    """Single-user KFP runs steps in `kubeflow`: the account there can read what KFP 2.17's
    v2 driver/launcher and Argo's executor read, and is bound to the launcher's Role."""
    objs = render_overlay(KUBERAY / "kfp" / "single-user")
    by = {(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]): o for o in objs}
    assert ("ServiceAccount", "ray-app-pipeline", "kubeflow") in by
    runtime = _rules(by[("Role", "ray-app-pipeline-runtime", "kubeflow")])
    for need in [("", "configmaps", "get"), ("", "secrets", "get"), ("", "pods", "get"),
                 ("argoproj.io", "workflowtaskresults", "create"),
                 ("argoproj.io", "workflowtaskresults", "patch")]:  # fmt: skip
        assert need in runtime, need
    role = by[("Role", "ray-app-pipeline-runtime", "kubeflow")]
    secrets = next(r for r in role["rules"] if "secrets" in r["resources"])
    assert secrets["resourceNames"] == ["mlpipeline-minio-artifact"]  # that secret only
    binding = by[("RoleBinding", "ray-app-pipeline-kubeflow", "ray-app")]
    launcher_role = next(o for o in local_objects if o["kind"] == "Role")
    assert binding["roleRef"]["name"] == launcher_role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ray-app-pipeline", "namespace": "kubeflow"}
    ]


def test_kfp_multi_user_profile_account_is_bound_in_ray_app():
    (binding,) = render_overlay(KUBERAY / "kfp" / "multi-user")
    assert binding["metadata"]["namespace"] == "ray-app"
    assert binding["roleRef"]["name"] == "ray-app-pipeline"
    assert binding["subjects"][0]["name"] == "default-editor"


def test_mlflow_is_reachable_from_kfp_namespaces_by_the_name_everyone_uses(local_objects):
    host = CLUSTER_TRACKING_URI.removeprefix("http://")
    deployment = next(o for o in local_objects if o["kind"] == "Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    allowed = next(a for a in command if a.startswith("--allowed-hosts=")).split("=", 1)[1]
    assert host in allowed.split(",") and host.split(":")[0] in allowed.split(",")
    policy = next(o for o in local_objects if o["kind"] == "NetworkPolicy"
                  and o["metadata"]["name"] == "mlflow")  # fmt: skip
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}} in sources
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "monitor"}}} in sources
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kubeflow"}}} in sources  # fmt: skip
    assert {"namespaceSelector": {"matchLabels": {"ray-app.io/mlflow-client": "true"}}} in sources
    # Every pod and job that names MLflow names it this way.
    text = yaml.safe_dump_all(local_objects)
    assert "http://mlflow:5000" not in text and CLUSTER_TRACKING_URI in text


def test_each_serve_config_document_is_its_own():
    """A caller editing one document (replica counts, as the multi-node test does) must not
    change the next: a shallow copy once leaked min_replicas 2 into the committed config."""
    from ray_app.serving.config import serve_config

    first = serve_config()
    for deployment in first["applications"][0]["deployments"]:
        for value in deployment.values():
            if isinstance(value, dict):
                value["changed"] = True
        deployment["num_replicas"] = 9
    second = serve_config()
    assert "changed" not in str(second) and "9" not in str(
        [d.get("num_replicas") for d in second["applications"][0]["deployments"]]
    )
