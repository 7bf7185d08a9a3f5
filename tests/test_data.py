"""Data tests: the UCI parser, checksums, schema errors, CSV input and the splits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ray_app.config import AppConfig, DataConfig
from ray_app.data import (
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    RAW_COLUMNS,
    load_splits,
    read_table,
    read_uci,
    verify_checksum,
)
from ray_app.errors import DataError

from .conftest import REPO

DATA = REPO / "data"
HEADER = ",".join(c.replace("_", "-") for c in RAW_COLUMNS)
GOOD_ROW = (
    "39,State-gov,77516,Bachelors,13,Never-married,Adm-clerical,Not-in-family,White,Male,"
    "2174,0,40,United-States,<=50K"
)


def test_shipped_files_parse_with_exact_row_counts():
    train = read_uci(DATA / "adult.data")
    test = read_uci(DATA / "adult.test")
    assert len(train) == 32_561
    assert len(test) == 16_281  # the '|1x3 Cross validator' line is skipped
    assert list(train.columns) == RAW_COLUMNS
    assert set(test[LABEL_COLUMN]) == {0, 1}  # '<=50K.' / '>50K.' had their dots stripped
    assert train["workclass"].iloc[0] == "State-gov"  # leading space stripped
    assert train["occupation"].isna().sum() == 1_843  # '?' became missing
    assert train["age"].dtype.kind == "f"


def test_shipped_checksums_verify_and_a_changed_byte_fails(tmp_path: Path):
    verify_checksum(DATA / "adult.data")
    for name in ("adult.data", "SHA256SUMS"):
        shutil.copy(DATA / name, tmp_path / name)
    raw = bytearray((tmp_path / "adult.data").read_bytes())
    raw[0:2] = b"40"
    (tmp_path / "adult.data").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_checksum(tmp_path / "adult.data")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (GOOD_ROW.replace("39,", "abc,", 1), r"line 3, column 'age': 'abc' is not a number"),
        (GOOD_ROW.replace("<=50K", "maybe"), r"line 3, column 'income': unknown label 'maybe'"),
        (GOOD_ROW.replace(",13,", ",,", 1), r"line 3, column 'education_num': missing value"),
        (GOOD_ROW.rsplit(",", 1)[0], r"line 3: expected 15 fields as in the header, found 14"),
        (GOOD_ROW.replace("2174", "-5"), r"line 3, column 'capital_gain': '-5' must be"),
    ],
)
def test_malformed_csv_rows_name_file_line_and_column(tmp_path: Path, row: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{GOOD_ROW}\n{row}\n")
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_missing_column_in_header_is_named(tmp_path: Path):
    path = tmp_path / "no_age.csv"
    path.write_text(HEADER.replace("age,", "", 1) + "\n" + GOOD_ROW.split(",", 1)[1] + "\n")
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) \['age'\]"):
        read_table(path)


def test_raw_uci_wrong_field_count(tmp_path: Path):
    path = tmp_path / "adult.data"
    path.write_text(GOOD_ROW.replace(",", ", ") + "\n39, State-gov, 77516\n")
    with pytest.raises(DataError, match=r"line 2: expected 15 comma-separated fields"):
        read_table(path)


def test_csv_with_header_equals_raw_uci_rows(tmp_path: Path):
    raw = DATA / "adult.test"
    lines = [ln for ln in raw.read_text().splitlines() if ln and not ln.startswith("|")][:200]
    csv_path = tmp_path / "adult.csv"
    csv_path.write_text(HEADER + "\n" + "\n".join(ln.replace(", ", ",") for ln in lines) + "\n")
    uci_path = tmp_path / "adult.test"
    uci_path.write_text("|1x3 Cross validator\n" + "\n".join(lines) + "\n\n")
    from_csv, from_uci = read_table(csv_path), read_table(uci_path)
    assert from_csv.equals(from_uci)


def test_splits_are_stratified_seeded_and_use_official_test(splits):
    again = load_splits(AppConfig().data)
    assert splits.train.equals(again.train)
    assert splits.sizes() == {"train": 26_048, "val": 6_513, "test": 16_281}
    rates = [frame[LABEL_COLUMN].mean() for frame in (splits.train, splits.val)]
    assert abs(rates[0] - rates[1]) < 0.002
    other = load_splits(DataConfig(seed=7))
    assert not splits.train.equals(other.train)
    assert list(splits.test.columns[:-1]) == FEATURE_COLUMNS


def test_cli_data_error_exits_nonzero_without_traceback(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace('39,', 'abc,', 1)}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ray_app.cli", "data", "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}: line 3, column 'age': 'abc' is not a number" in " ".join(proc.stderr.split())


def test_cli_data_json(tmp_path: Path):
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "ray_app.cli", "data", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] == {"train": 26_048, "val": 6_513, "test": 16_281}
