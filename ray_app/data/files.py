"""Files to validated rows: local paths, folders, globs and URIs (s3://, gs://, file://) of
raw UCI, CSV with a header (any known layout) or Parquet; checksums of the shipped files."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.errors import DataError
from ray_app.core.schema import RAW_COLUMNS
from ray_app.data.layouts import UCI_LAYOUT, Layout, normalise_column, resolve_columns
from ray_app.data.validate import validate_columns


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path) -> None:
    """Check a shipped file against the SHA256SUMS beside it; raise DataError on mismatch."""
    sums = path.parent / "SHA256SUMS"
    if not sums.exists():
        raise DataError(f"{sums}: checksum list missing; cannot verify {path.name}")
    expected = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            expected = parts[0]
    if expected is None:
        raise DataError(f"{sums}: no checksum listed for {path.name}")
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch (expected sha256 {expected}, got {actual}); "
            "restore the canonical UCI file"
        )


TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".data", ".test", ".txt")


def filesystem(source: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if "://" in source:
        try:
            return pafs.FileSystem.from_uri(source)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
            raise DataError(f"{source}: cannot open ({exc})") from None
    return pafs.LocalFileSystem(), str(Path(source).resolve())


def uri_of(fs: Any, path: str, source: str) -> str:
    """`path` in `source`'s filesystem as a name a reader opens (the URI scheme kept)."""
    if "://" not in source:
        return path
    return f"{source.split('://', 1)[0]}://{path}"


def list_files(source: str) -> list[str]:
    """A file, a folder (its table files, sorted), a glob, or a URI of any of them."""
    import fnmatch

    import pyarrow.fs as pafs

    fs, path = filesystem(source)
    if any(ch in path for ch in "*?["):
        base = path[: min(path.find(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base or "/", recursive=True))
        found = sorted(i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path))
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"{source}: file not found")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            found = sorted(i.path for i in infos
                           if i.is_file and i.path.lower().endswith(TABLE_SUFFIXES))  # fmt: skip
        else:
            found = [path]
    if not found:
        raise DataError(f"{source}: no data files (CSV, Parquet or raw UCI) found")
    return [uri_of(fs, f, source) for f in found]


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def _read_lines(path: str) -> list[str]:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8", errors="replace").splitlines()


def read_uci(path: Path | str) -> pd.DataFrame:
    """Parse raw UCI: no header, ', ' separators, '?' missing, '|' comments, 'K.' labels."""
    raw = _raw_uci(str(path), _read_lines(str(path)))
    frame: pd.DataFrame = validate_columns(raw.columns, raw.where, str(path))
    return frame


@dataclass
class RawTable:
    """One file's cells under our column names (strings from CSV, typed from Parquet), the
    columns it had besides ours, and each row's line (CSV) or row (Parquet) number."""

    path: str
    layout: Layout
    columns: dict[str, Any]
    extras: dict[str, Any]
    numbers: list[int]
    unit: str = "line"

    def where(self, i: int) -> str:
        return f"{self.unit} {self.numbers[i]}"


def _raw_uci(path: str, lines: list[str]) -> RawTable:
    rows: list[list[str]] = []
    numbers: list[int] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("|"):
            continue
        fields = stripped.split(",")
        if len(fields) != len(RAW_COLUMNS):
            raise DataError(
                f"{path}: line {lineno}: expected {len(RAW_COLUMNS)} comma-separated fields "
                f"({', '.join(RAW_COLUMNS)}), found {len(fields)}"
            )
        rows.append(fields)
        numbers.append(lineno)
    if not rows:
        raise DataError(f"{path}: no data rows")
    columns = dict(zip(RAW_COLUMNS, zip(*rows, strict=True), strict=True))
    return RawTable(path, UCI_LAYOUT, columns, {}, numbers)


def _raw_header_csv(path: str, lines: list[str], need_label: bool) -> RawTable:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty; expected a header line")
    layout = resolve_columns(header, path, need_label)
    names = [h.strip() for h in header]
    rows: list[list[str]] = []
    numbers: list[int] = []
    for fields in reader:
        lineno = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(names):
            raise DataError(
                f"{path}: line {lineno}: expected {len(names)} fields as in the header, "
                f"found {len(fields)}"
            )
        rows.append(fields)
        numbers.append(lineno)
    if not rows:
        raise DataError(f"{path}: no data rows")
    cells = dict(zip(names, zip(*rows, strict=True), strict=True))
    columns = {canonical: cells[raw] for raw, canonical in layout.mapping.items()}
    extras = {raw: cells[raw] for raw in layout.ignored}
    return RawTable(path, layout, columns, extras, numbers)


def _raw_parquet(path: str, need_label: bool) -> RawTable:
    import pyarrow.parquet as pq

    fs, inner = filesystem(path)
    with fs.open_input_file(inner) as handle:
        table = pq.read_table(handle)
    layout = resolve_columns(table.column_names, path, need_label)
    columns = {canonical: table.column(raw).to_numpy(zero_copy_only=False)
               for raw, canonical in layout.mapping.items()}  # fmt: skip
    extras = {raw: table.column(raw).to_numpy(zero_copy_only=False) for raw in layout.ignored}
    return RawTable(path, layout, columns, extras, list(range(1, table.num_rows + 1)), "row")


def raw_table(path: str, need_label: bool = True) -> RawTable:
    """One file, any supported format: its cells, before validation."""
    if _is_parquet(path):
        return _raw_parquet(path, need_label)
    lines = _read_lines(path)
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("|")), "")
    # A first line that names any known column is a header; raw UCI starts with data.
    names = {normalise_column(field) for field in first.split(",")}
    if names & set(RAW_COLUMNS):
        return _raw_header_csv(path, lines, need_label)
    return _raw_uci(path, lines)


def read_file(path: str) -> tuple[pd.DataFrame, Layout]:
    """One file of labelled rows, validated (the first bad cell stops the run), and its layout."""
    raw = raw_table(path)
    return validate_columns(raw.columns, raw.where, path), raw.layout


def read_for_scoring(path: str) -> tuple[pd.DataFrame, list[str]]:
    """One file of rows to score: the valid rows (the label optional) with their extra columns
    and `source_file` / `source_row`, and one message per invalid row (reported, not dropped).
    """
    raw = raw_table(path, need_label=False)
    frame, good, errors = validate_columns(raw.columns, raw.where, path, collect=True)
    for name, values in raw.extras.items():
        frame[name] = pd.Series(values).iloc[good].reset_index(drop=True)
    frame["source_file"] = path
    frame["source_row"] = np.asarray(raw.numbers)[good]
    return frame, errors


def write_bad_rows(errors_per_file: Sequence[Sequence[str]], out: str) -> tuple[int, str | None]:
    """The invalid rows of several files (`read_for_scoring`'s messages, one list per file in
    the order the files were listed) to `<out>.bad_rows.csv`, one row each, every message
    naming its file, line or row, column and reason. Returns (count, the file or None)."""
    errors = [e for per_file in errors_per_file for e in per_file]
    if not errors:
        return 0, None
    bad_file = f"{out.rstrip('/')}.bad_rows.csv"
    pd.DataFrame({"error": errors}).to_csv(bad_file, index=False)
    return len(errors), bad_file


def read_table_with_layout(path: Path | str) -> tuple[pd.DataFrame, Layout]:
    """A file, folder, glob or URI: every file read and checked, rows concatenated in order."""
    if isinstance(path, Path) and path.is_dir() and not list(path.glob("*")):
        raise DataError(f"{path}: is an empty folder")
    files = list_files(str(path))
    frames, layouts = zip(*(read_file(f) for f in files), strict=True)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return frame, layouts[0]


def read_table(path: Path | str) -> pd.DataFrame:
    """Read either format: CSV with a header line, or the raw UCI files (or Parquet)."""
    return read_table_with_layout(path)[0]
