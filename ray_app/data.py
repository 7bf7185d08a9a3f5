"""Load, validate and split the UCI Adult data: the raw UCI files or a CSV with a header in any
of the layouts people share (UCI names, Kaggle's `adult.csv`, OpenML's), resolved by one
column resolver; one file is split into train/validation/test; a test file is checked for rows
that repeat the training data."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ray_app.config import DataConfig
from ray_app.errors import DataError

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
        if canonical not in wanted:
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


def _parse_label(raw: str, where: str) -> int:
    label = raw.strip().rstrip(".")
    if label not in LABELS:
        raise DataError(
            f"{where}, column '{LABEL_COLUMN}': unknown label {raw!r}; "
            f"expected one of {list(LABELS)}"
        )
    return int(label == POSITIVE_LABEL)


def _parse_number(raw: str, where: str, column: str) -> float:
    text = raw.strip()
    if text in MISSING_TOKENS:
        raise DataError(f"{where}, column '{column}': missing value; a number is required")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}, column '{column}': {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{where}, column '{column}': {text!r} must be a finite number >= 0")
    return value


def _rows_to_frame(rows: list[list[str]], line_numbers: list[int], path: Path) -> pd.DataFrame:
    """Validate string rows in RAW_COLUMNS order into a typed frame."""
    columns: dict[str, list] = {c: [] for c in RAW_COLUMNS}
    for fields, lineno in zip(rows, line_numbers, strict=True):
        where = f"{path}: line {lineno}"
        for column, raw in zip(RAW_COLUMNS, fields, strict=True):
            if column == LABEL_COLUMN:
                columns[column].append(_parse_label(raw, where))
            elif column in NUMERIC_COLUMNS:
                columns[column].append(_parse_number(raw, where, column))
            else:
                text = raw.strip()
                columns[column].append(None if text in MISSING_TOKENS else text)
    if not rows:
        raise DataError(f"{path}: no data rows")
    frame = pd.DataFrame(columns)
    for column in NUMERIC_COLUMNS:
        frame[column] = frame[column].astype("float64")
    for column in CATEGORICAL_COLUMNS:
        frame[column] = frame[column].astype("object")
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype("int64")
    return frame


def read_uci(path: Path) -> pd.DataFrame:
    """Parse raw UCI: no header, ', ' separators, '?' missing, '|' comments, 'K.' labels."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    with path.open(newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
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
    return _rows_to_frame(rows, numbers, path)


def read_csv_with_header(path: Path) -> tuple[pd.DataFrame, Layout]:
    """Parse a user CSV whose first line names the 15 columns (any order, any known layout)."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty; expected a header line")
        layout = resolve_columns(header, str(path))
        names = [h.strip() for h in header]
        by_canonical = {canonical: raw for raw, canonical in layout.mapping.items()}
        index = [names.index(by_canonical[c]) for c in RAW_COLUMNS]
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
            rows.append([fields[i] for i in index])
            numbers.append(lineno)
    return _rows_to_frame(rows, numbers, path), layout


def read_table_with_layout(path: Path) -> tuple[pd.DataFrame, Layout]:
    """Either format, and the layout it was read with."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a CSV file or a raw UCI file")
    with path.open(newline="") as fh:
        first = ""
        for line in fh:
            if line.strip() and not line.startswith("|"):
                first = line
                break
    # A first line that names any known column is a header; raw UCI starts with data.
    names = {normalise_column(field) for field in first.split(",")}
    if names & set(RAW_COLUMNS):
        return read_csv_with_header(path)
    return read_uci(path), UCI_LAYOUT


def read_table(path: Path) -> pd.DataFrame:
    """Read either format: CSV with a header line, or the raw UCI files."""
    return read_table_with_layout(path)[0]


def feature_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of the 14 parsed features (missing values hash alike)."""
    return pd.util.hash_pandas_object(frame[FEATURE_COLUMNS], index=False).to_numpy()


def count_overlap(train: pd.DataFrame, test: pd.DataFrame) -> int:
    """Test rows whose 14 features also occur in the training data."""
    return int(np.isin(feature_hashes(test), feature_hashes(train)).sum())


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def load_splits(cfg: DataConfig) -> Splits:
    """Train / validation / test, and their provenance.

    - the shipped adult.data (default): its stratified, seeded validation split and the
      official adult.test;
    - one file of yours (`train_path`, no `test_path`): stratified, seeded train / validation
      / test splits of it (`test_fraction`, `val_fraction`);
    - two files: yours. Whenever the test rows come from a file, those whose 14 features also
      occur in the training file are counted; above `max_test_overlap` the run stops.
    """
    shipped_train = cfg.data_dir / "adult.data"
    shipped_test = cfg.data_dir / "adult.test"
    train_path = cfg.train_path or shipped_train
    shipped = cfg.train_path is None or _same_file(cfg.train_path, shipped_train)
    test_path = cfg.test_path or (shipped_test if shipped else None)
    if cfg.verify_checksums:
        candidates = {train_path, *([test_path] if test_path else [])}
        for path in {p for p in candidates if p in (shipped_train, shipped_test)}:
            verify_checksum(path)
    full, train_layout = read_table_with_layout(train_path)
    provenance: dict[str, Any] = {
        "train_file": str(train_path),
        "train_layout": train_layout.describe(),
        "notes": [],
    }
    if train_layout.ignored:
        provenance["notes"].append(
            f"{train_path}: ignored column(s) {list(train_layout.ignored)} (not Adult features)"
        )
    if full[LABEL_COLUMN].nunique() < 2:
        raise DataError(f"{train_path}: both labels {list(LABELS)} must occur in the training data")
    if test_path is None:
        rest, test = train_test_split(
            full, test_size=cfg.test_fraction, stratify=full[LABEL_COLUMN], random_state=cfg.seed
        )
        provenance["test_source"] = (
            f"split of {train_path} (test_fraction {cfg.test_fraction}, seed {cfg.seed})"
        )
    else:
        rest = full
        test, test_layout = read_table_with_layout(test_path)
        overlap = count_overlap(full, test)
        rate = overlap / max(len(test), 1)
        provenance.update(
            test_file=str(test_path),
            test_layout=test_layout.describe(),
            test_source=str(test_path),
            test_overlap={"rows": overlap, "of": len(test), "rate": round(rate, 6)},
        )
        if rate > cfg.max_test_overlap:
            raise DataError(
                f"{test_path}: {overlap} of {len(test)} test rows ({rate:.2%}) repeat rows of the "
                f"training file {train_path} (same 14 features); above the "
                f"{cfg.max_test_overlap:.1%} limit (--max-test-overlap), the test figures would "
                "be computed on training rows"
            )
    if cfg.subsample is not None and cfg.subsample < len(rest):
        rest, _ = train_test_split(
            rest, train_size=cfg.subsample, stratify=rest[LABEL_COLUMN], random_state=cfg.seed
        )
    train, val = train_test_split(
        rest, test_size=cfg.val_fraction, stratify=rest[LABEL_COLUMN], random_state=cfg.seed
    )
    return Splits(
        train=train.reset_index(drop=True),
        val=val.reset_index(drop=True),
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
