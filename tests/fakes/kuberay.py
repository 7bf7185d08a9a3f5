"""A fake Kubernetes API server with KubeRay v1.7.0's operator, for the launcher's unit tests.

Two halves, each following the real thing rather than a model of our own. Nothing here comes
from the application (`ray_app`): the field manager engine is tests/fakes/ssa.py, the
operator's admission rules are tests/fakes/admission.py, the rest is below.

THE API SERVER (Kubernetes docs "Server-Side Apply", "Custom Resources", "API Concepts";
apiextensions-apiserver)
- CRDs are read from KubeRay's own files (`crds`: a folder with ray.io_rayjobs.yaml,
  ray.io_rayservices.yaml, ray.io_rayclusters.yaml, version v1). For the transition the old
  argument, a dict kind -> openAPIV3Schema, is accepted too (the strict schemas
  ray_app.platform.kubecheck builds: their `additionalProperties: false` reads as "no unknown
  fields", which the fake prunes anyway).
- Writes: create (POST) is an SSA *update* by the client's field manager (operation Update;
  the Python client sends none unless `field_manager=` is given, then the manager is
  DEFAULT_CLIENT_MANAGER); server-side apply (PATCH application/apply-patch+yaml, through
  `api_client.call_api`, or `apply()`) is `ssa.apply`; merge patch (PATCH
  application/merge-patch+json, `patch_namespaced_custom_object`) is `ssa.merge_patch`.
  Status is a subresource: create and patches never change it; the operator writes it.
- After every write, as the API server does: unknown fields are pruned (fieldValidation Warn,
  the API default: a warning is recorded in `.warnings`; Strict: 400), structural defaults are
  applied ([doc: Custom Resources, "Defaulting"]: absent or non-nullable null fields take
  `default`; on create the defaulted fields belong to the creator, on apply they belong to no
  one, as in a real cluster), then the object is validated against the CRD's openAPIV3Schema
  (types, required, enum, minimum/maximum, lengths, pattern, item counts, list-map/set
  uniqueness, the CRDs' six x-kubernetes-validations rules, metadata.name a DNS-1123
  subdomain). A failure is ApiException 422 and nothing is stored. ssa.Conflict -> 409,
  ssa.Invalid -> 422 (BadRequest -> 400), a missing object -> 404, creating an existing name
  -> 409 AlreadyExists.
- metadata.generation +1 when anything but metadata and status changes (and when a delete
  sets deletionTimestamp on an object with finalizers, as rest.BeforeDelete does);
  resourceVersion is a global counter bumped by every write that changes the object (a no-op
  write stores nothing); metadata.managedFields as ssa.py writes them, stamped with the fake
  clock. A DELETE of a RayJob/RayService with finalizers marks it; the operator removes its
  finalizer (job L112-L139; svc L132-L144, after its clusters are gone) and the object goes,
  with the RayClusters it owns (ownerReferences garbage collection).

THE OPERATOR (ray-project/kuberay v1.7.0, commit 59d663aeec13760646da3db9c1cf8cfe883e30b7,
ray-operator/controllers/ray/; "job L<n>" = rayjob_controller.go, "svc L<n>" =
rayservice_controller.go, "util L<n>" = utils/util.go)
- Time: controllers run on the shared Clock. A reconcile happens at its requeue timer (RayJob
  3 s, job L38; RayService 2 s, svc L47; one pending timer per object, the earliest wins, as
  controller-runtime's delaying queue keeps it), at once on a watch event, and after an error
  with controller-runtime's per-item backoff (5 ms doubling, RequeueAfter ignored). Watches:
  RayJob: any RayJob change (its own status writes included), owned RayCluster and submitter
  Job changes (job L864-L881); RayService: spec/label/annotation changes only (generation
  predicate), owned RayCluster and Service changes (svc L832-L852).
- RayJob, Reconcile job L89-L462: the finalizer is added by the first reconcile (job L167-L174,
  an Update by manager "kuberay-operator": main.go L46, L268); validateRayJob (job L144-L162,
  the admission port) -> ValidationFailed, never reconciled again; New -> Initializing
  (initRayJobStatusIfNeed job L887-L917: jobStatus stays "" (JobStatusNew), startTime is reset
  on every attempt, so activeDeadlineSeconds applies per attempt); Initializing: suspend
  (L1043-L1060), activeDeadlineSeconds (L1234-L1245), preRunningDeadlineSeconds
  (L1247-L1261: PreRunningDeadlineExceeded, retryable), waits for the RayCluster (own cluster,
  or the clusterSelector's, which must exist: job L947-L995), creates the submitter K8s Job
  (K8sJobMode, job L560-L584, L716-L756: backoffLimit submitterConfig.backoffLimit or 2) ->
  Running with jobStatus still "". Running: the submitter Job is checked first
  (checkSubmitterAndUpdateStatusIfNeeded job L1062-L1181): a Failed Job is Failed/AppFailed if
  the Ray job had FAILED, else Failed/SubmissionFailed ("Job submission has failed. Reason:
  ... Message: ..."), the case of a submission that never created the Ray job;
  GetJobInfo (job L301-L326): not found -> no change (or AppFailed "Submitter completed but
  Ray job not found" once the submitter finished), other errors start the status-check timer
  -> JobStatusCheckTimeoutExceeded after 300 s (job L1325-L1354, constant.go L290), never
  retried; a terminal Ray job is Complete/Failed only once the submitter Job finished (job
  L337-L349, HasSubmitter util L1138); grace periods (job L1263-L1286, L1366-L1394).
  Retrying/Suspending delete the cluster and the submitter Job and wait until both are gone
  (job L366-L410). Complete/Failed: shutdownAfterJobFinishes deletes the cluster
  ttlSecondsAfterFinished after endTime (job L1515-L1556). checkBackoffLimitAndUpdateStatus
  (job L518-L557): Failed -> Retrying while failed < backoffLimit + 1, except DeadlineExceeded
  and JobStatusCheckTimeoutExceeded. Status is written only when jobStatus,
  jobDeploymentStatus, rayClusterStatus or the status-check timer changed (job L919-L945).
  The submitter K8s Job: `ray job submit --no-wait` then `ray job logs --follow` (common/job.go
  L90-L212): it submits `submit_s` after it starts and completes `submitter_exit_s` after the
  Ray job ends, whatever the Ray job's outcome; a failing submission fails each pod, the Job
  controller retries with 10 s, 20 s, ... back-off and fails the Job after backoffLimit + 1
  pod failures (reason BackoffLimitExceeded). Deleting a Job removes its pods (background
  propagation, job L784).
- RayService, Reconcile svc L112-L331: finalizer first (svc L146-L154); validateRayService (svc
  L156-L171: Ready=False, reason ValidationFailed; the clusters are left as they are);
  reconcileRayCluster (svc L1200-L1252) creates the pending cluster whose name calculateStatus
  chose, updates a cluster in place when only worker groups were appended (shouldUpdateCluster
  svc L1351-L1377, isClusterSpecHashEqual L1379-L1407), else shouldPrepareNewCluster (svc
  L1409-L1437, with isZeroDowntimeUpgradeEnabled L868-L896: upgradeStrategy None never
  prepares one) names a new pending cluster. The cluster hash is
  GenerateHashWithoutReplicasAndWorkersToDelete (util L645-L668) of rayClusterSpecForHashing
  (svc L1490-L1502): it ignores the cluster-level `suspend`, `upgradeStrategy`, each worker
  group's replicas, minReplicas, maxReplicas and scaleStrategy.workersToDelete, and the
  tolerations and schedulingGates of every pod template. (A worker group's own `suspend` is
  NOT ignored in v1.7.0.) reconcileServe (svc L1987-L2072) reads the Serve application
  status before it submits a changed serveConfigV2 (so the status written right after a change
  still describes the old config) and resubmits when its cache is empty, the cluster reports no
  application, or the config changed (L1551-L1570); a cluster is "ready" when every
  application is RUNNING (getAndCheckServeStatus L1846-L1894), and then the head and Serve
  Services are pointed at it (L568-L579, L1927-L1983), which promotes a pending cluster
  (reconcilePromotionAndServingStatus L581-L641). calculateStatus (svc L643-L783) sets
  observedGeneration on every reconcile (persisted only along with another change, see
  below); calculateConditions (svc L785-L818): Ready=True
  (NonZeroServeEndpoints) while the Serve Service has a ready endpoint, i.e. a pod of the
  cluster it selects that is ready and serving: the head pod while its Serve proxy is healthy
  (updateHeadPodServeLabel L2074-L2119), a worker pod while its readiness probe passes (the
  overlay's probe GETs the app's /health; a worker without one gets KubeRay's proxy probe);
  counted from EndpointSlices (L2121-L2170). Ready=False (ZeroServeEndpoints) when they drop to
  0 after being up; Initializing before. UpgradeInProgress from the cluster names. Dangling
  clusters are deleted rayClusterDeletionDelaySeconds (default 60 s, svc L48) after they stop
  being active or pending (cleanUpRayClusterInstance svc L1254-L1312). The status is written
  when InconsistentRayServiceStatuses says so (utils/consistency.go L36-L113).
- The Serve application (scripted per test): a submitted config deploys for `deploy_s`, then
  takes `serve_outcome(config)`; RUNNING replicas serve the model the config names (a version
  pinned in a deployment's user_config.model_version, else args.model_uri, an alias resolved in
  `registry`); replicas of the last RUNNING config keep serving while a new one deploys or
  fails; on an empty registry the app is RUNNING with no model and serves the first champion
  once one is registered. The application name is the config's own (`applications[].name`).

SCRIPTING (per test): JobScript(cluster_ready_s, attempts, submit_s=5, pending_s=1,
submitter_exit_s=1) says what the Ray side does for a RayJob; each Attempt (or the old tuple
(runs_s, final, logs)) gives the Ray job's run time, final status, message and submitter logs,
or makes the submission fail (submission_fails) or the dashboard unreachable
(dashboard_lost_after_s), or overrides that attempt's cluster start (cluster_ready_s). The
FakeKubeRay arguments deploy_s, cluster_ready_s (RayService and directly created clusters),
serve_outcome and `registry` script the Serve side; delete_s is how long a deleted RayCluster or
Job takes to go.

OUT OF SCOPE (each would need more than the tests use; objects that need them are refused
with NotImplementedError or admission.NotPorted rather than mis-modelled):
- Submission modes other than K8sJobMode (HTTPMode, InteractiveMode/Waiting, SidecarMode):
  the launcher sends the default. RayJob deletionStrategy (rules and legacy policies) after a
  terminal state: only the cleanup differs, the states do not. Batch schedulers, Kueue,
  managedBy (external controllers), DELETE_RAYJOB_CR_AFTER_JOB_FINISHES.
- RayService: NewClusterWithIncrementalUpgrade (Gateway API objects), spec.suspend, the
  ray.io/initializing-timeout annotation (terminal InitializingTimeout), rollback: not used by
  the project. Several Serve applications per config are tracked, but `serve_outcome` decides
  for the whole config.
- Pods, Services and EndpointSlices are not API objects here: their state is derived from
  time (a head pod exists from the cluster's creation and is ready `cluster_ready_s` later;
  endpoint slices follow pod readiness with no lag). RayCluster status is reduced to `state`.
  The RayCluster controller itself (its own validation, autoscaling, pod reconciliation) is
  not run; the number of worker pods is read from the spec (replicas within min/max).
- API server: one namespace's worth of names per kind (namespaces are recorded, not
  separated); one API version (v1, no conversion); no admission webhooks; CEL rules other than
  the six these CRDs carry (an unknown rule raises); OpenAPI `format` is not checked; status
  writes are not validated and leave no managedFields entry (ssa.py does not model the status
  subresource); resourceVersion preconditions, dry-run, watch and list pagination are not
  modelled; finalizers of objects other than RayJob/RayService are not modelled (RayClusters
  and Jobs go away `delete_s` after their deletion).
- Ray itself: the Ray job's own retries, runtime-env failures (use Attempt.final/message), a
  dashboard that comes back after being lost (Attempt.dashboard_lost_after_s: it stays lost).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from tests.fakes import admission, ssa

GROUP, VERSION = "ray.io", "v1"
RAYJOB_REQUEUE_S = 3.0  # job L38
RAYSERVICE_REQUEUE_S = 2.0  # svc L47
RAYCLUSTER_DELETION_DELAY_S = 60.0  # svc L48
SUBMITTER_FINISHED_TIMEOUT_S = 30.0  # job L40
STATUS_CHECK_TIMEOUT_S = 300.0  # constant.go L290
TRANSITION_GRACE_PERIOD_S = 300.0  # constant.go L285
OPERATOR = "kuberay-operator"  # main.go L46, L268: the operator's field manager
# The Python client sends no fieldManager; the API server then takes the User-Agent's prefix
# (for kubernetes 30.x "OpenAPI-Generator/30.1.0/python" -> "OpenAPI-Generator"). The tests use
# this name for it instead, as the project's issue asks.
DEFAULT_CLIENT_MANAGER = "kubernetes-python-client"
KUBERAY_VERSION = "v1.7.0"  # constant.go L365
EPOCH = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # the fake clock's zero

PLURALS = {"RayJob": "rayjobs", "RayService": "rayservices", "RayCluster": "rayclusters"}
KINDS = {plural: kind for kind, plural in PLURALS.items()}
RAYJOB_FINALIZER = "ray.io/rayjob-finalizer"  # constant.go L347
RAYSERVICE_FINALIZER = "ray.io/rayservice-finalizer"  # constant.go L350
HASH_KEY = "ray.io/hash-without-replicas-and-workers-to-delete"  # constant.go L26
NUM_WORKER_GROUPS_KEY = "ray.io/num-worker-groups"  # constant.go L28
KUBERAY_VERSION_KEY = "ray.io/kuberay-version"
# k8s.io/apimachinery/pkg/util/rand
_RAND_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # pragma: allowlist secret


class Clock:
    """Shared by the fake and the launcher: time passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Attempt:
    """What happens to one attempt (one cluster, one submitter Job) of a RayJob."""

    runs_s: float = 30.0  # from the submission to the Ray job's end
    final: str = "SUCCEEDED"  # the Ray job's terminal status: SUCCEEDED | FAILED | STOPPED
    logs: str = ""  # what the submitter pod prints
    message: str | None = None  # the Ray job's final message (default: Ray's wording)
    submission_fails: bool = False  # every submitter pod fails before the Ray job exists
    dashboard_lost_after_s: float | None = None  # GetJobInfo fails from submission + this on
    cluster_ready_s: float | None = None  # this attempt's cluster (default: the script's)


@dataclass
class JobScript:
    """What the Ray side does for one RayJob: its clusters' start and each attempt.

    `attempts` holds Attempt objects or the old (runs_s, final, logs) tuples; the last one
    repeats for further attempts.
    """

    cluster_ready_s: float = 20.0
    attempts: list[Any] = field(default_factory=list)
    submit_s: float = 5.0  # submitter pod start -> the Ray job exists (PENDING)
    pending_s: float = 1.0  # the Ray job PENDING before RUNNING
    submitter_exit_s: float = 1.0  # the Ray job's end -> the submitter Job is Complete

    def attempt(self, i: int) -> Attempt:
        if not self.attempts:
            return Attempt()
        item = self.attempts[min(i, len(self.attempts) - 1)]
        return item if isinstance(item, Attempt) else Attempt(*item)


# ------------------------------------------------------------------------------ helpers


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _ts(t: float) -> str:
    """metav1.Time as JSON: RFC 3339, whole seconds."""
    return (EPOCH + timedelta(seconds=math.floor(t))).strftime("%Y-%m-%dT%H:%M:%SZ")


_ABSENT = object()


def _api_error(code: int, message: str, details: dict | None = None) -> ApiException:
    """ApiException with the metav1.Status body the API server sends."""
    reasons = {
        400: ("Bad Request", "BadRequest"),
        404: ("Not Found", "NotFound"),
        409: ("Conflict", "Conflict"),
        422: ("Unprocessable Entity", "Invalid"),
    }
    http_reason, reason = reasons[code]
    if details and details.get("reason"):
        reason = details.pop("reason")
    exc = ApiException(status=code, reason=http_reason)
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }
    exc.body = json.dumps(status)
    exc.headers = {"Content-Type": "application/json"}
    return exc


# -------------------------------------------------------------------------------- CRDs


@dataclass
class _Kind:
    kind: str
    plural: str
    schema: dict  # openAPIV3Schema of v1
    types: ssa.TypeInfo
    status_subresource: bool


@functools.lru_cache(maxsize=8)
def _crds_from_folder(folder: str) -> dict[str, _Kind]:
    kinds = {}
    for kind, plural in PLURALS.items():
        path = Path(folder) / f"ray.io_{plural}.yaml"
        with path.open() as fh:
            crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
        schema = version["schema"]["openAPIV3Schema"]
        status = "status" in _d(version.get("subresources"))
        kinds[plural] = _Kind(
            kind, plural, schema, ssa.TypeInfo.from_crd_schema(schema, status), status
        )
    return kinds


_DICT_CRDS: dict[int, tuple[Mapping[str, dict], dict[str, _Kind]]] = {}


def _load_crds(crds: Path | str | Mapping[str, dict]) -> dict[str, _Kind]:
    """A folder of KubeRay's CRD files, or (transition) a dict kind -> openAPIV3Schema."""
    if isinstance(crds, (str, Path)):
        return _crds_from_folder(str(Path(crds).resolve()))
    key = id(crds)
    if key not in _DICT_CRDS or _DICT_CRDS[key][0] is not crds:
        kinds = {
            PLURALS[kind]: _Kind(
                kind, PLURALS[kind], schema, ssa.TypeInfo.from_crd_schema(schema), True
            )
            for kind, schema in crds.items()
            if kind in PLURALS
        }
        _DICT_CRDS[key] = (crds, kinds)  # keeps `crds` alive, so its id is not reused
    return _DICT_CRDS[key][1]


# --------------------------------------------------------- structural schema: prune, default


_OBJECT_META = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}


def _is_object_schema(s: dict) -> bool:
    return s.get("type") == "object" or "properties" in s or "additionalProperties" in s


def _unknown_fields(v: Any, s: Any, path: str, out: list[str]) -> None:
    """Fields the schema does not declare (what structural pruning drops)."""
    if not isinstance(s, dict):
        return
    if isinstance(v, dict) and _is_object_schema(s):
        props = _d(s.get("properties"))
        extra = s.get("additionalProperties")
        for k, cv in v.items():
            p = f"{path}.{k}" if path else k
            if k in props:
                _unknown_fields(cv, props[k], p, out)
            elif isinstance(extra, dict):
                _unknown_fields(cv, extra, p, out)
            elif not (extra is True or s.get("x-kubernetes-preserve-unknown-fields")):
                out.append(p)
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        for i, item in enumerate(v):
            _unknown_fields(item, s["items"], f"{path}[{i}]", out)


def _object_unknown_fields(obj: dict, schema: dict) -> list[str]:
    out: list[str] = []
    top = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    _unknown_fields(
        top,
        {
            **schema,
            "properties": {
                k: v for k, v in _d(schema.get("properties")).items() if k != "metadata"
            },
        },
        "",
        out,
    )
    out += [f"metadata.{k}" for k in _d(obj.get("metadata")) if k not in _OBJECT_META]
    return out


def _default(v: Any, s: Any) -> Any:
    """Structural defaulting [doc: Custom Resources, "Defaulting"; apiextensions
    structuraldefaulting.Default and PruneNonNullableNullsWithoutDefaults]: an absent field, or a
    null one that is not nullable, takes its default; other non-nullable nulls are dropped."""
    if not isinstance(s, dict):
        return v
    if isinstance(v, dict) and _is_object_schema(s):
        props = _d(s.get("properties"))
        extra = s.get("additionalProperties")
        out = {}
        for k, cv in v.items():
            ps = props.get(k) if k in props else (extra if isinstance(extra, dict) else None)
            if cv is None and isinstance(ps, dict) and not ps.get("nullable"):
                if "default" in ps:
                    out[k] = copy.deepcopy(ps["default"])
                continue
            out[k] = _default(cv, ps) if ps is not None else cv
        for k, ps in props.items():
            if k not in out and isinstance(ps, dict) and "default" in ps and k not in v:
                out[k] = _default(copy.deepcopy(ps["default"]), ps)
        return out
    if isinstance(v, list) and isinstance(s.get("items"), dict):
        return [_default(item, s["items"]) for item in v]
    return v


# ------------------------------------------------------------ structural schema: validation


def _has(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and key in obj


# The x-kubernetes-validations rules of the v1.7.0 CRDs (grep "rule:"), as Python. A rule not
# in this table raises: the fake does not guess CEL.
_ON_SUCCESS_OR_FAILURE_AND_RULES = (
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))"
)
_BOTH_POLICIES_OR_RULES = (
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))"
)
_CEL_RULES: dict[str, Callable[[Any, Any], bool]] = {
    "self == oldSelf": lambda self, old: old is _ABSENT or self == old,
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda self, old: (
        self in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    ),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))": lambda self, old: (
        not (_has(self, "jobStatus") and _has(self, "jobDeploymentStatus"))
    ),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)": lambda self, old: (
        _has(self, "jobStatus") or _has(self, "jobDeploymentStatus")
    ),
    _ON_SUCCESS_OR_FAILURE_AND_RULES: lambda self, old: (
        not ((_has(self, "onSuccess") or _has(self, "onFailure")) and _has(self, "deletionRules"))
    ),
    _BOTH_POLICIES_OR_RULES: lambda self, old: (
        (_has(self, "onSuccess") and _has(self, "onFailure")) or _has(self, "deletionRules")
    ),
}


def _shown(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return '"null"'
    if isinstance(v, dict):
        return '"object"'
    if isinstance(v, list):
        return '"array"'
    return str(v)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _type_ok(v: Any, t: str) -> bool:
    """OpenAPI types of JSON values (an integral float counts as an integer, as in
    kube-openapi)."""
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer()
        )
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    python = {"string": str, "boolean": bool, "object": dict, "array": list}.get(t)
    return python is None or isinstance(v, python)


def _schema_errors(v: Any, s: Any, path: str, errs: list[str], old: Any = _ABSENT) -> None:
    """apiextensions-apiserver's validation of one value against its structural schema;
    messages as kube-openapi words them (field.Error strings)."""
    if not isinstance(s, dict) or not s:
        return

    def invalid(shown: str, detail: str) -> None:
        errs.append(f"{path}: Invalid value: {shown}: {path} in body {detail}")

    kind = f'"{_json_type(v)}"'
    if v is None:
        if not s.get("nullable"):
            invalid(kind, f"must be of type {s.get('type', 'object')}: {kind}")
        return
    t = s.get("type")
    if t and not _type_ok(v, t):
        invalid(kind, f"must be of type {t}: {kind}")
        return
    if s.get("x-kubernetes-int-or-string") and not (isinstance(v, str) or _type_ok(v, "integer")):
        invalid(kind, f"must be of type integer,string: {kind}")
        return
    if "enum" in s and v not in s["enum"]:
        supported = ", ".join(json.dumps(e) for e in s["enum"])
        errs.append(f"{path}: Unsupported value: {_shown(v)}: supported values: {supported}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        lo, hi = s.get("minimum"), s.get("maximum")
        if lo is not None and (v < lo or (s.get("exclusiveMinimum") and v == lo)):
            invalid(_shown(v), f"should be greater than or equal to {lo}")
        if hi is not None and (v > hi or (s.get("exclusiveMaximum") and v == hi)):
            invalid(_shown(v), f"should be less than or equal to {hi}")
    if isinstance(v, str):
        if "maxLength" in s and len(v) > s["maxLength"]:
            errs.append(f"{path}: Too long: may not be more than {s['maxLength']} bytes")
        if "minLength" in s and len(v) < s["minLength"]:
            invalid(_shown(v), f"should be at least {s['minLength']} chars long")
        if "pattern" in s and not re.search(s["pattern"], v):
            invalid(_shown(v), f"should match '{s['pattern']}'")
    for key, least in (("anyOf", "at least"), ("oneOf", "one and only")):
        if key in s:
            matched = 0
            for branch in s[key]:
                sub: list[str] = []
                _schema_errors(v, branch, path, sub)
                matched += not sub
            if (key == "anyOf" and matched == 0) or (key == "oneOf" and matched != 1):
                errs.append(
                    f"{path}: Invalid value: {_shown(v)}: must validate {least} one schema ({key})"
                )
    for branch in _l(s.get("allOf")):
        _schema_errors(v, branch, path, errs)
    if isinstance(v, dict):
        props = _d(s.get("properties"))
        for k in _l(s.get("required")):
            if k not in v:
                errs.append(f"{path}.{k}: Required value" if path else f"{k}: Required value")
        extra = s.get("additionalProperties")
        for k, cv in v.items():
            ps = props.get(k) if k in props else (extra if isinstance(extra, dict) else None)
            if ps is not None:
                cold = old.get(k, _ABSENT) if isinstance(old, dict) else _ABSENT
                _schema_errors(cv, ps, f"{path}.{k}" if path else k, errs, cold)
    if isinstance(v, list):
        _list_errors(v, s, path, errs)
    for rule in _l(s.get("x-kubernetes-validations")):
        check = _CEL_RULES.get(rule.get("rule"))
        if check is None:
            raise NotImplementedError(f"{path}: CEL rule not modelled: {rule.get('rule')}")
        if not check(v, old):
            shown = '"object"' if isinstance(v, dict) else _shown(v)
            errs.append(f"{path}: Invalid value: {shown}: {rule.get('message', rule['rule'])}")


def _list_errors(v: list, s: dict, path: str, errs: list[str]) -> None:
    """Item counts, items, and the uniqueness of list-type set/map items (by their keys, a
    missing key taking its default)."""
    if "maxItems" in s and len(v) > s["maxItems"]:
        errs.append(f"{path}: Too many: {len(v)}: must have at most {s['maxItems']} items")
    if "minItems" in s and len(v) < s["minItems"]:
        errs.append(
            f"{path}: Invalid value: {len(v)}: {path} in body should have at least "
            f"{s['minItems']} items"
        )
    items = s.get("items")
    list_type = s.get("x-kubernetes-list-type")
    seen: set[str] = set()
    for i, item in enumerate(v):
        if isinstance(items, dict):
            _schema_errors(item, items, f"{path}[{i}]", errs)
        if list_type not in ("set", "map"):
            continue
        if list_type == "map":
            keys = _l(s.get("x-kubernetes-list-map-keys"))
            defaults = _d(_d(items).get("properties"))
            ident = json.dumps(
                {k: _d(item).get(k, _d(defaults.get(k)).get("default")) for k in keys},
                sort_keys=True,
            )
        else:
            ident = json.dumps(item, sort_keys=True)
        if ident in seen:
            errs.append(f"{path}[{i}]: Duplicate value: {ident}")
        seen.add(ident)


def _metadata_errors(meta: dict) -> list[str]:
    """ObjectMeta of a custom resource: name a DNS-1123 subdomain (apiextensions validator
    NameIsDNSSubdomain), labels qualified names with valid values."""
    errs = []
    name = meta.get("name")
    if not name:
        errs.append("metadata.name: Required value: name or generateName is required")
    else:
        for msg in admission.is_dns1123_subdomain(name):
            errs.append(f'metadata.name: Invalid value: "{name}": {msg}')
    for key, value in _d(meta.get("labels")).items():
        for msg in admission.is_qualified_name(key):
            errs.append(f'metadata.labels: Invalid value: "{key}": {msg}')
        for msg in admission.is_valid_label_value(str(value)):
            errs.append(f'metadata.labels: Invalid value: "{value}": {msg}')
    return errs


# ----------------------------------------------------------------------- operator helpers


def cluster_hash(cluster_spec: dict) -> str:
    """GenerateHashWithoutReplicasAndWorkersToDelete (util L645-L668) of
    rayClusterSpecForHashing (svc L1490-L1502): the fields an autoscaler or Kueue changes, and
    the cluster-level suspend, do not count. A hash of the JSON as stored (Go hashes its typed
    struct, where an empty map and an absent one may marshal alike)."""
    spec = copy.deepcopy(cluster_spec)
    spec.pop("suspend", None)  # svc L1500
    spec.pop("upgradeStrategy", None)  # util L664
    head = _d(_d(_d(spec.get("headGroupSpec")).get("template")).get("spec"))
    head.pop("tolerations", None)
    head.pop("schedulingGates", None)
    for group in _l(spec.get("workerGroupSpecs")):
        for key in ("replicas", "maxReplicas", "minReplicas"):
            _d(group).pop(key, None)
        strategy = _d(group).get("scaleStrategy")
        if isinstance(strategy, dict):
            strategy.pop("workersToDelete", None)
            if not strategy:  # Go marshals the struct whole: empty and absent hash alike
                del group["scaleStrategy"]
        pod = _d(_d(_d(group).get("template")).get("spec"))
        pod.pop("tolerations", None)
        pod.pop("schedulingGates", None)
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()  # utils.GenerateJsonHash: sha1, base32 in Go


def _apps_of(config: str) -> list[dict]:
    try:
        doc = yaml.safe_load(config) or {}
    except yaml.YAMLError:
        return []
    return [a for a in _l(_d(doc).get("applications")) if isinstance(a, dict)]


def _model_uri(app: dict) -> str:
    """What the app loads: a version pinned in a deployment's user_config (a deploy), else the
    URI of its args (an alias is resolved against the registry)."""
    for deployment in _l(app.get("deployments")):
        pinned = _d(_d(deployment).get("user_config")).get("model_version")
        if pinned:
            return f"models:/pinned/{pinned}"
    return str(_d(app.get("args")).get("model_uri") or "")


# Ray's JobInfo.message per status (ray/dashboard/modules/job/job_manager.py wording).
_RAY_MESSAGES = {
    "PENDING": (
        "Job has not started yet. It may be waiting for the runtime environment to be set up."
    ),
    "RUNNING": "Job is currently running.",
    "SUCCEEDED": "Job finished successfully.",
    "FAILED": "Job entrypoint command failed with exit code 1",
    "STOPPED": "Job was intentionally stopped.",
}


# ---------------------------------------------------------------------- simulated resources


@dataclass
class _App:
    """One Serve application on one cluster."""

    name: str
    spec: str  # this application's part of the config (to notice a change)
    config: str  # the whole serveConfigV2 it came from (what serve_outcome is asked about)
    since: float
    status: str = "DEPLOYING"
    message: str = ""
    ever_running: bool = False
    version: str | None = None
    settled: bool = False


@dataclass
class _Cluster:
    """A RayCluster: the API object plus what its pods are doing."""

    obj: dict
    created_at: float
    ready_at: float
    owner: tuple[str, str] | None = None  # (plural, name) of the controlling RayJob/RayService
    deleted_at: float | None = None
    gone_at: float | None = None
    serve_started_at: float | None = None
    apps: dict[str, _App] = field(default_factory=dict)
    head_serve_label: bool = False
    ray_jobs: dict[str, _RayJob] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def exists(self, t: float) -> bool:
        return self.gone_at is None or t < self.gone_at

    def deleting(self, t: float) -> bool:
        return self.deleted_at is not None and t >= self.deleted_at

    def ready(self, t: float) -> bool:
        return self.exists(t) and not self.deleting(t) and t >= self.ready_at

    def status(self, t: float) -> dict:
        return {"state": "ready"} if self.ready(t) else {}

    def proxy_healthy(self, t: float) -> bool:
        return self.ready(t) and self.serve_started_at is not None and t >= self.serve_started_at


@dataclass
class _RayJob:
    """A Ray job in a cluster's dashboard."""

    job_id: str
    submitted_at: float
    attempt: Attempt
    pending_s: float
    stopped_at: float | None = None

    @property
    def ends_at(self) -> float:
        return self.submitted_at + self.attempt.runs_s

    def info(self, t: float) -> dict[str, Any]:
        a = self.attempt
        if self.stopped_at is not None and t >= self.stopped_at and self.stopped_at < self.ends_at:
            status, end = "STOPPED", self.stopped_at
        elif t >= self.ends_at:
            status, end = a.final, self.ends_at
        elif t >= self.submitted_at + self.pending_s:
            status, end = "RUNNING", None
        else:
            status, end = "PENDING", None
        message = (
            a.message
            if (status == a.final and a.message is not None)
            else _RAY_MESSAGES.get(status, "")
        )
        started = self.submitted_at + min(self.pending_s, a.runs_s)
        return {
            "status": status,
            "message": message,
            "start": started if t >= started else None,
            "end": end,
        }


@dataclass
class _Pod:
    name: str
    created_at: float
    ended_at: float | None
    logs: str


@dataclass
class _SubmitterJob:
    """The submitter Kubernetes Job of one RayJob attempt (K8sJobMode)."""

    name: str
    created_at: float
    pods: list[_Pod]
    condition: str | None = None  # "Complete" | "Failed"
    condition_at: float | None = None
    reason: str = ""
    message: str = ""
    submits_at: float | None = None  # when `ray job submit` reaches the dashboard
    deleted_at: float | None = None
    gone_at: float | None = None

    def exists(self, t: float) -> bool:
        return self.gone_at is None or t < self.gone_at

    def deleting(self, t: float) -> bool:
        return self.deleted_at is not None and t >= self.deleted_at

    def finished(self, t: float) -> tuple[str | None, float | None]:
        if self.condition and self.condition_at is not None and t >= self.condition_at:
            return self.condition, self.condition_at
        return None, None

    def pods_at(self, t: float) -> list[_Pod]:
        return [p for p in self.pods if p.created_at <= t] if self.exists(t) else []


class _Controller:
    """One object's reconcile queue: a requeue timer, watch events, error back-off."""

    def __init__(self) -> None:
        self.timer: float | None = None
        self.events: list[float] = []
        self.failures = 0
        self.last_t = -math.inf

    def event(self, t: float) -> None:
        self.events.append(t)

    def next_at(self) -> float | None:
        times = [*self.events, *([self.timer] if self.timer is not None else [])]
        return min(times) if times else None

    def run(self, now: float, reconcile: Callable[[float], float | None]) -> None:
        same = 0
        while True:
            t = self.next_at()
            if t is None or t > now:
                return
            same = same + 1 if t == self.last_t else 0
            if same > 50:
                raise RuntimeError(f"reconcile loop at t={t}: the fake's operator does not settle")
            self.last_t = t
            self.events = [e for e in self.events if e > t]
            if self.timer is not None and self.timer <= t:
                self.timer = None
            try:
                requeue = reconcile(t)
            except _ReconcileError:
                # controller-runtime: an error requeues with the per-item exponential back-off
                # (5 ms doubling, capped 1000 s; RequeueAfter is ignored), an AddAfter like a
                # requeue: the delaying queue keeps one waiting entry per item, the earliest.
                self.failures += 1
                due = t + min(0.005 * 2 ** (self.failures - 1), 1000.0)
                self.timer = due if self.timer is None else min(self.timer, due)
                continue
            self.failures = 0
            if requeue is not None:
                due = t + requeue
                self.timer = due if self.timer is None else min(self.timer, due)


class _ReconcileError(Exception):
    """A reconcile that returned an error (a Get/Create failed)."""


@dataclass
class _Job:
    obj: dict
    script: JobScript
    attempt: int = 0
    ctl: _Controller = field(default_factory=_Controller)
    submitter: _SubmitterJob | None = None


@dataclass
class _Service:
    obj: dict
    ctl: _Controller = field(default_factory=_Controller)
    serve_cache: dict[str, str] = field(default_factory=dict)  # cluster name -> serveConfigV2
    deletion_due: dict[str, float] = field(default_factory=dict)  # dangling cluster -> when


# ============================================================================== the fake


class FakeKubeRay:
    """CustomObjectsApi + CoreV1Api (pods, logs) + an ApiClient (server-side apply)."""

    def __init__(
        self,
        crds: Path | str | Mapping[str, dict],
        clock: Clock,
        scripts: dict[str, JobScript] | None = None,
        serve_outcome: Callable[[str], tuple[str, str]] | None = None,
        deploy_s: float = 10.0,
        cluster_ready_s: float = 30.0,
        delete_s: float = 1.0,
    ) -> None:
        self.kinds = _load_crds(crds)
        self.clock = clock
        self.scripts = scripts or {}
        # serveConfigV2 -> (final application status, message) once its deploy is over.
        self.serve_outcome = serve_outcome or (lambda config: ("RUNNING", ""))
        self.deploy_s, self.cluster_ready_s, self.delete_s = deploy_s, cluster_ready_s, delete_s
        # What the model registry holds: alias -> version (None: an empty registry).
        self.registry: dict[str, str | None] = {"champion": None}
        self.jobs: dict[str, _Job] = {}
        self.services: dict[str, _Service] = {}
        self.clusters: dict[str, _Cluster] = {}
        self.k8s_services: dict[str, str] = {}  # Service name -> the RayCluster it selects
        self.deleted: list[str] = []  # names passed to delete_namespaced_custom_object
        self.created: list[dict[str, Any]] = []  # RayJob bodies clients POSTed, as sent
        self.templates: dict[str, dict[str, Any]] = {}  # RayJobs GET returns as they are
        self.warnings: list[str] = []  # Warning headers (fieldValidation=Warn)
        self.fail_next_get: Exception | None = None
        self.api_client = _ApiClient(self)
        self._rv = 0
        self._uid = 0
        self._rng = random.Random(0)
        self._t: float | None = None  # the time of the reconcile being run

    # ============================================================ the API server: plumbing

    def _kind(self, plural: str) -> _Kind:
        if plural not in self.kinds:
            raise _api_error(
                404, f"the server could not find the requested resource ({plural}.{GROUP})"
            )
        return self.kinds[plural]

    def _store(self, plural: str) -> dict[str, Any]:
        stores: dict[str, dict[str, Any]] = {
            "rayjobs": self.jobs,
            "rayservices": self.services,
            "rayclusters": self.clusters,
        }
        return stores[plural]

    def _live(self, plural: str, name: str) -> dict | None:
        record = self._store(plural).get(name)
        if record is None or (isinstance(record, _Cluster) and not record.exists(self._now())):
            return None
        return record.obj

    def _suffix(self) -> str:
        return "".join(self._rng.choice(_RAND_ALPHABET) for _ in range(5))

    def _not_found(self, plural: str, name: str) -> ApiException:
        return _api_error(
            404,
            f'{plural}.{GROUP} "{name}" not found',
            {"name": name, "group": GROUP, "kind": plural},
        )

    def _unknown(self, kind: _Kind, body: dict, validation: str | None, name: str) -> None:
        """fieldValidation: Strict refuses undeclared fields (400); Warn (the API default) and
        Ignore let pruning drop them, Warn with a warning header."""
        unknown = _object_unknown_fields(body, kind.schema)
        if not unknown:
            return
        mode = validation or "Warn"
        if mode == "Strict":
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise _api_error(
                400,
                f'{kind.kind} in version "{VERSION}" cannot be handled as a '
                f"{kind.kind}: strict decoding error: {fields}",
            )
        if mode == "Warn":
            self.warnings += [f'unknown field "{u}"' for u in unknown]

    def _validate(self, kind: _Kind, obj: dict, old: dict | None) -> None:
        errs = _metadata_errors(_d(obj.get("metadata")))
        body = {
            k: v
            for k, v in obj.items()
            if k != "metadata" and not (k == "status" and kind.status_subresource)
        }
        schema = {
            **kind.schema,
            "properties": {
                k: v for k, v in _d(kind.schema.get("properties")).items() if k != "metadata"
            },
        }
        _schema_errors(body, schema, "", errs, old if old is not None else _ABSENT)
        if errs:
            name = _d(obj.get("metadata")).get("name", "")
            text = errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
            causes = [
                {"reason": "FieldValueInvalid", "message": e, "field": e.split(":", 1)[0]}
                for e in errs
            ]
            raise _api_error(
                422,
                f'{kind.kind}.{GROUP} "{name}" is invalid: {text}',
                {"name": name, "group": GROUP, "kind": kind.kind, "causes": causes},
            )

    def _commit(self, kind: _Kind, old: dict | None, new: dict) -> dict:
        """Validate, bump generation and resourceVersion, store. Returns the stored object."""
        t = self._now()
        new = _default(new, kind.schema)
        meta = new.setdefault("metadata", {})
        if old is None:
            self._uid += 1
            meta["uid"] = f"00000000-0000-4000-8000-{self._uid:012d}"
            meta["creationTimestamp"] = _ts(t)
            meta["generation"] = 1
        self._validate(kind, new, old)
        if old is not None:
            if _spec_part(old) != _spec_part(new):
                meta["generation"] = int(_d(old.get("metadata")).get("generation", 1)) + 1
            if new == old:
                return old  # a no-op: nothing is written, resourceVersion stays
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._put(kind.plural, new, old)
        return new

    def _put(self, plural: str, obj: dict, old: dict | None) -> None:
        name = obj["metadata"]["name"]
        store = self._store(plural)
        if old is None or name not in store:
            if plural == "rayjobs":
                script = self.scripts.get(name) or self.scripts.get("*") or JobScript()
                store[name] = _Job(obj, script)
            elif plural == "rayservices":
                store[name] = _Service(obj)
            else:
                t = self._now()
                store[name] = _Cluster(obj, t, t + self.cluster_ready_s)
            self._event(plural, name)  # a create event passes every predicate
            return
        record = store[name]
        record.obj = obj
        if plural == "rayjobs":
            self._event(plural, name)  # For(&RayJob{}) without predicates: job L866
        elif plural == "rayservices" and _watched_change(old, obj):
            self._event(plural, name)  # generation/labels/annotations predicates: svc L834-L838

    def _event(self, plural: str, name: str) -> None:
        record = self._store(plural).get(name)
        if isinstance(record, (_Job, _Service)):
            record.ctl.event(self._now())

    def _now(self) -> float:
        """The time of the reconcile being run, else the clock's."""
        return self.clock() if self._t is None else self._t

    def _time(self) -> str:
        return _ts(self._now())

    # ======================================================== the API server: the requests

    def create_namespaced_custom_object(
        self,
        group,
        version,
        namespace,
        plural,
        body,
        field_manager=None,
        field_validation=None,
        **kwargs,
    ):
        """POST: an Update by the client's field manager [doc: Server-Side Apply, "Comparison
        with Update"]; status is dropped (a subresource); 409 AlreadyExists for a taken name."""
        self._sync()
        kind = self._kind(plural)
        name = _d(body.get("metadata")).get("name", "")
        if plural == "rayjobs":
            self.created.append(copy.deepcopy(body))
        if self._live(plural, name) is not None:
            raise _api_error(
                409,
                f'{plural}.{GROUP} "{name}" already exists',
                {"name": name, "group": GROUP, "kind": plural, "reason": "AlreadyExists"},
            )
        self._unknown(kind, body, field_validation, name)
        new = copy.deepcopy(body)
        new.pop("status", None)
        new.setdefault("metadata", {})["namespace"] = namespace
        new = _default(new, kind.schema)
        try:
            stored = ssa.update(
                None, new, field_manager or DEFAULT_CLIENT_MANAGER, kind.types, now=self._time()
            )
        except ssa.Invalid as err:
            raise _api_error(err.code, err.message) from None
        return copy.deepcopy(self._commit(kind, None, stored))

    def apply(
        self,
        body: dict[str, Any],
        manager: str,
        force: bool = False,
        field_validation: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply (`kubectl apply --server-side`, PATCH application/apply-patch+yaml)
        [doc: Server-Side Apply]: ssa.apply, then pruning, defaulting and validation."""
        self._sync()
        plural = PLURALS.get(str(body.get("kind")), "")
        kind = self._kind(plural)
        name = _d(body.get("metadata")).get("name", "")
        live = self._live(plural, name)
        self._unknown(kind, body, field_validation, name)
        config = copy.deepcopy(body)
        if live is None:
            config.setdefault("metadata", {}).setdefault("namespace", namespace or "default")
        try:
            merged = ssa.apply(
                copy.deepcopy(live), config, manager, kind.types, force, now=self._time()
            )
        except ssa.Conflict as err:
            raise _api_error(
                409,
                err.message,
                {"name": name, "group": GROUP, "kind": plural, "causes": err.causes},
            ) from None
        except ssa.Invalid as err:
            raise _api_error(err.code, err.message) from None
        return copy.deepcopy(self._commit(kind, copy.deepcopy(live) if live else None, merged))

    def patch_namespaced_custom_object(
        self,
        group,
        version,
        namespace,
        plural,
        name,
        body,
        field_manager=None,
        field_validation=None,
        **kwargs,
    ):
        """The Python client's patch: application/merge-patch+json (RFC 7386), an Update by
        `field_manager` [doc: Server-Side Apply, "Comparison with Update"]."""
        self._sync()
        kind = self._kind(plural)
        live = self._live(plural, name)
        if live is None:
            raise self._not_found(plural, name)
        self._unknown(kind, body, field_validation, name)
        try:
            new = ssa.merge_patch(
                copy.deepcopy(live),
                body,
                field_manager or DEFAULT_CLIENT_MANAGER,
                kind.types,
                now=self._time(),
            )
        except ssa.Invalid as err:
            raise _api_error(err.code, err.message) from None
        return copy.deepcopy(self._commit(kind, copy.deepcopy(live), new))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        if self.fail_next_get is not None:
            exc, self.fail_next_get = self.fail_next_get, None
            raise exc
        if plural == "rayjobs" and name in self.templates:
            return copy.deepcopy(self.templates[name])
        self._sync()
        self._kind(plural)
        live = self._live(plural, name)
        if live is None:
            raise self._not_found(plural, name)
        out = copy.deepcopy(live)
        if plural == "rayclusters":
            out["status"] = self.clusters[name].status(self.clock())
        return out

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
        self._sync()
        self._kind(plural)
        items = [
            self.get_namespaced_custom_object(group, version, namespace, plural, n)
            for n in list(self._store(plural))
            if self._live(plural, n) is not None
        ]
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": f"{KINDS[plural]}List",
            "items": items,
            "metadata": {"resourceVersion": str(self._rv)},
        }

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        """DELETE: an object with finalizers gets a deletionTimestamp and goes when its
        controller removes them (RayJob: job L112-L139; RayService: svc L132-L144)."""
        self._sync()
        kind = self._kind(plural)
        self.deleted.append(name)
        live = self._live(plural, name)
        if live is None:
            raise self._not_found(plural, name)
        t = self.clock()
        if plural == "rayclusters":
            self._delete_cluster(self.clusters[name], t)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if not _l(_d(live.get("metadata")).get("finalizers")):
            self._remove(plural, name, t)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        new = copy.deepcopy(live)
        meta = new["metadata"]
        meta["deletionTimestamp"] = _ts(t)
        meta["generation"] = int(meta.get("generation", 1)) + 1  # rest.BeforeDelete does so
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._store(kind.plural)[name].obj = new
        self._event(plural, name)  # an update event that passes the generation predicate
        return copy.deepcopy(new)

    def _remove(self, plural: str, name: str, t: float) -> None:
        """The object is gone; its owned objects are garbage-collected (ownerReferences)."""
        self._store(plural).pop(name, None)
        for cluster in self.clusters.values():
            if cluster.owner == (plural, name):
                self._delete_cluster(cluster, t)

    # ---------------------------------------------------------- CoreV1Api: submitter pods

    def list_namespaced_pod(self, namespace, label_selector="", **kwargs):
        """The submitter Job's pods (`job-name=<RayJob name>`): only the current Job's; a
        deleted Job's pods went with it."""
        self._sync()
        t = self.clock()
        name = label_selector.removeprefix("job-name=")
        job = self.jobs.get(name)
        pods = job.submitter.pods_at(t) if job and job.submitter else []
        return SimpleNamespace(
            items=[
                SimpleNamespace(
                    metadata=SimpleNamespace(
                        name=p.name,
                        namespace=namespace,
                        creation_timestamp=EPOCH + timedelta(seconds=p.created_at),
                    )
                )
                for p in pods
            ]
        )

    def read_namespaced_pod_log(self, name, namespace, tail_lines=None, **kwargs):
        self._sync()
        t = self.clock()
        for job in self.jobs.values():
            for pod in job.submitter.pods_at(t) if job.submitter else []:
                if pod.name == name:
                    lines = pod.logs.splitlines(keepends=True)
                    return "".join(lines[-tail_lines:] if tail_lines else lines)
        raise _api_error(404, f'pods "{name}" not found')

    # ============================================================ the operator: the clock

    def _sync(self) -> None:
        """Run every controller up to now (each object in its own time order). Requests the
        operator itself sends while reconciling do not sync again."""
        if self._t is not None:
            return
        now = self.clock()
        try:
            for name in list(self.jobs):
                job = self.jobs.get(name)
                if job is not None:
                    job.ctl.run(
                        now, functools.partial(self._at, reconcile=self._reconcile_job, record=job)
                    )
            for name in list(self.services):
                svc = self.services.get(name)
                if svc is not None:
                    svc.ctl.run(
                        now,
                        functools.partial(self._at, reconcile=self._reconcile_service, record=svc),
                    )
        finally:
            self._t = None
        for name, cluster in list(self.clusters.items()):
            if not cluster.exists(now):
                del self.clusters[name]

    def _at(
        self, t: float, reconcile: Callable[[Any, float], float | None], record: Any
    ) -> float | None:
        self._t = t
        try:
            return reconcile(record, t)
        except _NoUpdate as skip:
            return skip.requeue

    def _operator_update(self, plural: str, name: str, mutate: Callable[[dict], None]) -> dict:
        """r.Update by the operator (manager kuberay-operator, operation Update)."""
        kind = self.kinds[plural]
        live = self._store(plural)[name].obj
        new = copy.deepcopy(live)
        mutate(new)
        stored = ssa.update(copy.deepcopy(live), new, OPERATOR, kind.types, now=self._time())
        return self._commit(kind, copy.deepcopy(live), stored)

    def _write_status(self, plural: str, name: str, status: dict) -> None:
        """r.Status().Update: the status subresource (not validated, no managedFields entry)."""
        record = self._store(plural)[name]
        if record.obj.get("status") == status:
            return
        obj = copy.deepcopy(record.obj)
        obj["status"] = copy.deepcopy(status)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        record.obj = obj
        if plural == "rayjobs":
            record.ctl.event(self._now())  # the RayJob controller sees its own status writes

    def _create_cluster(
        self,
        owner: tuple[str, str],
        name: str,
        spec: dict,
        labels: dict,
        annotations: dict,
        ready_s: float,
        t: float,
    ) -> _Cluster:
        """r.Create of a RayCluster owned by a RayJob/RayService (validated by the API server)."""
        owner_obj = self._store(owner[0])[owner[1]].obj
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RayCluster",
            "metadata": {
                "name": name,
                "namespace": owner_obj["metadata"].get("namespace", "default"),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": KINDS[owner[0]],
                        "name": owner[1],
                        "uid": owner_obj["metadata"].get("uid", ""),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": copy.deepcopy(spec),
        }
        try:
            self.create_namespaced_custom_object(
                GROUP,
                VERSION,
                body["metadata"]["namespace"],
                "rayclusters",
                body,
                field_manager=OPERATOR,
            )
        except ApiException as exc:
            raise _ReconcileError(str(exc)) from exc
        cluster = self.clusters[name]
        cluster.owner, cluster.created_at, cluster.ready_at = owner, t, t + ready_s
        ctl = self._store(owner[0])[owner[1]].ctl
        ctl.event(t)  # Owns(&RayCluster{}): the create event
        ctl.event(cluster.ready_at)  # ... and the status change when its head pod is ready
        return cluster

    def _delete_cluster(self, cluster: _Cluster, t: float) -> None:
        if cluster.deleted_at is not None:
            return
        cluster.deleted_at, cluster.gone_at = t, t + self.delete_s
        for ray_job in cluster.ray_jobs.values():
            if ray_job.stopped_at is None:
                ray_job.stopped_at = t
        if cluster.owner and cluster.owner[1] in self._store(cluster.owner[0]):
            ctl = self._store(cluster.owner[0])[cluster.owner[1]].ctl
            ctl.event(t)
            ctl.event(cluster.gone_at)

    def _cluster_at(self, name: str, t: float) -> _Cluster | None:
        cluster = self.clusters.get(name) if name else None
        return cluster if cluster is not None and cluster.exists(t) else None

    # ===================================================================== RayJob

    def _reconcile_job(self, job: _Job, t: float) -> float | None:
        """Reconcile, job L89-L462."""
        name = job.obj["metadata"]["name"]
        if self.jobs.get(name) is not job:
            return None
        obj = job.obj
        spec = obj["spec"]
        if obj["metadata"].get("deletionTimestamp"):  # job L112-L139
            if not _is_terminal(_d(obj.get("status")).get("jobStatus", "")):
                self._stop_ray_job(job, t)
            self._operator_update(
                "rayjobs",
                name,
                lambda o: o["metadata"].update(
                    finalizers=[
                        f for f in o["metadata"].get("finalizers", []) if f != RAYJOB_FINALIZER
                    ]
                ),
            )
            if not self.jobs[name].obj["metadata"].get("finalizers"):
                self._remove("rayjobs", name, t)
                if job.submitter:
                    job.submitter.gone_at = t
                return None
            return RAYJOB_REQUEUE_S
        original = copy.deepcopy(obj.get("status") or {})
        status = copy.deepcopy(original)
        err = admission.validate_rayjob({**obj, "status": status})  # job L145
        if err:  # job L147-L162
            status.update(
                jobDeploymentStatus="ValidationFailed", reason="ValidationFailed", message=err
            )
            self._update_job_status(job, original, status, t)
            return None
        mode = spec.get("submissionMode") or "K8sJobMode"
        if mode != "K8sJobMode":
            raise NotImplementedError(
                f"RayJob {name}: submissionMode {mode} is not modelled (K8sJobMode only)"
            )
        phase = status.get("jobDeploymentStatus", "")
        if phase == "":  # New, job L166-L178
            if RAYJOB_FINALIZER not in _l(obj["metadata"].get("finalizers")):
                self._operator_update(
                    "rayjobs",
                    name,
                    lambda o: o["metadata"].setdefault("finalizers", []).append(RAYJOB_FINALIZER),
                )
            self._init_job_status(job, status, t)
        elif phase == "Initializing":  # job L179-L236
            result = self._job_initializing(job, status, t)
            if result is not None:
                return result
        elif phase == "Running":  # job L249-L365
            result = self._job_running(job, status, t)
            if result is not None:
                return result
        elif phase in ("Suspending", "Retrying"):  # job L366-L410
            cluster_gone = self._delete_job_cluster(job, status, t)
            submitter_gone = self._delete_submitter(job, t)
            if not (cluster_gone and submitter_gone):
                return RAYJOB_REQUEUE_S
            for key in (
                "rayClusterStatus",
                "rayClusterName",
                "dashboardURL",
                "jobId",
                "message",
                "reason",
                "rayJobInfo",
                "jobStatusCheckFailureStartTime",
                "jobStatus",
            ):
                status.pop(key, None)
            if phase == "Suspending":
                status["jobDeploymentStatus"] = "Suspended"
            else:
                status["jobDeploymentStatus"] = ""
                job.attempt += 1
        elif phase == "Suspended":  # job L411-L419
            if spec.get("suspend"):
                return None
            status.pop("jobStatus", None)
            status["jobDeploymentStatus"] = ""
        elif phase in ("Complete", "Failed"):  # job L420-L447
            return self._job_finished(job, status, t)
        else:
            return RAYJOB_REQUEUE_S
        self._check_backoff_limit(status, spec.get("backoffLimit"))  # job L452
        self._update_job_status(job, original, status, t)  # job L456
        return RAYJOB_REQUEUE_S

    def _init_job_status(self, job: _Job, status: dict, t: float) -> None:
        """initRayJobStatusIfNeed, job L887-L917 (always due here: jobStatus is "" at New)."""
        spec, name = job.obj["spec"], job.obj["metadata"]["name"]
        if not status.get("jobId"):
            status["jobId"] = spec.get("jobId") or f"{name}-{self._suffix()}"
        if not status.get("rayClusterName"):
            selected = _d(spec.get("clusterSelector")).get(admission.RAYJOB_CLUSTER_SELECTOR_KEY)
            status["rayClusterName"] = selected or f"{name}-{self._suffix()}"
        status.pop("jobStatus", None)  # JobStatusNew is "" (rayjob_types.go L18), omitted
        status["jobDeploymentStatus"] = "Initializing"
        status["startTime"] = _ts(t)

    def _deadline_checks(self, job: _Job, status: dict, t: float, pre_running: bool) -> bool:
        spec = job.obj["spec"]
        start = _seconds(status.get("startTime"))
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and t >= start + deadline:  # job L1234-L1245
            status.update(
                jobDeploymentStatus="Failed",
                reason="DeadlineExceeded",
                message=(
                    "The RayJob has passed the activeDeadlineSeconds. StartTime: "
                    f"{_go_time(status.get('startTime'))}. ActiveDeadlineSeconds: {deadline}"
                ),
            )
            return True
        limit = spec.get("preRunningDeadlineSeconds")
        if pre_running and limit is not None and t >= start + limit:  # job L1247-L1261
            status.update(
                jobDeploymentStatus="Failed",
                reason="PreRunningDeadlineExceeded",
                message=(
                    "The RayJob has passed the preRunningDeadlineSeconds. StartTime: "
                    f"{_go_time(status.get('startTime'))}. PreRunningDeadlineSeconds: {limit}"
                ),
            )
            return True
        return False

    def _job_cluster(self, job: _Job, status: dict, t: float) -> _Cluster:
        """getOrCreateRayClusterInstance, job L947-L995."""
        spec, name = job.obj["spec"], job.obj["metadata"]["name"]
        cluster_name = status.get("rayClusterName", "")
        cluster = self._cluster_at(cluster_name, t)
        if cluster is not None and not cluster.deleting(t):
            return cluster
        if cluster is not None:  # still being deleted: Get succeeds, the spec check passes
            return cluster
        if _d(spec.get("clusterSelector")):
            # "clusterSelector mode is enabled, but RayCluster ... is not found" (job L956-L959)
            raise _ReconcileError(f"RayCluster {cluster_name} not found")
        labels = {
            **_d(job.obj["metadata"].get("labels")),
            "ray.io/originated-from-cr-name": name,
            "ray.io/originated-from-crd": "RayJob",
        }
        ready_s = job.script.attempt(job.attempt).cluster_ready_s
        return self._create_cluster(
            ("rayjobs", name),
            cluster_name,
            spec["rayClusterSpec"],
            labels,
            {},
            job.script.cluster_ready_s if ready_s is None else ready_s,
            t,
        )

    def _job_initializing(self, job: _Job, status: dict, t: float) -> float | None:
        spec = job.obj["spec"]
        if spec.get("suspend"):  # updateStatusToSuspendingIfNeeded, job L1043-L1060
            status["jobDeploymentStatus"] = "Suspending"
            return None
        if self._deadline_checks(job, status, t, pre_running=True):  # job L184-L190
            return None
        cluster = self._job_cluster(job, status, t)  # job L203
        if not status.get("dashboardURL"):  # job L208-L223
            if not cluster.ready(t):
                status["rayClusterStatus"] = cluster.status(t)
                return None
            ns = job.obj["metadata"].get("namespace", "default")
            status["dashboardURL"] = f"{cluster.name}-head-svc.{ns}.svc.cluster.local:8265"
        if job.submitter is None or not job.submitter.exists(
            t
        ):  # createK8sJobIfNeed, job L230-L234
            self._create_submitter(job, cluster, status, t)
        status["jobDeploymentStatus"] = "Running"  # job L236
        return None

    def _create_submitter(self, job: _Job, cluster: _Cluster, status: dict, t: float) -> None:
        """The submitter K8s Job (job L716-L756) and what its pods do (common/job.go L90-L212)."""
        spec, name = job.obj["spec"], job.obj["metadata"]["name"]
        script, attempt = job.script, job.script.attempt(job.attempt)
        limit = _d(spec.get("submitterConfig")).get("backoffLimit")
        limit = 2 if limit is None else int(limit)
        pods: list[_Pod] = []
        sub = _SubmitterJob(name, t, pods)
        if attempt.submission_fails:
            start = t
            for i in range(limit + 1):  # the Job controller's pod back-off: 10 s, 20 s, ... 6 min
                end = start + script.submit_s
                pods.append(_Pod(f"{name}-{self._suffix()}", start, end, attempt.logs))
                start = end + min(10.0 * 2**i, 360.0)
            sub.condition, sub.condition_at = "Failed", pods[-1].ended_at
            sub.reason, sub.message = (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        else:
            sub.submits_at = t + script.submit_s
            ray_job = _RayJob(status["jobId"], sub.submits_at, attempt, script.pending_s)
            cluster.ray_jobs[status["jobId"]] = ray_job
            lost = attempt.dashboard_lost_after_s
            if lost is not None and sub.submits_at + lost < ray_job.ends_at:
                # `ray job logs --follow` loses the dashboard: the pod fails; the next one waits
                # in its "until the dashboard is healthy" loop (job.go L135-L150) for good.
                failed_at = sub.submits_at + lost
                pods.append(_Pod(f"{name}-{self._suffix()}", t, failed_at, attempt.logs))
                url = status["dashboardURL"]
                waiting = f"Waiting for Ray Dashboard GCS to become healthy at http://{url} ...\n"
                pods.append(_Pod(f"{name}-{self._suffix()}", failed_at + 10.0, None, waiting))
            else:
                done = ray_job.ends_at + script.submitter_exit_s
                pods.append(_Pod(f"{name}-{self._suffix()}", t, done, attempt.logs))
                sub.condition, sub.condition_at = "Complete", done
        job.submitter = sub
        for p in pods:  # Owns(&batchv1.Job{}): the Job's status follows its pods
            job.ctl.event(p.created_at)
            if p.ended_at is not None:
                job.ctl.event(p.ended_at)
        job.ctl.event(t)

    def _job_running(self, job: _Job, status: dict, t: float) -> float | None:
        spec = job.obj["spec"]
        if spec.get("suspend"):  # job L250-L252
            status["jobDeploymentStatus"] = "Suspending"
            return None
        if self._deadline_checks(job, status, t, pre_running=False):  # job L254
            return None
        end = _d(status.get("rayJobInfo")).get("endTime")
        if (
            _is_terminal(status.get("jobStatus", ""))
            and end
            and t >= _seconds(end) + TRANSITION_GRACE_PERIOD_S
        ):
            status["jobDeploymentStatus"] = (
                "Failed" if status.get("jobStatus") == "FAILED" else "Complete"
            )
            status["reason"] = "JobDeploymentStatusTransitionGracePeriodExceeded"  # job L1366-L1394
            status["message"] = (
                "JobDeploymentStatus does not transition to Complete or Failed within the "
                "grace period after JobStatus reaches a terminal state."
            )
            return None
        check_start = status.get("jobStatusCheckFailureStartTime")
        if check_start and t >= _seconds(check_start) + STATUS_CHECK_TIMEOUT_S:  # job L1336-L1354
            status.update(
                jobDeploymentStatus="Failed",
                reason="JobStatusCheckTimeoutExceeded",
                message=(
                    f"Job status checks have been failing since {_go_datetime(check_start)}; "
                    f"exceeded timeout of {int(STATUS_CHECK_TIMEOUT_S)}s"
                ),
            )
            return None
        cluster = self._job_cluster(job, status, t)  # job L269
        # checkSubmitterAndUpdateStatusIfNeeded, K8sJobMode (job L1138-L1174)
        sub = job.submitter
        if sub is None or not sub.exists(t):
            raise _ReconcileError("Failed to get the submitter Kubernetes Job")
        condition, finished_at = sub.finished(t)
        if condition == "Failed":
            status["jobDeploymentStatus"] = "Failed"
            if status.get("jobStatus") == "FAILED":
                status["reason"] = "AppFailed"
            else:
                status["reason"] = "SubmissionFailed"
                status["message"] = (
                    f"Job submission has failed. Reason: {sub.reason}. Message: {sub.message}"
                )
        if finished_at is not None and t >= finished_at + SUBMITTER_FINISHED_TIMEOUT_S:
            # checkSubmitterFinishedTimeoutAndUpdateStatusIfNeeded, job L286, L1263-L1286
            status.update(
                jobStatus="FAILED",
                jobDeploymentStatus="Failed",
                reason="JobDeploymentStatusTransitionGracePeriodExceeded",
                message=f"The RayJob submitter finished at {_go_datetime(_ts(finished_at))} "
                "but the ray job did not reach terminal state within 30s",
            )
            return None
        if condition == "Failed":
            return None
        # GetJobInfo, job L296-L326
        ray_job = cluster.ray_jobs.get(status.get("jobId", ""))
        attempt = job.script.attempt(job.attempt)
        if (
            ray_job is not None
            and attempt.dashboard_lost_after_s is not None
            and (t >= ray_job.submitted_at + attempt.dashboard_lost_after_s)
        ):
            if not status.get("jobStatusCheckFailureStartTime"):  # recordJobStatusCheckFailure
                status["jobStatusCheckFailureStartTime"] = _ts(t)
                return None
            raise _NoUpdate(RAYJOB_REQUEUE_S)
        if ray_job is None or t < ray_job.submitted_at:  # BadRequest: no such job
            if finished_at is not None:
                status.update(
                    jobDeploymentStatus="Failed",
                    reason="AppFailed",
                    message="Submitter completed but Ray job not found in RayCluster.",
                )
                return None
            raise _NoUpdate(RAYJOB_REQUEUE_S)
        status.pop("jobStatusCheckFailureStartTime", None)  # job L329
        info = ray_job.info(t)
        terminal = _is_terminal(info["status"]) and finished_at is not None  # job L336-L341
        deployment, reason = "Running", ""
        if terminal:
            deployment = "Failed" if info["status"] == "FAILED" else "Complete"
            reason = "AppFailed" if info["status"] == "FAILED" else ""
        status["rayClusterStatus"] = cluster.status(t)
        status["jobStatus"] = info["status"]
        status["jobDeploymentStatus"] = deployment
        if reason:
            status["reason"] = reason
        else:
            status.pop("reason", None)
        status["message"] = info["message"]
        ray_info = status.setdefault("rayJobInfo", {})
        if info["start"] is not None:
            ray_info["startTime"] = _ts(info["start"])
        if info["end"] is not None:
            ray_info["endTime"] = _ts(info["end"])
        return None

    def _check_backoff_limit(self, status: dict, limit: int | None) -> None:
        """checkBackoffLimitAndUpdateStatusIfNeeded, job L518-L557."""
        failed, succeeded = int(status.get("failed", 0)), int(status.get("succeeded", 0))
        if status.get("jobDeploymentStatus") == "Failed":
            failed += 1
        if (
            status.get("jobStatus") == "SUCCEEDED"
            and status.get("jobDeploymentStatus") == "Complete"
        ):
            succeeded += 1
        status["failed"], status["succeeded"] = failed, succeeded
        if (
            status.get("jobDeploymentStatus") == "Failed"
            and limit is not None
            and failed < limit + 1
        ):
            if status.get("reason") in ("DeadlineExceeded", "JobStatusCheckTimeoutExceeded"):
                return
            status["jobDeploymentStatus"] = "Retrying"

    def _update_job_status(self, job: _Job, old: dict, new: dict, t: float) -> None:
        """updateRayJobStatus, job L919-L945: written only when a state field changed."""
        changed = (
            old.get("jobStatus", "") != new.get("jobStatus", "")
            or old.get("jobDeploymentStatus", "") != new.get("jobDeploymentStatus", "")
            or _d(old.get("rayClusterStatus")) != _d(new.get("rayClusterStatus"))
            or old.get("jobStatusCheckFailureStartTime")
            != new.get("jobStatusCheckFailureStartTime")
        )
        if not changed:
            return
        if new.get("jobDeploymentStatus") in ("Complete", "Failed"):
            new["endTime"] = _ts(t)  # IsJobDeploymentTerminal (rayjob_types.go L61-L65)
        self._write_status("rayjobs", job.obj["metadata"]["name"], new)

    def _job_finished(self, job: _Job, status: dict, t: float) -> float | None:
        """Complete/Failed, job L420-L447: only the cleanup remains."""
        spec = job.obj["spec"]
        if _d(spec.get("clusterSelector")) or spec.get("deletionStrategy") is not None:
            return None  # deletionStrategy's cleanup is out of scope (module docstring)
        if spec.get("shutdownAfterJobFinishes"):  # handleShutdownAfterJobFinishes, job L1515-L1556
            due = _seconds(status.get("endTime")) + int(spec.get("ttlSecondsAfterFinished") or 0)
            if due > t:
                return due - t
            self._delete_job_cluster(job, status, t)
        return None

    def _delete_job_cluster(self, job: _Job, status: dict, t: float) -> bool:
        """deleteClusterResources, job L798-L834: True once the cluster is gone."""
        if _d(job.obj["spec"].get("clusterSelector")):
            return True
        cluster = self._cluster_at(status.get("rayClusterName", ""), t)
        if cluster is None:
            return True
        self._delete_cluster(cluster, t)
        return False

    def _delete_submitter(self, job: _Job, t: float) -> bool:
        """deleteSubmitterJob, job L759-L795: True once the Job is gone."""
        sub = job.submitter
        if sub is None or not sub.exists(t):
            return True
        if sub.deleted_at is None:
            sub.deleted_at, sub.gone_at = t, t + self.delete_s
            job.ctl.event(sub.gone_at)
        return False

    def _stop_ray_job(self, job: _Job, t: float) -> None:
        status = _d(job.obj.get("status"))
        cluster = self._cluster_at(status.get("rayClusterName", ""), t)
        if cluster and status.get("jobId") in cluster.ray_jobs:
            cluster.ray_jobs[status["jobId"]].stopped_at = t

    # =================================================================== RayService

    def _reconcile_service(self, svc: _Service, t: float) -> float | None:
        """Reconcile, svc L112-L331."""
        name = svc.obj["metadata"]["name"]
        if self.services.get(name) is not svc:
            return None
        obj = svc.obj
        original = copy.deepcopy(obj.get("status") or {})
        status = copy.deepcopy(original)
        active_name = _d(status.get("activeServiceStatus")).get("rayClusterName", "")
        pending_name = _d(status.get("pendingServiceStatus")).get("rayClusterName", "")
        for cluster_name in list(svc.serve_cache):  # cleanUpServeConfigCache, svc L1329-L1349
            if cluster_name not in (active_name, pending_name):
                del svc.serve_cache[cluster_name]
        deleting = bool(obj["metadata"].get("deletionTimestamp"))
        to_clean = self._clean_up_clusters(svc, status, t, deleting)  # svc L127
        if deleting:  # svc L132-L144
            if not to_clean:
                self._operator_update(
                    "rayservices",
                    name,
                    lambda o: o["metadata"].update(
                        finalizers=[
                            f
                            for f in o["metadata"].get("finalizers", [])
                            if f != RAYSERVICE_FINALIZER
                        ]
                    ),
                )
                if not self.services[name].obj["metadata"].get("finalizers"):
                    self._remove("rayservices", name, t)
                return None
            return RAYSERVICE_REQUEUE_S
        if RAYSERVICE_FINALIZER not in _l(obj["metadata"].get("finalizers")):  # svc L146-L154
            self._operator_update(
                "rayservices",
                name,
                lambda o: o["metadata"].setdefault("finalizers", []).append(RAYSERVICE_FINALIZER),
            )
            return RAYSERVICE_REQUEUE_S
        err = admission.validate_rayservice(obj)  # svc L157
        if err:  # svc L159-L171
            _set_condition(status, "Ready", "False", "ValidationFailed", err, t)
            status["lastUpdateTime"] = _ts(t)
            self._write_status("rayservices", name, status)
            return None
        spec = obj["spec"]
        if spec.get("suspend"):
            raise NotImplementedError(
                f"RayService {name}: spec.suspend (handleSuspend svc L173) is not modelled"
            )
        if admission.INITIALIZING_TIMEOUT_ANNOTATION in _d(obj["metadata"].get("annotations")):
            raise NotImplementedError(
                f"RayService {name}: {admission.INITIALIZING_TIMEOUT_ANNOTATION} is not modelled"
            )
        if admission.is_incremental_upgrade_enabled(spec, admission.FEATURE_GATE_DEFAULTS):
            raise NotImplementedError(
                f"RayService {name}: NewClusterWithIncrementalUpgrade is not modelled"
            )
        active, pending = self._reconcile_ray_clusters(svc, status, t)  # svc L199
        for cluster in (active, pending):  # updateHeadPodServeLabel, svc L222-L227
            if cluster is not None:
                cluster.head_serve_label = cluster.proxy_healthy(t)
        active_ready = pending_ready = False
        active_apps = pending_apps = None
        if pending is not None:  # svc L237-L242
            pending_ready, pending_apps = self._reconcile_serve(svc, pending, t)
        if (
            active is not None
            and pending is None
            and not self._should_prepare_new_cluster(svc, status, active, None, False)
        ):  # svc L243-L250
            active_ready, active_apps = self._reconcile_serve(svc, active, t)
        serving: str | None = None
        if pending_ready or active_ready:  # svc L284-L306
            target = pending if pending_ready else active
            assert target is not None
            serving = self._point_services_at(svc, target, t)
        self._calculate_status(svc, status, serving, active, pending, active_apps, pending_apps, t)
        if _inconsistent_service_statuses(original, status):  # svc L324-L329
            status["lastUpdateTime"] = _ts(t)
            self._write_status("rayservices", name, status)
        return RAYSERVICE_REQUEUE_S

    def _clean_up_clusters(self, svc: _Service, status: dict, t: float, deleting: bool) -> bool:
        """cleanUpRayClusterInstance, svc L1254-L1312."""
        name = svc.obj["metadata"]["name"]
        delay = svc.obj["spec"].get("rayClusterDeletionDelaySeconds")
        delay = RAYCLUSTER_DELETION_DELAY_S if delay is None else float(delay)
        keep = {
            _d(status.get("activeServiceStatus")).get("rayClusterName", ""),
            _d(status.get("pendingServiceStatus")).get("rayClusterName", ""),
        }
        to_clean = False
        for cluster in list(self.clusters.values()):
            if cluster.owner != ("rayservices", name) or not cluster.exists(t):
                continue
            if deleting or cluster.name not in keep:
                to_clean = True
                if deleting:
                    self._delete_cluster(cluster, t)
                elif cluster.name in svc.deletion_due:
                    if t > svc.deletion_due[cluster.name]:
                        self._delete_cluster(cluster, t)
                else:
                    svc.deletion_due[cluster.name] = t + delay
        return to_clean

    def _goal_spec(self, svc: _Service) -> dict:
        return _d(svc.obj["spec"].get("rayClusterConfig"))

    def _hash_equal(self, svc: _Service, cluster: _Cluster, partial: bool) -> bool:
        """isClusterSpecHashEqual, svc L1379-L1407."""
        annotations = _d(cluster.obj["metadata"].get("annotations"))
        goal = copy.deepcopy(self._goal_spec(svc))
        if not partial:
            return annotations.get(HASH_KEY) == cluster_hash(goal)
        try:
            groups = int(annotations.get(NUM_WORKER_GROUPS_KEY, ""))
        except ValueError:
            return True
        workers = _l(goal.get("workerGroupSpecs"))
        if len(workers) < groups:
            return annotations.get(HASH_KEY) == ""
        goal["workerGroupSpecs"] = workers[:groups]
        return annotations.get(HASH_KEY) == cluster_hash(goal)

    def _should_update_cluster(
        self, svc: _Service, status: dict, cluster: _Cluster | None, active: bool
    ) -> bool:
        """shouldUpdateCluster, svc L1351-L1377."""
        if cluster is None:
            return False
        if active:
            if _condition(status, "UpgradeInProgress").get("status") == "True":
                return False
            if (
                _d(cluster.obj["metadata"].get("annotations")).get(KUBERAY_VERSION_KEY)
                != KUBERAY_VERSION
            ):
                return True
        if self._hash_equal(svc, cluster, False):
            return False
        return self._hash_equal(svc, cluster, True)

    def _should_prepare_new_cluster(
        self,
        svc: _Service,
        status: dict,
        active: _Cluster | None,
        pending: _Cluster | None,
        pending_serving: bool,
    ) -> bool:
        """shouldPrepareNewCluster, svc L1409-L1437."""
        if pending_serving:
            return False
        if active is None and pending is None:
            return True
        cluster = pending or active
        assert cluster is not None
        if self._hash_equal(svc, cluster, False) or self._hash_equal(svc, cluster, True):
            return False
        # isZeroDowntimeUpgradeEnabled, svc L868-L896 (ENABLE_ZERO_DOWNTIME unset: true)
        kind = _d(svc.obj["spec"].get("upgradeStrategy")).get("type")
        return kind is None or kind in ("NewCluster", "NewClusterWithIncrementalUpgrade")

    def _cluster_annotations(self, svc: _Service) -> tuple[dict, dict]:
        """constructRayClusterForRayService's labels and annotations, svc L1504-L1521."""
        meta = svc.obj["metadata"]
        labels = {
            **_d(meta.get("labels")),
            "ray.io/originated-from-cr-name": meta["name"],
            "ray.io/originated-from-crd": "RayService",
        }
        goal = self._goal_spec(svc)
        annotations = {
            **_d(meta.get("annotations")),
            HASH_KEY: cluster_hash(goal),
            NUM_WORKER_GROUPS_KEY: str(len(_l(goal.get("workerGroupSpecs")))),
            KUBERAY_VERSION_KEY: KUBERAY_VERSION,
        }
        return labels, annotations

    def _reconcile_ray_clusters(
        self, svc: _Service, status: dict, t: float
    ) -> tuple[_Cluster | None, _Cluster | None]:
        """reconcileRayCluster, svc L1200-L1252."""
        name = svc.obj["metadata"]["name"]
        active = self._cluster_at(
            _d(status.get("activeServiceStatus")).get("rayClusterName", ""), t
        )
        pending_name = _d(status.get("pendingServiceStatus")).get("rayClusterName", "")
        pending = self._cluster_at(pending_name, t)
        if pending_name and pending is None:  # svc L1215-L1219
            labels, annotations = self._cluster_annotations(svc)
            pending = self._create_cluster(
                ("rayservices", name),
                pending_name,
                self._goal_spec(svc),
                labels,
                annotations,
                self.cluster_ready_s,
                t,
            )
            return active, pending
        for cluster, is_active in ((active, True), (pending, False)):  # svc L1221-L1249
            if cluster is not None and self._should_update_cluster(svc, status, cluster, is_active):
                labels, annotations = self._cluster_annotations(svc)
                suspend = cluster.obj["spec"].get("suspend")

                def mutate(
                    o: dict, labels=labels, annotations=annotations, suspend=suspend
                ) -> None:
                    o["spec"] = copy.deepcopy(self._goal_spec(svc))
                    if suspend is not None:
                        o["spec"]["suspend"] = (
                            suspend  # modifyRayCluster keeps Suspend, svc L1462-L1464
                        )
                    o["metadata"]["labels"], o["metadata"]["annotations"] = labels, annotations

                self._operator_update("rayclusters", cluster.name, mutate)
        return active, pending

    def _reconcile_serve(
        self, svc: _Service, cluster: _Cluster, t: float
    ) -> tuple[bool, dict | None]:
        """reconcileServe, svc L1987-L2072: the status is read before a changed config is sent."""
        if not cluster.ready(t):  # HeadPodReady, svc L1997-L2001
            return False, None
        cached = svc.serve_cache.get(cluster.name, "")  # svc L2043
        apps = self._app_statuses(cluster, t)  # getAndCheckServeStatus, svc L2044
        ready = bool(apps) and all(a.get("status") == "RUNNING" for a in apps.values())
        config = svc.obj["spec"].get("serveConfigV2") or ""
        if not cached or not apps or cached != config:  # checkIfNeedSubmitServeApplications
            try:
                doc = yaml.safe_load(config) if config else {}
            except yaml.YAMLError as exc:
                raise _ReconcileError(f"serveConfigV2: {exc}") from exc
            if not isinstance(doc, dict) and doc is not None:
                raise _ReconcileError("serveConfigV2 is not a mapping")
            self._submit_serve_config(cluster, config, t)  # updateServeDeployment, svc L1572-L1616
            if config:
                svc.serve_cache[cluster.name] = config
        return ready, apps

    def _submit_serve_config(self, cluster: _Cluster, config: str, t: float) -> None:
        """PUT /api/serve/applications/: Serve starts (proxies up) and (re)deploys the apps whose
        config changed; apps the config no longer names are deleted."""
        if cluster.serve_started_at is None:
            cluster.serve_started_at = t
        new = {}
        for app in _apps_of(config):
            name = str(app.get("name") or "default")  # DefaultServeAppName, constant.go L8
            text = json.dumps(app, sort_keys=True)
            old = cluster.apps.get(name)
            if old is not None and old.spec == text:
                new[name] = old
                continue
            fresh = _App(name, text, config, t)
            if old is not None:  # the old replicas keep serving while the new ones deploy
                fresh.ever_running, fresh.version = old.ever_running, old.version
            new[name] = fresh
        cluster.apps = new

    def _settle(self, app: _App, t: float) -> None:
        if not app.settled and t >= app.since + self.deploy_s:
            app.status, app.message = self.serve_outcome(app.config)
            app.settled = True
            if app.status == "RUNNING":  # the new config's replicas replace the old ones
                app.ever_running = True
                app.version = self._resolve(app)
        if app.status == "RUNNING" and app.version is None and app.ever_running:
            # Our app on an empty registry: it looks for the first champion and serves it.
            app.version = self._resolve(app)

    def _resolve(self, app: _App) -> str | None:
        spec = json.loads(app.spec)
        uri = _model_uri(spec)
        if "@" in uri:
            return self.registry.get(uri.split("@", 1)[1])
        return uri.rsplit("/", 1)[-1] or None

    def _app_statuses(self, cluster: _Cluster, t: float) -> dict[str, dict]:
        """GET /api/serve/applications/ as the RayService status records it (AppStatus)."""
        out = {}
        for app in cluster.apps.values():
            self._settle(app, t)
            deployments = {
                str(_d(d).get("name")): {
                    "status": {"RUNNING": "HEALTHY", "DEPLOYING": "UPDATING"}.get(
                        app.status, "UNHEALTHY"
                    )
                }
                for d in _l(json.loads(app.spec).get("deployments"))
                if _d(d).get("name")
            }
            entry: dict[str, Any] = {"status": app.status}
            if app.message:
                entry["message"] = app.message
            if deployments:
                entry["serveDeploymentStatuses"] = deployments
            out[app.name] = entry
        return out

    def _point_services_at(self, svc: _Service, cluster: _Cluster, t: float) -> str:
        """reconcileServicesToReadyCluster (svc L568-L579, L1927-L1983): create the head and
        Serve Services, or switch their selector to `cluster` (each an event: Owns(Service))."""
        name = svc.obj["metadata"]["name"]
        for service in (f"{name}-head-svc", f"{name}-serve-svc"):
            if self.k8s_services.get(service) != cluster.name:
                self.k8s_services[service] = cluster.name
                svc.ctl.event(t)
        return cluster.name

    def _serve_endpoints(self, svc: _Service, t: float) -> int:
        """Ready pods behind the Serve Service (calculateNumServeEndpointsFromSlices)."""
        target = self.k8s_services.get(f"{svc.obj['metadata']['name']}-serve-svc")
        cluster = self._cluster_at(target or "", t)
        if cluster is None or not cluster.ready(t):
            return 0
        count = (
            1
            if cluster.head_serve_label and not svc.obj["spec"].get("excludeHeadPodFromServeSvc")
            else 0
        )
        for group in _l(cluster.obj["spec"].get("workerGroupSpecs")):
            group = _d(group)
            if group.get("suspend"):
                continue
            replicas = max(int(group.get("replicas") or 0), int(group.get("minReplicas") or 0))
            if group.get("maxReplicas") is not None:
                replicas = min(replicas, int(group["maxReplicas"]))
            containers = _l(_d(_d(group.get("template")).get("spec")).get("containers"))
            probe = _d(_d(containers[0]).get("readinessProbe")) if containers else {}
            path = _d(probe.get("httpGet")).get("path")
            if probe and path != "/-/healthz":  # a probe of the app's own route
                ready = any(app.ever_running for app in cluster.apps.values())
            else:  # KubeRay's injected probe: the worker's Serve proxy
                ready = cluster.proxy_healthy(t)
            count += replicas if ready else 0
        return count

    def _calculate_status(
        self,
        svc: _Service,
        status: dict,
        serving: str | None,
        active: _Cluster | None,
        pending: _Cluster | None,
        active_apps: dict | None,
        pending_apps: dict | None,
        t: float,
    ) -> None:
        """calculateStatus, svc L643-L783 (blue/green upgrades)."""
        status["observedGeneration"] = svc.obj["metadata"]["generation"]  # svc L653
        active_status = status.setdefault("activeServiceStatus", {})
        pending_status = status.setdefault("pendingServiceStatus", {})
        active_status["rayClusterStatus"] = active.status(t) if active else {}
        pending_status["rayClusterStatus"] = pending.status(t) if pending else {}
        for part, apps in ((active_status, active_apps), (pending_status, pending_apps)):
            if apps:
                part["applicationStatuses"] = apps
            else:
                part.pop("applicationStatuses", None)
        pending_serving = False
        if serving is not None:  # reconcilePromotionAndServingStatus, svc L581-L641
            pending_name = pending_status.get("rayClusterName", "")
            active_name = active_status.get("rayClusterName", "")
            if serving not in (pending_name, active_name):
                raise AssertionError(
                    "clusterName from services is not equal to pendingCluster or activeCluster"
                )
            if active_name != serving:
                status["activeServiceStatus"], status["pendingServiceStatus"] = pending_status, {}
            pending_serving = serving == pending_name
        if self._should_prepare_new_cluster(
            svc, status, active, pending, pending_serving
        ):  # svc L719-L743
            status["pendingServiceStatus"] = {
                "rayClusterName": f"{svc.obj['metadata']['name']}-{self._suffix()}"
            }
        endpoints = self._serve_endpoints(svc, t)  # svc L745-L771
        if endpoints:
            status["numServeEndpoints"] = endpoints
        else:
            status.pop("numServeEndpoints", None)
        _calculate_conditions(status, t)  # svc L774
        if _condition(status, "Ready").get("status") == "True":  # svc L777-L780
            status["serviceStatus"] = "Running"
        else:
            status.pop("serviceStatus", None)
        for key in ("activeServiceStatus", "pendingServiceStatus"):
            status[key] = {k: v for k, v in status[key].items() if v not in ("", None)}

    def served(self, name: str) -> dict[str, Any]:
        """What GET /health through the RayService's Serve Service answers."""
        self._sync()
        t = self.clock()
        svc = self.services.get(name)
        if svc is None or self._serve_endpoints(svc, t) == 0:
            raise OSError("connection refused")
        cluster = self._cluster_at(self.k8s_services[f"{name}-serve-svc"], t)
        assert cluster is not None
        apps = [
            a for a in cluster.apps.values() if json.loads(a.spec).get("route_prefix", "/") == "/"
        ]
        app = apps[0] if apps else None
        if app is None or not app.ever_running:
            raise OSError("HTTP Error 404: Not Found")
        self._settle(app, t)
        if app.version is None:
            return {"status": "no-model", "model_version": None}
        return {"status": "ready", "model_version": app.version}


class _NoUpdate(Exception):
    """A reconcile path that returns RequeueAfter before the status update (job L309, L318,
    L325): the in-memory changes are dropped."""

    def __init__(self, requeue: float) -> None:
        super().__init__(requeue)
        self.requeue = requeue


# --------------------------------------------------------------------------- small pieces


def _seconds(stamp: Any) -> float:
    if not stamp:
        return 0.0
    return (
        datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - EPOCH
    ).total_seconds()


def _go_time(stamp: Any) -> str:
    """fmt's %v of a *metav1.Time (time.Time.String)."""
    return f"{_go_datetime(stamp)} +0000 UTC"


def _go_datetime(stamp: Any) -> str:
    """time.Time.Format(time.DateTime) of an RFC 3339 stamp."""
    return str(stamp).replace("T", " ").rstrip("Z")


def _is_terminal(job_status: str) -> bool:
    """IsJobTerminal, rayjob_types.go L36-L43."""
    return job_status in ("STOPPED", "SUCCEEDED", "FAILED")


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _watched_change(old: dict, new: dict) -> bool:
    """The RayService watch's predicates: generation, labels or annotations changed (or the
    deletion timestamp appeared, which is an update event every predicate lets through)."""
    om, nm = _d(old.get("metadata")), _d(new.get("metadata"))
    return any(
        om.get(k) != nm.get(k) for k in ("generation", "labels", "annotations", "deletionTimestamp")
    )


def _condition(status: dict, kind: str) -> dict:
    return next((c for c in _l(status.get("conditions")) if c.get("type") == kind), {})


def _set_condition(
    status: dict, kind: str, value: str, reason: str, message: str, t: float
) -> None:
    """setCondition (svc L820-L829) with meta.SetStatusCondition: the transition time moves
    only when the status does."""
    conditions = status.setdefault("conditions", [])
    entry = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": status.get("observedGeneration", 0),
    }
    for i, c in enumerate(conditions):
        if c.get("type") == kind:
            entry["lastTransitionTime"] = (
                c.get("lastTransitionTime") if c.get("status") == value else _ts(t)
            )
            conditions[i] = {
                k: entry[k]
                for k in (
                    "type",
                    "status",
                    "observedGeneration",
                    "lastTransitionTime",
                    "reason",
                    "message",
                )
            }
            return
    entry["lastTransitionTime"] = _ts(t)
    conditions.append(
        {
            k: entry[k]
            for k in (
                "type",
                "status",
                "observedGeneration",
                "lastTransitionTime",
                "reason",
                "message",
            )
        }
    )


def _calculate_conditions(status: dict, t: float) -> None:
    """calculateConditions, svc L785-L818."""
    if not status.get("conditions"):
        message = "RayService is initializing"
        _set_condition(status, "Ready", "False", "Initializing", message, t)
        _set_condition(status, "UpgradeInProgress", "False", "Initializing", message, t)
    if status.get("numServeEndpoints", 0) > 0:
        _set_condition(
            status,
            "Ready",
            "True",
            "NonZeroServeEndpoints",
            "Number of serve endpoints is greater than 0",
            t,
        )
    elif _condition(status, "Ready").get("status") == "True":
        _set_condition(
            status,
            "Ready",
            "False",
            "ZeroServeEndpoints",
            "Number of serve endpoints dropped to 0",
            t,
        )
    # else: markFailedOnInitializingTimeout (no annotation: nothing)
    active = _d(status.get("activeServiceStatus")).get("rayClusterName", "")
    pending = _d(status.get("pendingServiceStatus")).get("rayClusterName", "")
    if active and pending:
        _set_condition(
            status,
            "UpgradeInProgress",
            "True",
            "BothActivePendingClustersExist",
            "Both active and pending Ray clusters exist",
            t,
        )
    elif active:
        _set_condition(
            status,
            "UpgradeInProgress",
            "False",
            "NoPendingCluster",
            "Active Ray cluster exists and no pending Ray cluster",
            t,
        )
    else:
        cond = _condition(status, "UpgradeInProgress")
        if not cond or cond.get("reason") not in ("Initializing", "InitializingTimeout"):
            _set_condition(
                status,
                "UpgradeInProgress",
                "Unknown",
                "NoActiveCluster",
                "No active Ray cluster exists, and the RayService is not initializing. Please "
                "open a GitHub issue in the KubeRay repository.",
                t,
            )


def _inconsistent_service_statuses(old: dict, new: dict) -> bool:
    """InconsistentRayServiceStatuses, utils/consistency.go L36-L113 (incremental-upgrade
    fields aside)."""
    if old.get("serviceStatus", "") != new.get("serviceStatus", ""):
        return True
    if old.get("numServeEndpoints", 0) != new.get("numServeEndpoints", 0):
        return True
    if _l(old.get("conditions")) != _l(new.get("conditions")):
        return True
    for key in ("activeServiceStatus", "pendingServiceStatus"):
        o, n = _d(old.get(key)), _d(new.get(key))
        if o.get("rayClusterName", "") != n.get("rayClusterName", ""):
            return True
        oa, na = _d(o.get("applicationStatuses")), _d(n.get("applicationStatuses"))
        if oa.keys() != na.keys():
            return True
        for app, entry in na.items():
            before = oa[app]
            if (before.get("status"), before.get("message", "")) != (
                entry.get("status"),
                entry.get("message", ""),
            ):
                return True
            if _d(before.get("serveDeploymentStatuses")) != _d(
                entry.get("serveDeploymentStatuses")
            ):
                return True
    return False


class _ApiClient:
    """kubernetes.client.ApiClient.call_api, for the PATCH requests the launcher sends itself
    (server-side apply: the Python client has no apply method for custom objects)."""

    def __init__(self, fake: FakeKubeRay) -> None:
        self.fake = fake
        self.calls: list[dict[str, Any]] = []

    def call_api(
        self,
        path,
        method,
        path_params=None,
        query_params=None,
        header_params=None,
        body=None,
        **kwargs,
    ):
        params = dict(query_params or [])
        headers = dict(header_params or {})
        self.calls.append(
            {
                "path": path,
                "method": method,
                "params": params,
                "headers": header_params,
                "body": body,
            }
        )
        path_params = dict(path_params or {})
        if method != "PATCH":
            raise _api_error(400, f"the fake's call_api serves PATCH only, not {method}")
        content = headers.get("Content-Type", "")
        if isinstance(body, (str, bytes)):
            body = yaml.safe_load(body)
        if content == "application/apply-patch+yaml":
            if not params.get("fieldManager"):
                raise _api_error(400, "PATCH /apply: fieldManager is required for apply requests")
            if (body.get("metadata") or {}).get("name") != path_params.get("name"):
                raise _api_error(400, "the name of the object does not match the name on the URL")
            return self.fake.apply(
                body,
                params["fieldManager"],
                params.get("force") == "true",
                params.get("fieldValidation"),
                path_params.get("namespace"),
            )
        if content == "application/merge-patch+json":
            return self.fake.patch_namespaced_custom_object(
                path_params.get("group"),
                path_params.get("version"),
                path_params.get("namespace"),
                path_params.get("plural"),
                path_params.get("name"),
                body,
                field_manager=params.get("fieldManager"),
                field_validation=params.get("fieldValidation"),
            )
        raise _api_error(400, f"unsupported patch content type {content!r}")  # 415 in a real server
