"""Load, validate and split the UCI Adult data (raw UCI format or a CSV with a header)."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

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
_LABEL_ALIASES = {"class", "label", "target", "salary"}
MISSING_TOKENS = {"", "?"}


def normalise_column(name: str) -> str:
    """'Education-Num ' -> 'education_num'; label aliases -> 'income'."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_").replace(".", "_")
    return LABEL_COLUMN if key in _LABEL_ALIASES else key


@dataclass(frozen=True)
class Splits:
    """Train/validation from the training file, the official test file untouched."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

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


def read_csv_with_header(path: Path) -> pd.DataFrame:
    """Parse a user CSV whose first line names the 15 columns (any order, '-' or '_')."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty; expected a header line")
        names = [normalise_column(h) for h in header]
        missing = [c for c in RAW_COLUMNS if c not in names]
        if missing:
            raise DataError(
                f"{path}: line 1: missing column(s) {missing}; the header must name {RAW_COLUMNS}"
            )
        index = [names.index(c) for c in RAW_COLUMNS]
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
    return _rows_to_frame(rows, numbers, path)


def read_table(path: Path) -> pd.DataFrame:
    """Read either format: CSV with a header line, or the raw UCI files."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with path.open(newline="") as fh:
        first = ""
        for line in fh:
            if line.strip() and not line.startswith("|"):
                first = line
                break
    # A first line that names any known column is a header; raw UCI starts with data.
    names = {normalise_column(field) for field in first.split(",")}
    return read_csv_with_header(path) if names & set(RAW_COLUMNS) else read_uci(path)


def load_splits(cfg: DataConfig) -> Splits:
    """Load train (+ stratified, seeded validation split) and the official test set."""
    shipped_train = cfg.data_dir / "adult.data"
    shipped_test = cfg.data_dir / "adult.test"
    train_path = cfg.train_path or shipped_train
    test_path = cfg.test_path or shipped_test
    if cfg.verify_checksums:
        for path in {train_path, test_path} & {shipped_train, shipped_test}:
            verify_checksum(path)
    full = read_table(train_path)
    test = read_table(test_path)
    if cfg.subsample is not None and cfg.subsample < len(full):
        full, _ = train_test_split(
            full, train_size=cfg.subsample, stratify=full[LABEL_COLUMN], random_state=cfg.seed
        )
    if full[LABEL_COLUMN].nunique() < 2:
        raise DataError(f"{train_path}: both labels {list(LABELS)} must occur in the training data")
    train, val = train_test_split(
        full, test_size=cfg.val_fraction, stratify=full[LABEL_COLUMN], random_state=cfg.seed
    )
    return Splits(
        train=train.reset_index(drop=True),
        val=val.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )


def summarise(splits: Splits) -> dict[str, object]:
    """Row counts and positive rates per split."""
    out: dict[str, object] = {"rows": splits.sizes()}
    out["positive_rate"] = {
        name: float(np.mean(frame[LABEL_COLUMN]))
        for name, frame in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }
    return out
