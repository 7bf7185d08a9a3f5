"""The prediction log's layout: what the serving graph writes (`ray_app.serving.predlog`) and
the monitor reads, a label log beside it, and the retention that removes old partitions.

    <root>/records/date=2026-12-02/part-20261202T101500Z-<writer>-000001.parquet
    <root>/labels/date=2026-12-02/part-....parquet

`<root>` is a local folder (the shared volume on Kubernetes) or an s3:// / gs:// URI (through
pyarrow's filesystems). A file appears whole: written under a hidden name and renamed (object
stores publish on close), and readers skip hidden names. Partitions are UTC dates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ray_app.core.errors import DataError
from ray_app.core.schema import FEATURE_COLUMNS, NUMERIC_COLUMNS
from ray_app.data import files as tables

RECORDS, LABELS = "records", "labels"
PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# Columns of a record beside its features (which keep their own names; excluded ones absent).
RECORD_META = ("request_id", "time", "model_version", "probability", "label")
LABEL_COLUMNS = ("request_id", "income", "time")
INCOMES = ("<=50K", ">50K")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def record_schema(exclude: Iterable[str] = ()) -> Any:
    """The Arrow schema of a record file (features as the API received them, '?' -> null)."""
    import pyarrow as pa

    skip = set(exclude)
    fields = [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("probability", pa.float64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
    ]
    for column in FEATURE_COLUMNS:
        if column not in skip:
            kind = pa.float64() if column in NUMERIC_COLUMNS else pa.string()
            fields.append(pa.field(column, kind))
    return pa.schema(fields)


def label_schema() -> Any:
    import pyarrow as pa

    return pa.schema([pa.field("request_id", pa.string(), nullable=False),
                      pa.field("income", pa.string(), nullable=False),
                      pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False)])  # fmt: skip


def filesystem(root: str) -> tuple[Any, str]:
    """(pyarrow filesystem, the root's path in it) for a folder or a URI."""
    fs, path = tables.filesystem(root)
    return fs, path.rstrip("/")


def is_prediction_log(source: str) -> bool:
    """Whether `source` is a prediction log's root (it has a records/ folder)."""
    import pyarrow.fs as pafs

    try:
        fs, path = filesystem(source)
        return bool(fs.get_file_info(f"{path}/{RECORDS}").type == pafs.FileType.Directory)
    except (DataError, OSError):
        return False


def parse_since(text: str) -> timedelta | datetime:
    """'24h', '7d', '90m', '30s' -> a window length; an ISO time ('2026-12-02T10:00:00Z', UTC
    when it names no zone) -> that start."""
    found = _DURATION.match(text)
    if found:
        return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    try:
        start = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"--since {text!r}: expected a number and a unit (s, m, h, d), e.g. "
                        "24h, or an ISO time such as 2026-12-02T10:00:00Z") from None  # fmt: skip
    return start if start.tzinfo else start.replace(tzinfo=UTC)


@dataclass
class Partition:
    kind: str  # RECORDS or LABELS
    day: date
    path: str  # in the log's filesystem


def partitions(root: str, kind: str) -> list[Partition]:
    """The date partitions of `kind`, oldest first (names not `date=YYYY-MM-DD` are ignored)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(root)
    base = f"{path}/{kind}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(base)):
        found = PARTITION.match(info.base_name)
        if info.type == pafs.FileType.Directory and found:
            out.append(Partition(kind, date.fromisoformat(found.group(1)), info.path))
    return sorted(out, key=lambda p: p.day)


def files(root: str, kind: str, since: datetime | None = None) -> list[str]:
    """Every complete Parquet file of `kind` in the partitions a window from `since` touches
    (hidden names, i.e. files still being written, skipped); openable names (URIs kept)."""
    import pyarrow.fs as pafs

    fs, _ = filesystem(root)
    found = []
    for part in partitions(root, kind):
        if since is not None and part.day < since.astimezone(UTC).date():
            continue
        for info in fs.get_file_info(pafs.FileSelector(part.path)):
            name = info.base_name
            if info.is_file and name.endswith(".parquet") and not name.startswith((".", "_")):
                found.append(tables.uri_of(fs, info.path, root))
    return sorted(found)


def remove_older_than(root: str, days: int, now: datetime | None = None) -> list[str]:
    """Retention: delete record and label partitions whose whole day is more than `days` days
    before `now` (UTC); returns the partitions removed."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cutoff = now.date() - timedelta(days=days)
    fs, _ = filesystem(root)
    removed = []
    for kind in (RECORDS, LABELS):
        for part in partitions(root, kind):
            if part.day < cutoff:
                fs.delete_dir(part.path)
                removed.append(f"{kind}/date={part.day.isoformat()}")
    return removed


def check_labels(frame: Any, source: str) -> Any:
    """A labels table (`request_id`, `income`): both columns present, every income one of
    INCOMES (a trailing '.' as in adult.test accepted), ids non-empty; first bad row named."""
    import pandas as pd

    missing = [c for c in ("request_id", "income") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: labels need the columns request_id and income; missing "
                        f"{missing} (found {list(frame.columns)})")  # fmt: skip
    income = frame["income"].astype("string").str.strip().str.rstrip(".")
    ids = frame["request_id"].astype("string").str.strip()
    bad = (~income.isin(INCOMES)) | ids.isna() | (ids == "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{source}: row {row + 1}: request_id {frame['request_id'].iloc[row]!r}, income "
            f"{frame['income'].iloc[row]!r}: expected a request id and one of {list(INCOMES)}"
        )
    out = pd.DataFrame({"request_id": ids.astype(str), "income": income.astype(str)})
    if "time" in frame.columns:
        out["time"] = pd.to_datetime(frame["time"], utc=True)
    return out
