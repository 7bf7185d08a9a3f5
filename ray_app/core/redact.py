"""Credentials out of what is logged: a URI's `user:password@` and secret query parameters.

A tracking URI such as
`http://alice:s3cret@mlflow:5000`  # pragma: allowlist secret (an example)
works (HTTP basic auth), but it is
written into the MLflow run's config.yaml and params, the job's result line and log lines,
where anyone who reads the run or the job logs would see the password. Everything that logs a
config value or a URI goes through `redact` first."""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ : the whole userinfo goes (a lone user name may be a token too).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"]+@")
# ?password=... / &token=... : the value of any parameter whose name looks secret.
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][^=&\s'\"#]*(?:pass|pwd|token|secret|key|signature|sig|credential|auth)"
    r"[^=&\s'\"#]*=)[^&\s'\"#]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` (a URI, a log line, a YAML document) with every URI's credentials masked:
    'http://{user}:{password}@host:5000?token={t}' -> 'http://***@host:5000?token=***'."""
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    return _SECRET_PARAM.sub(rf"\g<name>{MASK}", text)


def has_credentials(uri: str) -> bool:
    """Whether `uri` carries anything `redact` would mask."""
    return redact(uri) != uri
