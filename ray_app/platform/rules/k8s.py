"""The library checks the rules call, with their own messages: k8s.io/apimachinery v0.36.0 (the
version KubeRay v1.7.0's go.mod pins) `pkg/util/validation` (IsDNS1035Label), the
`pkg/api/validate/content` functions it forwards to (IsQualifiedName = IsLabelKey,
IsValidLabelValue = IsLabelValue), `pkg/util/version` (ParseGeneric, LessThan); and Go's
`time.ParseDuration` and `strconv.Atoi`. Go matches byte lengths and ASCII regexes; so do these.
"""

from __future__ import annotations

import re

DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
               "with an alphabetic character, and end with an alphanumeric character")  # fmt: skip
DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                         "characters, '-' or '.', and must start and end with an alphanumeric "
                         "character")  # fmt: skip
LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_KEY_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                 "end with an alphanumeric character")  # fmt: skip
LABEL_VALUE_FMT = "(" + LABEL_KEY_FMT + ")?"
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                   "'-', '_' or '.', and must start and end with an alphanumeric "
                   "character")  # fmt: skip


def _matches(fmt: str, value: str) -> bool:
    # Go's "^fmt$": `$` is the end of the text (Python's would also match before a final '\n').
    return re.fullmatch(fmt, value) is not None


def _nbytes(value: str) -> int:
    return len(value.encode())


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """validation.RegexError (and content.RegexError, the same text)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def go_list(items: list[str]) -> str:
    """fmt's %v of a []string: '[a b]'."""
    return "[" + " ".join(items) + "]"


def go_quote(text: str) -> str:
    """fmt's %q of a string, for the printable text a manifest holds."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    for char, code in (("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
        escaped = escaped.replace(char, code)
    return f'"{escaped}"'


def dns1035_problems(value: str) -> list[str]:
    """validation.IsDNS1035Label (its MaxLenError says 'characters')."""
    problems = []
    if _nbytes(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _matches(DNS1035_FMT, value):
        problems.append(regex_error(DNS1035_MSG, DNS1035_FMT, "my-name", "abc-123"))
    return problems


def _dns1123_subdomain_problems(value: str) -> list[str]:
    """content.IsDNS1123Subdomain (content's MaxLenError says 'bytes')."""
    problems = []
    if _nbytes(value) > 253:
        problems.append("must be no more than 253 bytes")
    if not _matches(DNS1123_SUBDOMAIN_FMT, value):
        problems.append(regex_error(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return problems


def qualified_name_problems(key: str) -> list[str]:
    """content.IsLabelKey (validation.IsQualifiedName): label keys."""
    parts = key.split("/")
    if len(parts) > 2:
        key_error = regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        return [f"a valid label key {key_error} with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]  # fmt: skip
    problems = []
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            problems.append("prefix part must be non-empty")
        else:
            problems += [f"prefix part {p}" for p in _dns1123_subdomain_problems(parts[0])]
    if not name:
        problems.append("name part must be non-empty")
    elif _nbytes(name) > 63:
        problems.append("name part must be no more than 63 bytes")
    if not _matches(LABEL_KEY_FMT, name):
        problems.append("name part " + regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, "MyName",
                                                   "my.name", "123-abc"))  # fmt: skip
    return problems


def label_value_problems(value: str) -> list[str]:
    """content.IsLabelValue (validation.IsValidLabelValue)."""
    problems = []
    if _nbytes(value) > 63:
        problems.append("must be no more than 63 bytes")
    if not _matches(LABEL_VALUE_FMT, value):
        problems.append(regex_error(LABEL_VALUE_MSG, LABEL_VALUE_FMT, "MyValue", "my_value",
                                    "12345"))  # fmt: skip
    return problems


_UINT64_MAX = (1 << 64) - 1
# versionMatchRE; Go's \s is [\t\n\f\r ] and its `.` stops at a newline.
_VERSION = re.compile(r"[\t\n\f\r ]*v?([0-9]+(?:\.[0-9]+)*)(.*)")


def parse_generic(text: str) -> tuple[int, ...]:
    """version.ParseGeneric: two or more dot-separated numbers (the first without a leading
    zero), then anything. Raises ValueError with Go's message."""
    match = _VERSION.fullmatch(text)
    if match is None:
        raise ValueError(f"could not parse {go_quote(text)} as version")
    components = match.group(1).split(".")
    if len(components) < 2:
        raise ValueError(f"illegal version string {go_quote(text)}")
    if components[0].startswith("0") and components[0] != "0":
        raise ValueError(f"illegal zero-prefixed version component {go_quote(components[0])} "
                         f"in {go_quote(text)}")  # fmt: skip
    for component in components:
        if int(component) > _UINT64_MAX:
            raise ValueError(
                f"illegal non-numeric version component {go_quote(component)} in "
                f"{go_quote(text)}: strconv.ParseUint: parsing {go_quote(component)}: value out "
                "of range"
            )
    return tuple(int(c) for c in components)


def version_less(version: tuple[int, ...], minimum: str) -> bool:
    """Version.LessThan for generic versions: missing components count as zeros."""
    other = tuple(int(c) for c in minimum.split("."))
    width = max(len(version), len(other))
    return version + (0,) * (width - len(version)) < other + (0,) * (width - len(other))


_INT64_MAX = (1 << 63) - 1
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
          "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def _fraction_ns(digits: str, unit: int) -> int:
    """leadingFraction (the digits that fit in an int64) times the unit, truncated as in Go."""
    value, scale = 0, 1
    for digit in digits:
        if value > _INT64_MAX // 10 or value * 10 + int(digit) > 1 << 63:
            break
        value, scale = value * 10 + int(digit), scale * 10
    return int(value * (unit / scale))


def parse_duration(text: str) -> int | None:
    """time.ParseDuration, in nanoseconds; None where Go returns an error."""
    body, negative = text, False
    if body[:1] in ("-", "+"):
        body, negative = body[1:], body[0] == "-"
    if body == "0":
        return 0
    if not body:
        return None
    total, at = 0, 0
    while at < len(body):
        match = _COMPONENT.match(body, at)
        if match is None or match.end() == at:
            return None
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if (not whole and not fraction) or unit not in _UNITS:
            return None  # no digits, a missing unit or an unknown one
        if whole and int(whole) > (1 << 63) // _UNITS[unit]:
            return None  # overflow
        value = int(whole or "0") * _UNITS[unit]
        if fraction:
            value += _fraction_ns(fraction, _UNITS[unit])
        total += value
        if value > 1 << 63 or total > 1 << 63:
            return None
        at = match.end()
    if not negative and total > _INT64_MAX:
        return None
    return -total if negative else total


def atoi(text: str) -> int | None:
    """strconv.Atoi on a 64-bit platform: a sign and decimal digits, in int64's range."""
    if re.fullmatch(r"[+-]?[0-9]+", text) is None:
        return None
    value = int(text)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None
