"""Load, validate and split the UCI Adult data: the raw UCI files or a CSV with a header in any
of the layouts people share (UCI names, Kaggle's `adult.csv`, OpenML's), resolved by one
column resolver; one file is split into train/validation/test; a test file is checked for rows
that repeat the training data."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ray_app.core.config import DataConfig
from ray_app.core.errors import DataError

NUMERIC_COLUMNS = [
    "age",
    "fnlwgt",
    "education_num",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
]
CATEGORICAL_COLUMNS = [
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
]
LABEL_COLUMN = "income"
# Order of the 15 columns in the raw UCI files (adult.names).
RAW_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    LABEL_COLUMN,
]
FEATURE_COLUMNS = [c for c in RAW_COLUMNS if c != LABEL_COLUMN]
# Categories per column as listed in data/adult.names (the UCI schema).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": (
        "Private",
        "Self-emp-not-inc",
        "Self-emp-inc",
        "Federal-gov",
        "Local-gov",
        "State-gov",
        "Without-pay",
        "Never-worked",
    ),
    "education": (
        "Bachelors",
        "Some-college",
        "11th",
        "HS-grad",
        "Prof-school",
        "Assoc-acdm",
        "Assoc-voc",
        "9th",
        "7th-8th",
        "12th",
        "Masters",
        "1st-4th",
        "10th",
        "Doctorate",
        "5th-6th",
        "Preschool",
    ),
    "marital_status": (
        "Married-civ-spouse",
        "Divorced",
        "Never-married",
        "Separated",
        "Widowed",
        "Married-spouse-absent",
        "Married-AF-spouse",
    ),
    "occupation": (
        "Tech-support",
        "Craft-repair",
        "Other-service",
        "Sales",
        "Exec-managerial",
        "Prof-specialty",
        "Handlers-cleaners",
        "Machine-op-inspct",
        "Adm-clerical",
        "Farming-fishing",
        "Transport-moving",
        "Priv-house-serv",
        "Protective-serv",
        "Armed-Forces",
    ),
    "relationship": (
        "Wife",
        "Own-child",
        "Husband",
        "Not-in-family",
        "Other-relative",
        "Unmarried",
    ),
    "race": (
        "White",
        "Asian-Pac-Islander",
        "Amer-Indian-Eskimo",
        "Other",
        "Black",
    ),
    "sex": (
        "Female",
        "Male",
    ),
    "native_country": (
        "United-States",
        "Cambodia",
        "England",
        "Puerto-Rico",
        "Canada",
        "Germany",
        "Outlying-US(Guam-USVI-etc)",
        "India",
        "Japan",
        "Greece",
        "South",
        "China",
        "Cuba",
        "Iran",
        "Honduras",
        "Philippines",
        "Italy",
        "Poland",
        "Jamaica",
        "Vietnam",
        "Mexico",
        "Portugal",
        "Ireland",
        "France",
        "Dominican-Republic",
        "Laos",
        "Ecuador",
        "Taiwan",
        "Haiti",
        "Columbia",
        "Hungary",
        "Guatemala",
        "Nicaragua",
        "Scotland",
        "Thailand",
        "Yugoslavia",
        "El-Salvador",
        "Trinadad&Tobago",
        "Peru",
        "Hong",
        "Holand-Netherlands",
    ),
}
# The only columns with unknown values ('?') in the UCI files.
NULLABLE_COLUMNS = ("workclass", "occupation", "native_country")
POSITIVE_LABEL = ">50K"
LABELS = ("<=50K", POSITIVE_LABEL)
MISSING_TOKENS = {"", "?"}
# Names other layouts use for our columns (after normalise_key): Kaggle's adult.csv
# ('educational-num', 'gender', 'income'), OpenML's ('class'), and common label names.
SYNONYMS = {
    "educational_num": "education_num",
    "gender": "sex",
    "country": "native_country",
    "class": LABEL_COLUMN,
    "label": LABEL_COLUMN,
    "target": LABEL_COLUMN,
    "salary": LABEL_COLUMN,
    "income_bracket": LABEL_COLUMN,
}
# Which layout a header is, by the names it uses (checked in this order).
LAYOUT_MARKERS = (("kaggle", {"educational_num", "gender"}), ("openml", {"class"}))


def normalise_key(name: str) -> str:
    """'Education-Num ' -> 'education_num' (case, spaces, '-' and '.' folded)."""
    return name.strip().lower().replace("-", "_").replace(" ", "_").replace(".", "_")


def normalise_column(name: str) -> str:
    """Any known spelling of a column -> its canonical name ('gender' -> 'sex', ...)."""
    key = normalise_key(name)
    return SYNONYMS.get(key, key)


@dataclass(frozen=True)
class Layout:
    """How a file's columns map to ours: which layout, the mapping, what is ignored."""

    name: str
    mapping: dict[str, str]
    ignored: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """Layout name, the columns taken under another name, the columns ignored."""
        renamed = {k: v for k, v in self.mapping.items() if normalise_key(k) != v}
        return {"layout": self.name, "renamed": renamed, "ignored": list(self.ignored)}


UCI_LAYOUT = Layout("uci", {c: c for c in RAW_COLUMNS})


def resolve_columns(header: list[str], where: str, need_label: bool = True) -> Layout:
    """The one column resolver: a header -> Layout, or a DataError naming what is wrong."""
    wanted = RAW_COLUMNS if need_label else FEATURE_COLUMNS
    mapping: dict[str, str] = {}
    ignored: list[str] = []
    seen: dict[str, str] = {}
    for raw in header:
        canonical = normalise_column(raw)
        if canonical not in RAW_COLUMNS:  # a label is taken when present, required if asked
            ignored.append(raw.strip())
            continue
        if canonical in seen:
            raise DataError(
                f"{where}: line 1: columns {seen[canonical]!r} and {raw.strip()!r} both mean "
                f"'{canonical}'; keep one"
            )
        seen[canonical] = raw.strip()
        mapping[raw.strip()] = canonical
    missing = [c for c in wanted if c not in seen]
    if missing:
        raise DataError(
            f"{where}: line 1: missing column(s) {missing}; the header must name {wanted} "
            "(UCI names with '-' or '_', Kaggle's adult.csv or OpenML's layout)"
        )
    keys = {normalise_key(h) for h in header}
    name = next((n for n, marks in LAYOUT_MARKERS if marks & keys), "uci-header")
    return Layout(name, mapping, tuple(ignored))


@dataclass(frozen=True)
class Splits:
    """Train / validation / test frames and where they came from (`provenance`)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


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


# ---- one validator: columns of strings (CSV) or typed values (Parquet) -> typed rows -------


def _cell_problems(column: str, values: Any) -> tuple[pd.Series, pd.Series, list[str | None]]:
    """One column, vectorised: (typed values, bad-row mask, problem text per row or None)."""
    series = pd.Series(values)
    if column in NUMERIC_COLUMNS:
        if pd.api.types.is_numeric_dtype(series):
            number = series.astype("float64")
            text = number.iloc[:0].astype(str)  # filled below for bad rows only
            bad_rows = np.flatnonzero(~np.isfinite(number.to_numpy()) | (number < 0).to_numpy())
            text = pd.Series({i: str(series.iloc[i]) for i in bad_rows}, dtype=object)
            text = text.reindex(range(len(series)), fill_value="")
        else:
            text = series.astype(object).astype(str).str.strip()
            number = pd.to_numeric(text.where(~text.isin(MISSING_TOKENS)), errors="coerce")
        bad = (number.isna() | ~np.isfinite(number) | (number < 0)).to_numpy()
        problems: list[str | None] = [None] * len(series)
        for i in np.flatnonzero(bad):
            if text.iloc[i] in MISSING_TOKENS or text.iloc[i] in ("nan", "None", "<NA>"):
                problems[i] = "missing value; a number is required"
            elif pd.isna(number.iloc[i]):
                problems[i] = f"{text.iloc[i]!r} is not a number"
            else:
                problems[i] = f"{text.iloc[i]!r} must be a finite number >= 0"
        return number.astype("float64"), pd.Series(bad), problems
    if column == LABEL_COLUMN:
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            # A 0/1 (or boolean) label column, as Parquet files often hold it: 1 is >50K.
            ok = series.isin([0, 1]).to_numpy()
            problems = [None] * len(series)
            for i in np.flatnonzero(~ok):
                problems[i] = f"label {series.iloc[i]!r}; expected 0, 1, '<=50K' or '>50K'"
            return series.where(ok, 0).astype("int64"), pd.Series(~ok), problems
        text = series.astype(object).astype(str).str.strip()
        label = text.str.rstrip(".")
        bad = (~label.isin(LABELS)).to_numpy()
        problems = [None] * len(series)
        for i in np.flatnonzero(bad):
            problems[i] = f"unknown label {text.iloc[i]!r}; expected one of {list(LABELS)}"
        return (label == POSITIVE_LABEL).astype("int64"), pd.Series(bad), problems
    typed = pd.Series(_categories(values), dtype=object)
    return typed, pd.Series(np.zeros(len(series), dtype=bool)), [None] * len(series)


def _categories(values: Any) -> np.ndarray:
    """Strings stripped, '' / '?' / null -> None: vectorised in Arrow (C++), not per cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    series = pd.Series(values, dtype=object)
    try:
        array = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers in a category column: as text
        array = pa.array(series.map(lambda v: None if pd.isna(v) else str(v)), type=pa.string())
    stripped = pc.utf8_trim_whitespace(array)
    missing = pc.fill_null(pc.is_in(stripped, pa.array(sorted(MISSING_TOKENS))), True)
    result: np.ndarray = pc.if_else(missing, None, stripped).to_numpy(zero_copy_only=False)
    return result


def validate_columns(columns: dict[str, Any], where: Any, path: str, collect: bool = False) -> Any:
    """Canonical columns of one batch -> the typed frame, vectorised.

    `where(i)` names row i of the batch ('line 3', 'row 12'). By default the first bad cell,
    in reading order, raises DataError naming file, line or row, and column. With `collect`
    (batch scoring) it returns (typed frame of the good rows, their positions, one message per
    bad row) instead: bad rows are reported, never dropped silently. The label is optional
    (files to score need not have one).
    """
    wanted = [c for c in RAW_COLUMNS if c in columns]
    n = len(columns[wanted[0]])
    if n == 0:
        raise DataError(f"{path}: no data rows")
    out: dict[str, Any] = {}
    first_bad: np.ndarray = np.full(n, -1)
    messages: list[str | None] = [None] * n
    for j, column in enumerate(wanted):
        typed, bad, problems = _cell_problems(column, columns[column])
        out[column] = typed
        for i in np.flatnonzero(bad.to_numpy() & (first_bad < 0)):
            first_bad[i] = j
            messages[i] = f"{path}: {where(i)}, column '{column}': {problems[i]}"
    frame = pd.DataFrame(out, columns=wanted)
    bad_rows = np.flatnonzero(first_bad >= 0)
    if not collect:
        if len(bad_rows):
            raise DataError(str(messages[bad_rows[0]]))
        return frame
    good = np.flatnonzero(first_bad < 0)
    return frame.iloc[good].reset_index(drop=True), good, [str(messages[i]) for i in bad_rows]


# ---- files: local paths, folders, globs and URIs (s3://, gs://, file://) ------------------

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".data", ".test", ".txt")


def _filesystem(source: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if "://" in source:
        try:
            return pafs.FileSystem.from_uri(source)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
            raise DataError(f"{source}: cannot open ({exc})") from None
    return pafs.LocalFileSystem(), str(Path(source).resolve())


def _uri(fs: Any, path: str, source: str) -> str:
    if "://" not in source:
        return path
    return f"{source.split('://', 1)[0]}://{path}"


def list_files(source: str) -> list[str]:
    """A file, a folder (its table files, sorted), a glob, or a URI of any of them."""
    import fnmatch

    import pyarrow.fs as pafs

    fs, path = _filesystem(source)
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
    return [_uri(fs, f, source) for f in found]


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def _read_lines(path: str) -> list[str]:
    fs, inner = _filesystem(path)
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

    fs, inner = _filesystem(path)
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


def feature_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of the 14 parsed features (missing values hash alike)."""
    return pd.util.hash_pandas_object(frame[FEATURE_COLUMNS], index=False).to_numpy()


def count_overlap(train: pd.DataFrame, test: pd.DataFrame) -> int:
    """Test rows whose 14 features also occur in the training data."""
    return int(np.isin(feature_hashes(test), feature_hashes(train)).sum())


def _same_file(a: str, b: Path) -> bool:
    return "://" not in a and Path(a).exists() and b.exists() and Path(a).resolve() == b.resolve()


@dataclass(frozen=True)
class SplitPlan:
    """Which rows of the training file (and of a test file) go to which split.

    Computed from the labels alone, so a Ray run can apply it to blocks it never gathers:
    index arrays into the training file's rows, in the order the split takes them.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None  # None: the test rows come from a test file, all of them


def plan_splits(labels: np.ndarray, cfg: DataConfig, test_from_file: bool) -> SplitPlan:
    """Stratified, seeded test (one file only) / subsample / validation splits."""
    rest = np.arange(len(labels), dtype=np.int32 if len(labels) < 2**31 else np.int64)
    test = None
    if not test_from_file:
        rest, test = train_test_split(
            rest, test_size=cfg.test_fraction, stratify=labels, random_state=cfg.seed
        )
    if cfg.subsample is not None and cfg.subsample < len(rest):
        rest, _ = train_test_split(
            rest, train_size=cfg.subsample, stratify=labels[rest], random_state=cfg.seed
        )
    train, val = train_test_split(
        rest, test_size=cfg.val_fraction, stratify=labels[rest], random_state=cfg.seed
    )
    return SplitPlan(train, val, test)


@dataclass(frozen=True)
class Sources:
    """The files a config names, and what the overlap guard and the split need to know."""

    train: str
    test: str | None
    provenance: dict[str, Any]


def resolve_sources(cfg: DataConfig) -> Sources:
    """Which training and test files; checksums of the shipped ones."""
    shipped_train = cfg.data_dir / "adult.data"
    shipped_test = cfg.data_dir / "adult.test"
    train = str(cfg.train_path) if cfg.train_path else str(shipped_train)
    shipped = cfg.train_path is None or _same_file(str(cfg.train_path), shipped_train)
    test = str(cfg.test_path) if cfg.test_path else (str(shipped_test) if shipped else None)
    if cfg.verify_checksums:
        for path in {train, test or ""} & {str(shipped_train), str(shipped_test)}:
            verify_checksum(Path(path))
    provenance: dict[str, Any] = {"train_file": train, "notes": []}
    return Sources(train, test, provenance)


def record_test_source(labels: np.ndarray, sources: Sources, cfg: DataConfig) -> None:
    """Both labels must occur in the training data; provenance says where the test rows
    come from (a split of the training file, or the test file)."""
    if len(np.unique(labels)) < 2:
        raise DataError(
            f"{sources.train}: both labels {list(LABELS)} must occur in the training data"
        )
    if sources.test is None:
        sources.provenance["test_source"] = (
            f"split of {sources.train} (test_fraction {cfg.test_fraction}, seed {cfg.seed})"
        )
    else:
        sources.provenance.update(test_file=sources.test, test_source=sources.test)


def check_overlap(overlap: int, n_test: int, sources: Sources, cfg: DataConfig) -> dict:
    """The overlap guard: record the count, refuse above `max_test_overlap`."""
    rate = overlap / max(n_test, 1)
    if rate > cfg.max_test_overlap:
        raise DataError(
            f"{sources.test}: {overlap} of {n_test} test rows ({rate:.2%}) repeat rows of the "
            f"training file {sources.train} (same 14 features); above the "
            f"{cfg.max_test_overlap:.1%} limit (--max-test-overlap), the test figures would "
            "be computed on training rows"
        )
    return {"rows": overlap, "of": n_test, "rate": round(rate, 6)}


def describe_layout(provenance: dict[str, Any], key: str, layout: Layout, path: str) -> None:
    provenance[f"{key}_layout"] = layout.describe()
    if layout.ignored:
        provenance["notes"].append(
            f"{path}: ignored column(s) {list(layout.ignored)} (not Adult features)"
        )


def load_splits(cfg: DataConfig) -> Splits:
    """Train / validation / test in this process, and their provenance.

    - the shipped adult.data (default): its stratified, seeded validation split and the
      official adult.test;
    - one file of yours (`train_path`, no `test_path`): stratified, seeded train / validation
      / test splits of it (`test_fraction`, `val_fraction`);
    - two files: yours. Whenever the test rows come from a file, those whose 14 features also
      occur in the training file are counted; above `max_test_overlap` the run stops.

    `ray_app.data.raydata.load_datasets` does the same with Ray Data, from the same functions.
    """
    sources = resolve_sources(cfg)
    provenance = sources.provenance
    full, train_layout = read_table_with_layout(sources.train)
    describe_layout(provenance, "train", train_layout, sources.train)
    labels = full[LABEL_COLUMN].to_numpy()
    record_test_source(labels, sources, cfg)
    if sources.test is not None:
        test, test_layout = read_table_with_layout(sources.test)
        describe_layout(provenance, "test", test_layout, sources.test)
        provenance["test_overlap"] = check_overlap(
            count_overlap(full, test), len(test), sources, cfg
        )
    plan = plan_splits(labels, cfg, test_from_file=sources.test is not None)
    if plan.test is not None:
        test = full.iloc[plan.test]
    return Splits(
        train=full.iloc[plan.train].reset_index(drop=True),
        val=full.iloc[plan.val].reset_index(drop=True),
        test=test.reset_index(drop=True),
        provenance=provenance,
    )


def summarise(splits: Splits) -> dict[str, object]:
    """Row counts and positive rates per split, and where the rows came from."""
    out: dict[str, object] = {"rows": splits.sizes()}
    out["positive_rate"] = {
        name: float(np.mean(frame[LABEL_COLUMN]))
        for name, frame in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }
    out.update(splits.provenance)
    return out
