"""KubeRay v1.7.0's admission rules (the operator's `validation.go`), ported for the fake operator.

The KubeRay operator checks every RayJob and RayService at the start of each reconcile and, on
a violation, marks it `ValidationFailed` (rayjob_controller.go L144-L162; rayservice_controller.go
L156-L171). The API server does not run these rules: they are the operator's. This module is a
standalone port of the rules, read (not copied) from

    github.com/ray-project/kuberay, tag v1.7.0, commit 59d663aeec13760646da3db9c1cf8cfe883e30b7,
    ray-operator/controllers/ray/utils/validation.go        (cited as L<n>)
    ray-operator/controllers/ray/utils/util.go              (cited as util.go L<n>)
    ray-operator/controllers/ray/utils/constant.go          (cited as constant.go L<n>)
    ray-operator/pkg/features/features.go                   (cited as features.go L<n>)
    ray-operator/controllers/ray/utils/dashboardclient/dashboard_httpclient.go L382-L388

and the Kubernetes helpers they call (k8s.io/apimachinery/pkg/util/validation: IsDNS1035Label,
IsDNS1123Label/Subdomain, IsQualifiedName, IsValidLabelValue with their exact messages;
k8s.io/apimachinery/pkg/util/version ParseGeneric/LessThan; Go's time.ParseDuration and
strconv.Atoi). It imports nothing from the application.

Each function returns the operator's error message (a str) or None, and stops at the first
violation as the Go code does, so the message is the one the operator writes into the status.

What is ported (the rules the fake needs for what the launcher and the tests send):
- ValidateRayJobMetadata (L533-L541), ValidateRayJobSpec (L543-L630) with
  validateDeletionConfiguration and its helpers (L751-L966), ValidateRayJobStatus (L526-L531);
- ValidateRayServiceMetadata (L632-L678), ValidateRayServiceSpec (L680-L715),
  ValidateClusterUpgradeOptions (L717-L749);
- ValidateRayClusterSpec (L103-L327) except four rule families (below), with
  validateRayGroupResources (L59-L69), validateRayGroupLabels (L71-L100),
  validateWorkerGroupIdleTimeout (L1005-L1027), validateWorkerGroupPriority (L1112-L1142).

What is NOT ported, and why (the project uses none of these features). `unported_inputs` names,
for an object, every input that only these rules read; when it finds none, the skipped rules
cannot fire (each of them returns nil on absent input), so the verdict of the port is the
operator's. The fake refuses (NotPorted) to judge an object that has such inputs and that the
ported rules accept, instead of admitting it silently:
- GCS fault tolerance and Redis (L153-L195, L328-L375): gcsFaultToleranceOptions, the
  ray.io/ft-enabled annotation, RAY_REDIS_ADDRESS / REDIS_USERNAME in the head container,
  rayStartParams['redis-username'];
- the history-server collector (L260-L282, L1029-L1110): historyServerOptions;
- network policies (L315-L321, L377-L444): networkPolicy;
- TLS (L323-L326, L446-L524): tlsOptions.
Not ported either: ValidateRayClusterMetadata/Status/UpgradeOptions (L23-L57, used by the
RayCluster controller, which the fake does not run) and ValidateRayCronJobSpec (L968-L1003: the
RayCronJob feature gate is off by default and the project has no RayCronJob).

Feature gates: v1.7.0's defaults (features.go L106-L116). The port reads two of them,
RayJobDeletionPolicy (L197, L763) and RayServiceIncrementalUpgrade (util.go L917-L923); a caller
may override those two. The other gates only guard unported rules.

Known differences from Go, none of which the fixture's cases or the fake's objects exercise:
- Go ranges over maps in random order; where a rule reports on several map entries (group
  labels, deletion-rule TTLs) the port goes in sorted order.
- runtimeEnvYAML is parsed with PyYAML (YAML 1.1), Go with sigs.k8s.io/yaml (go-yaml v2, also
  YAML 1.1); both must yield a mapping or null (RuntimeEnvType is map[string]any).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

KUBERAY_TAG = "v1.7.0"
# a git commit, not a secret
KUBERAY_COMMIT = "59d663aeec13760646da3db9c1cf8cfe883e30b7"  # pragma: allowlist secret

# features.go L106-L116: every gate with its v1.7.0 default.
FEATURE_GATE_DEFAULTS: dict[str, bool] = {
    "RayClusterStatusConditions": True,
    "RayJobDeletionPolicy": True,
    "RayMultiHostIndexing": True,
    "RayServiceIncrementalUpgrade": True,
    "RayCronJob": False,
    "SidecarSubmitterRestart": False,
    "RayClusterNetworkPolicy": False,
    "GCSFaultToleranceEmbeddedStorage": False,
    "RayClusterMTLS": False,
    "RayClusterHistoryServer": False,
    "KubernetesWAS": False,
}
# The gates a ported rule reads; the others only guard rules that are not ported.
MODELLED_GATES = frozenset({"RayJobDeletionPolicy", "RayServiceIncrementalUpgrade"})

# constant.go L375-L381
MAX_RAYCLUSTER_NAME_LENGTH = 53
MAX_RAYSERVICE_NAME_LENGTH = MAX_RAYCLUSTER_NAME_LENGTH - 6
MAX_RAYJOB_NAME_LENGTH = MAX_RAYCLUSTER_NAME_LENGTH - 6
RAYJOB_CLUSTER_SELECTOR_KEY = "ray.io/cluster"  # constant.go L85
RAY_CONTAINER_INDEX = 0  # constant.go L51
RAY_ENABLE_AUTOSCALER_V2 = "RAY_enable_autoscaler_v2"  # constant.go L191
KUBERAY_GEN_AUTOSCALER_START_CMD = "KUBERAY_GEN_AUTOSCALER_START_CMD"  # constant.go L158
RAY_FT_ENABLED_ANNOTATION = "ray.io/ft-enabled"  # constant.go L59
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"  # constant.go L82


class NotPorted(Exception):
    """The object has inputs that only unported rules read, and the ported rules accept it:
    the port cannot say what the operator would."""


def gates_with(overrides: Mapping[str, bool] | None = None) -> dict[str, bool]:
    """v1.7.0's defaults with `overrides`; overriding a gate no ported rule reads is an error
    (the caller would believe it changes something)."""
    gates = dict(FEATURE_GATE_DEFAULTS)
    for name, value in (overrides or {}).items():
        if name not in FEATURE_GATE_DEFAULTS:
            raise KeyError(f"unknown feature gate {name!r}")
        if name not in MODELLED_GATES and value != FEATURE_GATE_DEFAULTS[name]:
            raise NotPorted(f"feature gate {name}={value} guards rules that are not ported")
        gates[name] = value
    return gates


# ------------------------------------------------------------------ Kubernetes' own validators
# k8s.io/apimachinery v0.36.0 (KubeRay v1.7.0's go.mod): the DNS-1035/1123 label checks are
# pkg/util/validation/validation.go (MaxLenError says "characters"); label keys and values are
# pkg/api/validate/content/kube.go, whose MaxLenError says "bytes" (errors.go L40-L42) and
# whose lengths are Go's len(), i.e. UTF-8 bytes.

_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QNAME_FMT + ")?"
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """validation.RegexError: the message, the examples, the regex."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def _content_max_len_error(n: int) -> str:
    return f"must be no more than {n} bytes"


def _nbytes(value: str) -> int:
    return len(value.encode())


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not re.fullmatch(_DNS1035_FMT, value):
        errs.append(
            _regex_error(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character",
                _DNS1035_FMT,
                "my-name",
                "abc-123",
            )
        )
    return errs


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not re.fullmatch(_DNS1123_LABEL_FMT, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character",
                _DNS1123_LABEL_FMT,
                "my-name",
                "123-abc",
            )
        )
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """content.IsDNS1123Subdomain (dns.go L64-L100)."""
    errs = []
    if _nbytes(value) > 253:
        errs.append(_content_max_len_error(253))
    if not re.fullmatch(_DNS1123_SUBDOMAIN_FMT, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


def is_qualified_name(value: str) -> list[str]:
    """content.IsLabelKey (kube.go L43-L72)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")  # EmptyError()
        else:
            errs += ["prefix part " + m for m in is_dns1123_subdomain(prefix)]
    else:
        return [
            "a valid label key "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _nbytes(name) > 63:
        errs.append("name part " + _content_max_len_error(63))
    if not re.fullmatch(_QNAME_FMT, name):
        errs.append(
            "name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    """content.IsLabelValue (kube.go L85-L94)."""
    errs = []
    if _nbytes(value) > 63:
        errs.append(_content_max_len_error(63))
    if not re.fullmatch(_LABEL_VALUE_FMT, value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character",
                _LABEL_VALUE_FMT,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def _go_list(errs: list[str]) -> str:
    """fmt's %v of a []string."""
    return "[" + " ".join(errs) + "]"


class _VersionError(ValueError):
    pass


def parse_generic_version(text: str) -> list[int]:
    """k8s.io/apimachinery/pkg/util/version.ParseGeneric: two or more numeric fields, the first
    without a leading zero, then anything."""
    m = re.match(r"^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)$", text, re.S)
    if not m:
        raise _VersionError(f'could not parse "{text}" as version')
    components = m.group(1).split(".")
    if len(components) < 2:
        raise _VersionError(f'illegal version string "{text}"')
    if components[0].startswith("0") and components[0] != "0":
        raise _VersionError(
            f'illegal zero-prefixed version component "{components[0]}" in "{text}"'
        )
    return [int(c) for c in components]


def _version_less(v: list[int], other: list[int]) -> bool:
    """Version.LessThan for two generic versions (compareInternal walks v's components)."""
    for i, c in enumerate(v):
        if i >= len(other):
            if c != 0:
                return False
        elif other[i] < c:
            return False
        elif other[i] > c:
            return True
    return False


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5
    "μs": 1e-6,  # U+03BC
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def go_parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: [-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+ or "0"."""
    quoted = f'"{text}"'
    s, neg = text, False
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("time: invalid duration " + quoted)
    total = 0.0
    while s:
        if not (s[0] == "." or s[0].isdigit()):
            raise ValueError("time: invalid duration " + quoted)
        m = re.match(r"([0-9]*)(?:\.([0-9]*))?", s)
        assert m is not None
        pre, post = m.group(1), m.group(2)
        if not pre and not post:
            raise ValueError("time: invalid duration " + quoted)
        s = s[m.end() :]
        i = 0
        while i < len(s) and not (s[i] == "." or s[i].isdigit()):
            i += 1
        if i == 0:
            raise ValueError("time: missing unit in duration " + quoted)
        unit = s[:i]
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration ' + quoted)
        total += float(f"{pre or '0'}.{post or '0'}") * _DURATION_UNITS[unit]
        s = s[i:]
    return -total if neg else total


def go_atoi(text: str) -> int:
    """strconv.Atoi: an optional sign and decimal digits, nothing else."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


# ---------------------------------------------------------------------- util.go predicates


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def is_autoscaling_enabled(spec: dict | None) -> bool:
    """util.go L751-L754."""
    return spec is not None and spec.get("enableInTreeAutoscaling") is True


def is_autoscaling_v2_enabled(spec: dict | None) -> bool:
    """util.go L756-L758."""
    return spec is not None and _d(spec.get("autoscalerOptions")).get("version") == "v2"


def is_auth_enabled(spec: dict) -> bool:
    """util.go L796-L798."""
    return _d(spec.get("authOptions")).get("mode") == "token"


def is_k8s_auth_enabled(auth_options: Any) -> bool:
    """util.go L800-L802."""
    return isinstance(auth_options, dict) and auth_options.get("enableK8sTokenAuth") is True


def is_incremental_upgrade_enabled(service_spec: dict, gates: Mapping[str, bool]) -> bool:
    """util.go L917-L923."""
    if not gates["RayServiceIncrementalUpgrade"]:
        return False
    return _d(service_spec.get("upgradeStrategy")).get("type") == "NewClusterWithIncrementalUpgrade"


def _env(container: dict) -> list[dict]:
    return [e for e in _l(container.get("env")) if isinstance(e, dict)]


def _env_var(name: str, env: list[dict]) -> dict | None:
    """util.go EnvVarByName / EnvVarExists (L699-L737)."""
    return next((e for e in env if e.get("name") == name), None)


def _containers(group: dict) -> list:
    return _l(_d(_d(group.get("template")).get("spec")).get("containers"))


def _head_container(spec: dict) -> dict:
    return _d(_containers(_d(spec.get("headGroupSpec")))[RAY_CONTAINER_INDEX])


def _start_params(group: dict) -> dict:
    return _d(group.get("rayStartParams"))


# --------------------------------------------------------------- ValidateRayClusterSpec


def unported_inputs(spec: dict | None, annotations: Mapping[str, str] | None) -> list[str]:
    """The inputs of a RayClusterSpec that only the unported rules read (module docstring)."""
    spec, annotations = _d(spec), dict(annotations or {})
    found = []
    if "gcsFaultToleranceOptions" in spec:
        found.append("gcsFaultToleranceOptions (GCS FT rules L153-L195, L328-L375, not ported)")
    if annotations.get(RAY_FT_ENABLED_ANNOTATION):
        found.append(f"annotation {RAY_FT_ENABLED_ANNOTATION} (GCS FT rules L153-L164, not ported)")
    head = _d(spec.get("headGroupSpec"))
    containers = _containers(head)
    env = _env(_d(containers[0])) if containers else []
    for name in ("RAY_REDIS_ADDRESS", "REDIS_USERNAME"):
        if _env_var(name, env) is not None:
            found.append(f"head env {name} (Redis rules L158-L195, not ported)")
    if _start_params(head).get("redis-username"):
        found.append("rayStartParams['redis-username'] (Redis rule L192-L195, not ported)")
    if "historyServerOptions" in spec:
        found.append(
            "historyServerOptions (history-server rules L260-L282, L1029-L1110, not ported)"
        )
    if "networkPolicy" in spec:
        found.append("networkPolicy (network-policy rules L315-L321, L377-L444, not ported)")
    if "tlsOptions" in spec:
        found.append("tlsOptions (TLS rules L323-L326, L446-L524, not ported)")
    return found


def _validate_group_resources(group_name: str, params: dict, resources: Any) -> str | None:
    """validateRayGroupResources, L59-L69."""
    has_start_resources = any(
        params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")
    )
    if has_start_resources and _d(resources):
        return (
            f"resource fields should not be set in both rayStartParams and Resources for "
            f"{group_name} group; please use only one"
        )
    return None


def _validate_group_labels(group_name: str, params: dict, labels: Any) -> str | None:
    """validateRayGroupLabels, L71-L100."""
    if "labels" in params:
        return (
            f"rayStartParams['labels'] is not supported for {group_name} group; please use the "
            "top-level Labels field instead"
        )
    errs = []
    for key, val in sorted(_d(labels).items()):
        for err in is_qualified_name(key):
            errs.append(f"invalid label key for {group_name} group: '{key}', error: {err}")
        for err in is_valid_label_value(str(val)):
            errs.append(
                f"invalid label value for key '{key}' in {group_name} group: '{val}', error: {err}"
            )
    return "; ".join(errs) if errs else None


def _v2_env_enabled(spec: dict) -> bool:
    env = _env_var(RAY_ENABLE_AUTOSCALER_V2, _env(_head_container(spec)))
    return env is not None and env.get("value") in ("1", "true")


def _validate_idle_timeout(group: dict, spec: dict) -> str | None:
    """validateWorkerGroupIdleTimeout, L1005-L1027."""
    idle = group.get("idleTimeoutSeconds")
    if idle is None:
        return None
    name = group.get("groupName", "")
    if idle < 0:
        return f"worker group {name}: idleTimeoutSeconds must be non-negative, got {idle}"
    if is_autoscaling_v2_enabled(spec) or _v2_env_enabled(spec):
        return None
    return (
        f"worker group {name}: idleTimeoutSeconds is set, but autoscaler v2 is not enabled. "
        "Please set .spec.autoscalerOptions.version to 'v2' (or set "
        f"{RAY_ENABLE_AUTOSCALER_V2} environment variable to 'true' in the head pod if using "
        "KubeRay < 1.4.0)"
    )


def _validate_priority(group: dict, spec: dict) -> str | None:
    """validateWorkerGroupPriority, L1112-L1142."""
    priority = group.get("priority")
    if not priority:
        return None
    name = group.get("groupName", "")
    version = spec.get("rayVersion") or ""
    if not version:
        return (
            f"worker group {name}: priority is set, but RayVersion was not specified. Ray "
            "version 2.56.0 or later is required"
        )
    try:
        parsed = parse_generic_version(version)
    except _VersionError as err:
        return (
            f"worker group {name}: priority is set, but RayVersion format is invalid: "
            f"{version}, {err}"
        )
    if _version_less(parsed, [2, 56, 0]):
        return (
            f"worker group {name}: priority is set, but minimum Ray version is 2.56.0, "
            f"got {version}"
        )
    if is_autoscaling_v2_enabled(spec) or _v2_env_enabled(spec):
        return None
    return (
        f"worker group {name}: priority is set to {priority}, but autoscaler v2 is not enabled. "
        "Priority is only supported with autoscaler v2 enabled"
    )


def validate_raycluster_spec(
    spec: dict | None,
    annotations: Mapping[str, str] | None = None,
    gates: Mapping[str, bool] | None = None,
) -> str | None:
    """ValidateRayClusterSpec, L103-L327, without the unported rule families (module
    docstring): the caller checks `unported_inputs` first."""
    spec, gates = _d(spec), gates or FEATURE_GATE_DEFAULTS
    head = _d(spec.get("headGroupSpec"))
    if not _containers(head):  # L104-L106
        return "headGroupSpec should have at least one container"
    err = _validate_group_resources("Head", _start_params(head), head.get("resources"))  # L108
    err = err or _validate_group_labels("Head", _start_params(head), head.get("labels"))  # L111
    if err:
        return err
    autoscaling = is_autoscaling_enabled(spec)  # L116
    workers = [_d(g) for g in _l(spec.get("workerGroupSpecs"))]
    for group in workers:  # L118-L151
        name = group.get("groupName", "")
        if not _containers(group):
            return "workerGroupSpec should have at least one container"
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (lo is None or hi is None):  # L125-L127
            return (
                f"worker group {name} must set both minReplicas and maxReplicas when "
                "autoscaling is disabled"
            )
        if lo is not None and lo < 0:
            return f"worker group {name} has negative minReplicas {lo}"
        if hi is not None and hi < 0:
            return f"worker group {name} has negative maxReplicas {hi}"
        if lo is not None and hi is not None and lo > hi:  # L134-L138
            return f"worker group {name} has minReplicas {lo} greater than maxReplicas {hi}"
        err = (
            _validate_group_resources(name, _start_params(group), group.get("resources"))
            or _validate_group_labels(name, _start_params(group), group.get("labels"))
            or _validate_idle_timeout(group, spec)
            or _validate_priority(group, spec)
        )
        if err:
            return err
    # L153-L195: GCS fault tolerance and Redis, not ported (unported_inputs).
    if not gates["RayJobDeletionPolicy"]:  # L197-L203
        for group in workers:
            if group.get("suspend") is True:
                return (
                    f"worker group {group.get('groupName', '')} can be suspended only when the "
                    "RayJobDeletionPolicy feature gate is enabled"
                )
    head_env = _env(_head_container(spec))
    if not autoscaling:  # L205-L212
        env = _env_var(RAY_ENABLE_AUTOSCALER_V2, head_env)
        if env is not None and env.get("value") in ("1", "true"):
            return (
                f"environment variable {RAY_ENABLE_AUTOSCALER_V2} cannot be set to "
                f"'{env.get('value')}' when enableInTreeAutoscaling is false. Please set "
                "enableInTreeAutoscaling: true to use autoscaler v2"
            )
    if autoscaling:  # L214-L238
        for group in workers:
            if group.get("suspend") is True:
                return (
                    f"worker group {group.get('groupName', '')} cannot be suspended with "
                    "Autoscaler enabled"
                )
        options = _d(spec.get("autoscalerOptions"))
        if options.get("version") is not None and _env_var(RAY_ENABLE_AUTOSCALER_V2, head_env):
            return (
                "both .spec.autoscalerOptions.version and head Pod env var "
                f"{RAY_ENABLE_AUTOSCALER_V2} are set, please only use the former"
            )
        if is_autoscaling_v2_enabled(spec):  # L226-L236
            policy = _d(_d(head.get("template")).get("spec")).get("restartPolicy") or ""
            if policy not in ("", "Never"):
                return (
                    "restartPolicy for head Pod should be Never or unset when using autoscaler V2"
                )
            for group in workers:
                policy = _d(_d(group.get("template")).get("spec")).get("restartPolicy") or ""
                if policy not in ("", "Never"):
                    return (
                        f"restartPolicy for worker group {group.get('groupName', '')} should be "
                        "Never or unset when using autoscaler V2"
                    )
    options = _d(spec.get("autoscalerOptions"))
    idle = options.get("idleTimeoutSeconds")
    if idle is not None and idle < 0:  # L241-L245
        return f"autoscalerOptions.idleTimeoutSeconds must be non-negative, got {idle}"
    if "autoscalerOptions" in spec and _env_var(KUBERAY_GEN_AUTOSCALER_START_CMD, _env(options)):
        return (  # L252-L258
            f"autoscalerOptions.env must not contain {KUBERAY_GEN_AUTOSCALER_START_CMD}: it is "
            "managed by KubeRay and injected automatically into the autoscaler container"
        )
    # L260-L282: history server, not ported.
    auth = spec.get("authOptions")
    if is_auth_enabled(spec):  # L284-L308
        version = spec.get("rayVersion") or ""
        if not version:
            return (
                "authOptions.mode is 'token' but RayVersion was not specified. Ray version "
                "2.52.0 or later is required"
            )
        try:
            parsed = parse_generic_version(version)
        except _VersionError as err:
            return f"authOptions.mode is 'token' but RayVersion format is invalid: {version}, {err}"
        if _version_less(parsed, [2, 52, 0]):
            return f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {version}"
        if is_k8s_auth_enabled(auth):
            if _version_less(parsed, [2, 55, 0]):
                return (
                    "authOptions.enableK8sTokenAuth is enabled but minimum Ray version is "
                    f"2.55.0, got {version}"
                )
            if _d(auth).get("secretName"):
                return (
                    "authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is "
                    "also set"
                )
    elif is_k8s_auth_enabled(auth):  # L309-L313
        return "authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'"
    # L315-L326: network policy and TLS, not ported.
    return None


# ------------------------------------------------------------------------------- RayJob


def validate_rayjob_metadata(metadata: dict | None) -> str | None:
    """ValidateRayJobMetadata, L533-L541."""
    name = _d(metadata).get("name") or ""
    if len(name) > MAX_RAYJOB_NAME_LENGTH:
        return (
            "The RayJob metadata is invalid: RayJob name should be no more than "
            f"{MAX_RAYJOB_NAME_LENGTH} characters"
        )
    errs = is_dns1035_label(name)
    if errs:
        return (
            "The RayJob metadata is invalid: RayJob name should be a valid DNS1035 label: "
            + _go_list(errs)
        )
    return None


def validate_rayjob_status(rayjob: dict) -> str | None:
    """ValidateRayJobStatus, L526-L531."""
    status, spec = _d(rayjob.get("status")), _d(rayjob.get("spec"))
    if (
        status.get("jobDeploymentStatus") == "Waiting"
        and spec.get("submissionMode") != "InteractiveMode"
    ):
        return (
            "The RayJob status is invalid: JobDeploymentStatus cannot be `Waiting` when "
            "SubmissionMode is not InteractiveMode"
        )
    return None


def _validate_deletion_condition(condition: dict) -> str | None:
    """validateDeletionCondition, L870-L888."""
    has_job = condition.get("jobStatus") is not None
    has_deployment = condition.get("jobDeploymentStatus") is not None
    if has_job and has_deployment:
        return "cannot set both JobStatus and JobDeploymentStatus at the same time"
    if not has_job and not has_deployment:
        return "exactly one of JobStatus and JobDeploymentStatus must be set"
    if (condition.get("ttlSeconds") or 0) < 0:
        return "TTLSeconds must be non-negative"
    return None


def _validate_ttl_consistency(ttls: dict[str, int], kind: str, value: str) -> list[str]:
    """validateTTLConsistency, L890-L925: Workers <= Cluster <= Self."""
    errs, prev = [], None
    for policy in ("DeleteWorkers", "DeleteCluster", "DeleteSelf"):
        if policy not in ttls:
            continue
        if prev is not None and ttls[policy] < prev[1]:
            errs.append(
                f"for {kind} '{value}': {policy} TTL ({ttls[policy]}) must be >= "
                f"{prev[0]} TTL ({prev[1]})"
            )
        prev = (policy, ttls[policy])
    return errs


def _validate_deletion_rules(rayjob_spec: dict) -> str | None:
    """validateDeletionRules, L794-L868 (errors.Join: one message per line)."""
    rules = _l(_d(rayjob_spec.get("deletionStrategy")).get("deletionRules"))
    selector_mode = len(_d(rayjob_spec.get("clusterSelector"))) != 0
    by_job: dict[str, dict[str, int]] = {}
    by_deployment: dict[str, dict[str, int]] = {}
    errs: list[str] = []
    for i, rule in enumerate(_d(r) for r in rules):
        condition = _d(rule.get("condition"))
        policy = rule.get("policy")
        err = _validate_deletion_condition(condition)
        if err:
            errs.append(f"deletionRules[{i}]: {err}")
            continue
        if selector_mode and policy in ("DeleteCluster", "DeleteWorkers"):
            errs.append(
                f"deletionRules[{i}]: DeletionPolicyType '{policy}' not supported when "
                "ClusterSelector is set"
            )
            continue
        if is_autoscaling_enabled(rayjob_spec.get("rayClusterSpec")) and policy == "DeleteWorkers":
            errs.append(
                f"deletionRules[{i}]: DeletionPolicyType 'DeleteWorkers' not supported with "
                "autoscaling enabled"
            )
            continue
        ttl = condition.get("ttlSeconds") or 0
        if condition.get("jobStatus") is not None:
            group, kind, value = (
                by_job.setdefault(condition["jobStatus"], {}),
                "JobStatus",
                condition["jobStatus"],
            )
        else:
            value = condition["jobDeploymentStatus"]
            group, kind = by_deployment.setdefault(value, {}), "JobDeploymentStatus"
        if policy in group:
            errs.append(
                f"deletionRules[{i}]: duplicate rule for DeletionPolicyType '{policy}' and "
                f"{kind} '{value}'"
            )
            continue
        group[str(policy)] = ttl
    for value, ttls in sorted(by_job.items()):
        errs += _validate_ttl_consistency(ttls, "JobStatus", value)
    for value, ttls in sorted(by_deployment.items()):
        errs += _validate_ttl_consistency(ttls, "JobDeploymentStatus", value)
    return "\n".join(errs) if errs else None


def _validate_legacy_deletion(rayjob_spec: dict) -> str | None:
    """validateLegacyDeletionPolicies, L927-L966."""
    strategy = _d(rayjob_spec.get("deletionStrategy"))
    selector_mode = len(_d(rayjob_spec.get("clusterSelector"))) != 0
    on_success, on_failure = strategy.get("onSuccess"), strategy.get("onFailure")
    if on_success is None or on_failure is None:
        return (
            "both DeletionStrategy.OnSuccess and DeletionStrategy.OnFailure must be set when "
            "using the legacy deletion policy fields of DeletionStrategy"
        )
    success, failure = _d(on_success).get("policy"), _d(on_failure).get("policy")
    if success is None:
        return (
            "the DeletionPolicyType field of DeletionStrategy.OnSuccess cannot be unset when "
            "DeletionStrategy is enabled"
        )
    if failure is None:
        return (
            "the DeletionPolicyType field of DeletionStrategy.OnFailure cannot be unset when "
            "DeletionStrategy is enabled"
        )
    if selector_mode:
        if success in ("DeleteCluster", "DeleteWorkers"):
            return f"the ClusterSelector mode doesn't support DeletionStrategy={success} on success"
        if failure in ("DeleteCluster", "DeleteWorkers"):
            return f"the ClusterSelector mode doesn't support DeletionStrategy={failure} on failure"
    if "DeleteWorkers" in (success, failure) and is_autoscaling_enabled(
        rayjob_spec.get("rayClusterSpec")
    ):
        return (
            "DeletionStrategy=DeleteWorkers currently does not support RayCluster with "
            "autoscaling enabled"
        )
    if rayjob_spec.get("shutdownAfterJobFinishes") and "DeleteNone" in (success, failure):
        return (
            "The RayJob spec is invalid: shutdownAfterJobFinshes is set to 'true' while "
            "deletion policy is 'DeleteNone'"
        )
    return None


def _validate_deletion_configuration(rayjob_spec: dict, gates: Mapping[str, bool]) -> str | None:
    """validateDeletionConfiguration, L751-L792."""
    if (
        not rayjob_spec.get("shutdownAfterJobFinishes")
        and (rayjob_spec.get("ttlSecondsAfterFinished") or 0) > 0
    ):
        return (
            "The RayJob spec is invalid: a RayJob with shutdownAfterJobFinishes set to false "
            "cannot have TTLSecondsAfterFinished"
        )
    strategy = rayjob_spec.get("deletionStrategy")
    if strategy is None:
        return None
    if not gates["RayJobDeletionPolicy"]:
        return "RayJobDeletionPolicy feature gate must be enabled to use DeletionStrategy"
    strategy = _d(strategy)
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = len(_l(strategy.get("deletionRules"))) > 0
    if rules and rayjob_spec.get("shutdownAfterJobFinishes"):
        return (
            "The RayJob spec is invalid: spec.shutdownAfterJobFinishes and "
            "spec.deletionStrategy.deletionRules are mutually exclusive"
        )
    if rules and legacy:
        return (
            "The RayJob spec is invalid: Cannot use both legacy onSuccess/onFailure fields and "
            "deletionRules simultaneously"
        )
    if legacy:
        return _validate_legacy_deletion(rayjob_spec)
    if rules:
        return _validate_deletion_rules(rayjob_spec)
    return (
        "The RayJob spec is invalid: DeletionStrategy requires either BOTH onSuccess and "
        "onFailure, OR the deletionRules field (cannot be empty)"
    )


_GO_JSON_KIND = {str: "string", int: "number", float: "number", bool: "bool"}


def validate_rayjob_spec(rayjob: dict, gates: Mapping[str, bool] | None = None) -> str | None:
    """ValidateRayJobSpec, L543-L630."""
    gates = gates or FEATURE_GATE_DEFAULTS
    spec = _d(rayjob.get("spec"))
    annotations = _d(_d(rayjob.get("metadata")).get("annotations"))
    suspend, shutdown = spec.get("suspend") is True, spec.get("shutdownAfterJobFinishes") is True
    if suspend and not shutdown:  # L547-L549
        return (
            "The RayJob spec is invalid: a RayJob with shutdownAfterJobFinishes set to false is "
            "not allowed to be suspended"
        )
    if (spec.get("ttlSecondsAfterFinished") or 0) < 0:  # L551-L553
        return "The RayJob spec is invalid: TTLSecondsAfterFinished must be a non-negative integer"
    err = _validate_deletion_configuration(spec, gates)  # L556
    if err:
        return err
    selector = _d(spec.get("clusterSelector"))
    selector_mode = len(selector) != 0  # L560
    if suspend and selector_mode:
        return (
            "The RayJob spec is invalid: the ClusterSelector mode doesn't support the "
            "suspend operation"
        )
    cluster_spec = spec.get("rayClusterSpec")  # nil when absent or null
    if cluster_spec is None and not selector_mode:  # L564-L566
        return "The RayJob spec is invalid: one of RayClusterSpec or ClusterSelector must be set"
    mode = spec.get("submissionMode") or ""
    backoff = spec.get("backoffLimit")
    if selector_mode:  # L567-L578
        if not selector.get(RAYJOB_CLUSTER_SELECTOR_KEY):
            return "cluster name in ClusterSelector should not be empty"
        if mode == "SidecarMode":
            return "ClusterSelector is not supported in SidecarMode"
        if backoff is not None and backoff > 0:
            return (
                "The RayJob spec is invalid: BackoffLimit is incompatible with ClusterSelector mode"
            )
    if mode == "InteractiveMode" and backoff is not None and backoff > 0:  # L587-L589
        return "The RayJob spec is invalid: BackoffLimit is incompatible with InteractiveMode"
    if mode == "SidecarMode":  # L591-L603
        if spec.get("submitterPodTemplate") is not None:
            return "Currently, SidecarMode doesn't support SubmitterPodTemplate"
        if spec.get("submitterConfig") is not None:
            return "Currently, SidecarMode doesn't support SubmitterConfig"
        head = _d(_d(cluster_spec).get("headGroupSpec"))
        policy = _d(_d(head.get("template")).get("spec")).get("restartPolicy") or ""
        if policy not in ("", "Never"):
            return "restartPolicy for head Pod should be Never or unset when using SidecarMode"
    if cluster_spec is not None:  # L605-L612
        if is_k8s_auth_enabled(_d(cluster_spec).get("authOptions")):
            return (
                "The RayJob spec is invalid: K8s token auth mode is currently not "
                "supported for RayJob"
            )
        err = validate_raycluster_spec(_d(cluster_spec), annotations, gates)
        if err:
            return f"The RayJob spec is invalid: {err}"
    text = spec.get("runtimeEnvYAML") or ""  # L616-L618
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"failed to unmarshal RuntimeEnvYAML: {text}: {exc}"
    if parsed is not None and not isinstance(parsed, dict):
        kind = "array" if isinstance(parsed, list) else _GO_JSON_KIND.get(type(parsed), "string")
        return (
            f"failed to unmarshal RuntimeEnvYAML: {text}: error unmarshaling JSON: while "
            f"decoding JSON: json: cannot unmarshal {kind} into Go value of type "
            "types.RuntimeEnvType"
        )
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:  # L619-L621
        return "The RayJob spec is invalid: activeDeadlineSeconds must be a positive integer"
    pre_running = spec.get("preRunningDeadlineSeconds")
    if pre_running is not None and pre_running <= 0:  # L622-L624
        return "The RayJob spec is invalid: preRunningDeadlineSeconds must be a positive integer"
    if backoff is not None and backoff < 0:  # L625-L627
        return "The RayJob spec is invalid: backoffLimit must be a positive integer"
    return None


def validate_rayjob(rayjob: dict, gates: Mapping[str, bool] | None = None) -> str | None:
    """validateRayJob (rayjob_controller.go L464-L482): metadata, spec, status, first error.
    Raises NotPorted when the spec needs an unported rule and the ported ones accept it."""
    err = validate_rayjob_metadata(rayjob.get("metadata")) or validate_rayjob_spec(rayjob, gates)
    if err is None:
        _refuse_unported(_d(rayjob.get("spec")).get("rayClusterSpec"), rayjob)
    return err or validate_rayjob_status(rayjob)


# ---------------------------------------------------------------------------- RayService


def _validate_initializing_timeout(annotations: dict) -> str | None:
    """validateInitializingTimeout, L648-L678."""
    text = annotations.get(INITIALIZING_TIMEOUT_ANNOTATION)
    if not text:
        return None
    try:
        seconds = go_parse_duration(text)
    except ValueError:
        pass
    else:
        if seconds <= 0:
            return (
                f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive duration, "
                f"got: {text}"
            )
        return None
    try:
        whole = go_atoi(text)
    except ValueError:
        pass
    else:
        if whole <= 0:
            return (
                f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} must be a positive integer "
                f"(seconds), got: {text}"
            )
        return None
    return (
        f"annotation {INITIALIZING_TIMEOUT_ANNOTATION} has invalid format: {text}. Expected Go "
        "duration format (e.g., '5m', '1h') or positive integer seconds"
    )


def validate_rayservice_metadata(metadata: dict | None) -> str | None:
    """ValidateRayServiceMetadata, L632-L646."""
    metadata = _d(metadata)
    name = metadata.get("name") or ""
    if len(name) > MAX_RAYSERVICE_NAME_LENGTH:
        return (
            "The RayService metadata is invalid: RayService name should be no more than "
            f"{MAX_RAYSERVICE_NAME_LENGTH} characters"
        )
    errs = is_dns1035_label(name)
    if errs:
        return (
            "The RayService metadata is invalid: RayService name should be a valid DNS1035 "
            f"label: {_go_list(errs)}"
        )
    err = _validate_initializing_timeout(_d(metadata.get("annotations")))
    if err:
        return f"The RayService metadata is invalid: RayService annotations is invalid: {err}"
    return None


def validate_cluster_upgrade_options(rayservice: dict) -> str | None:
    """ValidateClusterUpgradeOptions, L717-L749. A missing maxSurgePercent is read as its CRD
    default, 100 (Go dereferences it without a nil check: the API server always defaults it)."""
    spec = _d(rayservice.get("spec"))
    if not is_autoscaling_enabled(_d(spec.get("rayClusterConfig"))):
        return "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade"
    options = _d(spec.get("upgradeStrategy")).get("clusterUpgradeOptions")
    if options is None:
        return "ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade"
    options = _d(options)
    surge = options.get("maxSurgePercent", 100)
    if surge is None:
        surge = 100
    if surge < 0 or surge > 100:
        return "maxSurgePercent must be between 0 and 100"
    step = options.get("stepSizePercent")
    if step is None or step < 0 or step > 100:
        return "stepSizePercent must be between 0 and 100"
    if step > surge:
        return "stepSizePercent must be less than or equal to maxSurgePercent"
    interval = options.get("intervalSeconds")
    if interval is None or interval <= 0:
        return "intervalSeconds must be greater than 0"
    if not options.get("gatewayClassName"):
        return "gatewayClassName is required for NewClusterWithIncrementalUpgrade"
    return None


def validate_rayservice_spec(
    rayservice: dict, gates: Mapping[str, bool] | None = None
) -> str | None:
    """ValidateRayServiceSpec, L680-L715."""
    gates = gates or FEATURE_GATE_DEFAULTS
    spec = _d(rayservice.get("spec"))
    annotations = _d(_d(rayservice.get("metadata")).get("annotations"))
    cluster = _d(spec.get("rayClusterConfig"))  # a struct in Go: absent reads as empty
    if is_k8s_auth_enabled(cluster.get("authOptions")):
        return (
            "The RayService spec is invalid: K8s token auth mode is currently not "
            "supported for RayService"
        )
    err = validate_raycluster_spec(cluster, annotations, gates)
    if err:
        return f"The RayService spec is invalid: {err}"
    head_service = _d(_d(cluster.get("headGroupSpec")).get("headService"))
    if _d(head_service.get("metadata")).get("name"):
        return (
            "The RayService spec is invalid: "
            "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set"
        )
    kind = _d(spec.get("upgradeStrategy")).get("type")
    if kind is not None and kind not in ("None", "NewCluster", "NewClusterWithIncrementalUpgrade"):
        return (
            f"The RayService spec is invalid: Spec.UpgradeStrategy.Type value {kind} is invalid, "
            "valid options are NewClusterWithIncrementalUpgrade, NewCluster, or None"
        )
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        return (
            "The RayService spec is invalid: Spec.RayClusterDeletionDelaySeconds should be a "
            f"non-negative integer, got {delay}"
        )
    if is_incremental_upgrade_enabled(spec, gates):
        err = validate_cluster_upgrade_options(rayservice)
        if err:
            return f"The RayService spec is invalid: {err}"
    return None


def validate_rayservice(rayservice: dict, gates: Mapping[str, bool] | None = None) -> str | None:
    """validateRayService (rayservice_controller.go L333-L350): metadata, then spec.
    Raises NotPorted when the spec needs an unported rule and the ported ones accept it."""
    err = validate_rayservice_metadata(rayservice.get("metadata")) or validate_rayservice_spec(
        rayservice, gates
    )
    if err is None:
        _refuse_unported(_d(rayservice.get("spec")).get("rayClusterConfig"), rayservice)
    return err


def _refuse_unported(cluster_spec: Any, obj: dict) -> None:
    found = unported_inputs(_d(cluster_spec), _d(_d(obj.get("metadata")).get("annotations")))
    if found:
        raise NotPorted(
            f"{obj.get('kind')}/{_d(obj.get('metadata')).get('name')}: the admission port cannot "
            f"judge this object: {'; '.join(found)}"
        )
