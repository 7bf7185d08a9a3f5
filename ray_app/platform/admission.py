"""What the launcher's service accounts may create: a ValidatingAdmissionPolicy and its binding
(admissionregistration.k8s.io/v1, Kubernetes >= 1.30), written to kuberay/base/admission.yaml by
`ray-app kube-manifests`.

The launcher's Role (kuberay/base/rbac.yaml) grants `rayjobs: create` and `rayservices: patch`:
by itself that lets its account start pods with any image, Secret, volume and service account.
For requests by those accounts the policy admits:

* a RayJob whose every pod template (head, worker groups, submitter) runs containers from the
  overlay's image repositories only (`repositories`, set per overlay: kustomize's `images:` does
  not reach CEL), names no service account, mounts only emptyDirs, the shared claims, the
  token/CA/namespace projection and no Secret volume, and reads no Secret but the pull secret
  and the MLflow writer's credentials (env; never the reader's, the admin's or the database's);
  the autoscaler's image, when set, from the same repositories;
* an update of the RayService that changes `spec.serveConfigV2` and nothing else in the spec,
  labels or annotations (what the deploy step applies, manifests.serve_config_apply).

CEL: only what Kubernetes' CEL and cel-python both evaluate (`has`, `all`, `exists`, `in`,
`startsWith`, `==` on maps); tests/unit/platform/test_admission.py evaluates every
expression against the rendered objects, the launcher's RayJobs and planted violations.
Reference: https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/
"""

from __future__ import annotations

from typing import Any

from ray_app.core.constants import NAMESPACE, SHARED_PVC
from ray_app.platform.podspec import MLFLOW_WRITER_SECRET

POLICY_NAME = "ray-app-launcher"
# The launcher's identities: ray-app's own account (the monitor CronJob, an in-cluster
# `ray-app launch`), single-user KFP's step account and its UI default (kuberay/kfp/single-user),
# and a multi-user KFP profile's `default-editor` (kuberay/kfp/multi-user), in any namespace.
LAUNCHER_ACCOUNTS = [
    f"system:serviceaccount:{NAMESPACE}:ray-app-pipeline",
    "system:serviceaccount:kubeflow:ray-app-pipeline",
    "system:serviceaccount:kubeflow:pipeline-runner",
]
PROFILE_ACCOUNT = "default-editor"
# The base's placeholders; each overlay replaces the list with its registry's repositories.
BASE_REPOSITORIES = ["ray-app", "ray-app-gpu"]
PULL_SECRETS = ["ray-app-registry"]  # pragma: allowlist secret (Secret names)
# The RayJobs name one Secret, the MLflow writer's (its env: manifests.mlflow_credentials);
# KubeRay adds the Ray auth token's to the pods it creates.
SECRETS: list[str] = [MLFLOW_WRITER_SECRET]
CLAIMS = [SHARED_PVC]
# RayService spec fields (KubeRay v1.7 CRD) the launcher must leave as they are: all but
# serveConfigV2 (test_admission.py checks the list against the CRD).
RAYSERVICE_FIXED_FIELDS = [
    "deploymentUnhealthySecondThreshold",
    "excludeHeadPodFromServeSvc",
    "managedBy",
    "rayClusterConfig",
    "rayClusterDeletionDelaySeconds",
    "serveService",
    "serviceUnhealthySecondThreshold",
    "suspend",
    "upgradeStrategy",
]


def _list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _image(expr: str) -> str:
    return (f"variables.repositories.exists(r, {expr} == r || {expr}.startsWith(r + ':')"
            f" || {expr}.startsWith(r + '@'))")  # fmt: skip


def _optional_all(field: str, var: str, predicate: str) -> str:
    """`field` absent, or `predicate` holds for each of its items (bound to `var`)."""
    return f"(!has({field}) || {field}.all({var}, {predicate}))"


def _containers_ok(pod: str, what: str) -> str:
    """Every container and init container of pod spec `pod` passes `what(c)`."""
    return " && ".join(_optional_all(f"{pod}.{field}", "c", what)
                       for field in ("containers", "initContainers"))  # fmt: skip


def _secret_refs_ok(c: str) -> str:
    secret_env = ("!has(e.valueFrom) || !has(e.valueFrom.secretKeyRef)"
                  " || e.valueFrom.secretKeyRef.name in variables.secrets")  # fmt: skip
    secret_from = "!has(e.secretRef) || e.secretRef.name in variables.secrets"
    env = _optional_all(f"{c}.env", "e", secret_env)
    return f"{env} && {_optional_all(f'{c}.envFrom', 'e', secret_from)}"


VOLUME_OK = (
    "has(v.emptyDir)"
    " || (has(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName in variables.claims)"
    " || (has(v.secret) && v.secret.secretName in variables.secrets)"
    " || (has(v.projected) && v.projected.sources.all(s, has(s.serviceAccountToken)"
    " || has(s.downwardAPI) || (has(s.configMap) && s.configMap.name == 'kube-root-ca.crt')))"
)
CLUSTER = "object.spec.rayClusterSpec"
SUBMITTER = "object.spec.submitterPodTemplate.spec"


def _each_pod(check: Any) -> str:
    """`check(pod_spec_expr)` for the head, every worker group and the submitter template."""
    head = check(f"{CLUSTER}.headGroupSpec.template.spec")
    workers = _optional_all(f"{CLUSTER}.workerGroupSpecs", "g", check("g.template.spec"))
    return (f"(!has({CLUSTER}) || ({head} && {workers}))"
            f" && (!has(object.spec.submitterPodTemplate) || {check(SUBMITTER)})")  # fmt: skip


def _rayjob(expression: str) -> str:
    return f"request.resource.resource != 'rayjobs' || ({expression})"


def _unchanged(path: str) -> str:
    new, old = f"object.{path}", f"oldObject.{path}"
    return f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))"


def _images_ok(pod: str) -> str:
    return _containers_ok(pod, _image("c.image"))


def _no_account(pod: str) -> str:
    return f"!has({pod}.serviceAccountName) && !has({pod}.serviceAccount)"


def _volumes_ok(pod: str) -> str:
    return _optional_all(f"{pod}.volumes", "v", VOLUME_OK)


def _secrets_ok(pod: str) -> str:
    pull = _optional_all(f"{pod}.imagePullSecrets", "s", "s.name in variables.pullSecrets")
    return f"{_containers_ok(pod, _secret_refs_ok('c'))} && {pull}"


def validations() -> list[dict[str, str]]:
    options = f"{CLUSTER}.autoscalerOptions"
    with_options = f"!has({CLUSTER}) || !has({options})"
    autoscaler_image = f"{with_options} || !has({options}.image) || {_image(options + '.image')}"
    autoscaler_secrets = f"{with_options} || ({_secret_refs_ok(options)})"
    rayservice = " && ".join(
        [_unchanged(f"spec.{field}") for field in RAYSERVICE_FIXED_FIELDS]
        + [_unchanged("metadata.labels"), _unchanged("metadata.annotations")]
    )
    return [
        {
            "expression": _rayjob(f"{_each_pod(_images_ok)} && ({autoscaler_image})"),
            "message": "the launcher's RayJobs run images of this deployment's repositories only",
        },
        {
            "expression": _rayjob(_each_pod(_no_account)),
            "message": "the launcher's RayJobs name no service account",
        },
        {
            "expression": _rayjob(_each_pod(_volumes_ok)),
            "message": "the launcher's RayJobs mount emptyDirs, the shared claim and the token "
            "projection only (no hostPath, no Secret)",
        },
        {
            "expression": _rayjob(f"{_each_pod(_secrets_ok)} && ({autoscaler_secrets})"),
            "message": "the launcher's RayJobs read no Secret but the image pull secret and the "
            "MLflow writer's",
        },
        {
            "expression": "request.resource.resource != 'rayservices' || "
            f"(request.operation == 'UPDATE' && {rayservice})",
            "message": "the launcher may change the RayService's spec.serveConfigV2 only",
        },
    ]


def policy() -> dict[str, Any]:
    launcher = (f"request.userInfo.username in {_list(LAUNCHER_ACCOUNTS)}"
                " || (request.userInfo.username.startsWith('system:serviceaccount:')"
                f" && request.userInfo.username.endsWith(':{PROFILE_ACCOUNT}'))")  # fmt: skip
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["ray.io"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["rayjobs", "rayservices"],
                    }
                ]
            },
            "matchConditions": [{"name": "launcher", "expression": launcher}],
            # `repositories` first: the overlays replace /spec/variables/0/expression.
            "variables": [
                {"name": "repositories", "expression": _list(BASE_REPOSITORIES)},
                {"name": "secrets", "expression": _list(SECRETS)},
                {"name": "pullSecrets", "expression": _list(PULL_SECRETS)},
                {"name": "claims", "expression": _list(CLAIMS)},
            ],
            "validations": validations(),
        },
    }


def binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
            },
        },
    }
