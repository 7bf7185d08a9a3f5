"""Data tests: the UCI parser, checksums, schema errors, CSV input and the splits."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ray_app.core.config import AppConfig, DataConfig
from ray_app.core.errors import DataError
from ray_app.core.schema import FEATURE_COLUMNS, LABEL_COLUMN
from ray_app.data.files import (
    RAW_COLUMNS,
    list_files,
    read_for_scoring,
    read_table,
    read_table_with_layout,
    read_uci,
    verify_checksum,
    write_bad_rows,
)
from ray_app.data.splits import (
    combine_overlap,
    count_overlap,
    feature_hashes,
    load_splits,
    overlap_mask,
)
from tests.support.samples import DATA, GOOD_ROW, HEADER, KAGGLE, OPENML, write_layout


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
        [sys.executable, "-m", "ray_app.cli.app", "data", "--data", str(path)],
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
        [sys.executable, "-m", "ray_app.cli.app", "data", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] == {"train": 26_048, "val": 6_513, "test": 16_281}


# --- your own data: layouts, one-file split, the overlap guard ------------------------------


@pytest.fixture(scope="module")
def sample():
    """500 parsed rows of the shipped training file."""
    return read_uci(DATA / "adult.data").head(500)


@pytest.mark.parametrize(
    ("layout", "header", "renamed"),
    [
        ("kaggle", KAGGLE, {"educational-num": "education_num", "gender": "sex"}),
        ("openml", OPENML, {"class": "income"}),
        ("uci-header", OPENML.removesuffix("class").title().replace("-", " ") + "Income", None),
        ("uci-header", HEADER.replace("-", "_").upper(), None),
    ],
)
def test_known_layouts_load_to_the_same_rows(tmp_path, sample, layout, header, renamed):
    path = write_layout(sample, tmp_path / "mine.csv", header, label_dot=layout == "openml")
    frame, found = read_table_with_layout(path)
    assert found.name == layout
    assert frame.equals(sample)
    if renamed is not None:
        assert found.describe()["renamed"] == renamed


def test_extra_columns_are_ignored_with_a_note(tmp_path, sample):
    path = write_layout(sample, tmp_path / "with_id.csv", KAGGLE, extra=True)
    frame, layout = read_table_with_layout(path)
    assert frame.equals(sample)
    assert layout.ignored == ("id", "timestamp")
    splits = load_splits(DataConfig(train_path=path))
    assert any("ignored column(s) ['id', 'timestamp']" in n for n in splits.provenance["notes"])


def test_two_columns_meaning_the_same_thing_are_refused(tmp_path, sample):
    path = write_layout(sample, tmp_path / "twice.csv", KAGGLE)
    text = path.read_text().splitlines()
    text = [text[0] + ",sex"] + [ln + ",Male" for ln in text[1:]]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"line 1: columns 'gender' and 'sex' both mean 'sex'"):
        read_table(path)


def test_one_file_is_split_into_train_validation_and_test(tmp_path):
    full = read_uci(DATA / "adult.data")
    path = write_layout(full, tmp_path / "adult.csv", KAGGLE)
    splits = load_splits(DataConfig(train_path=path))
    sizes = splits.sizes()
    # sklearn rounds a held-out share up.
    assert sizes["test"] == math.ceil(0.2 * len(full)) and sum(sizes.values()) == len(full)
    assert sizes["val"] == math.ceil(0.2 * (len(full) - sizes["test"]))
    rates = [f[LABEL_COLUMN].mean() for f in (splits.train, splits.val, splits.test)]
    assert max(rates) - min(rates) < 0.003  # stratified
    assert "split of" in splits.provenance["test_source"]
    assert splits.provenance["train_layout"]["layout"] == "kaggle"
    # No test row is a training row: the rows are partitioned, duplicates at the file's rate.
    assert count_overlap(splits.train, splits.test) <= 0.002 * sizes["test"]
    again = load_splits(DataConfig(train_path=path))
    assert again.test.equals(splits.test)  # seeded
    other = load_splits(DataConfig(train_path=path, test_fraction=0.3, seed=1))
    assert other.sizes()["test"] == math.ceil(0.3 * len(full))
    # Subsampling shrinks training, never the held-out test rows.
    small = load_splits(DataConfig(train_path=path, subsample=3000))
    assert small.test.equals(splits.test) and small.sizes()["train"] == 2400


def test_the_shipped_pairs_natural_overlap_is_accepted_and_logged(splits):
    assert splits.provenance["test_overlap"] == {"rows": 26, "of": 16_281, "rate": 0.001597}


def test_a_test_file_that_repeats_training_rows_is_refused(tmp_path):
    """The seed's adult.csv holds adult.test's rows: with the shipped adult.test as the test
    file, every test row is a training row."""
    seed_csv = tmp_path / "adult.csv"
    both = pd.concat([read_uci(DATA / "adult.data"), read_uci(DATA / "adult.test")])
    write_layout(both, seed_csv, KAGGLE)
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(train_path=seed_csv, test_path=DATA / "adult.test"))
    text = str(info.value)
    assert "16281 of 16281 test rows (100.00%) repeat rows of the training file" in text
    assert str(seed_csv) in text and str(DATA / "adult.test") in text
    assert "--max-test-overlap" in text
    # A limit the user raises on purpose lets it through, and the count is recorded.
    allowed = load_splits(DataConfig(train_path=seed_csv, test_path=DATA / "adult.test",
                                     max_test_overlap=1.0))  # fmt: skip
    assert allowed.provenance["test_overlap"]["rows"] == 16_281


def test_the_shipped_test_file_is_the_default_only_for_the_shipped_training_data(tmp_path):
    mine = write_layout(read_uci(DATA / "adult.data").head(2000), tmp_path / "m.csv", OPENML)
    assert "split of" in load_splits(DataConfig(train_path=mine)).provenance["test_source"]
    shipped = load_splits(DataConfig(train_path=DATA / "adult.data"))
    assert shipped.provenance["test_source"] == str(DATA / "adult.test")


# --- the overlap guard with a folder of training files -------------------------------------


def test_the_overlap_guard_ors_the_masks_of_every_training_file(tmp_path, sample):
    """Regressions this catches: the per-file masks combined with `&` (a row must then be in
    every file: 0 here), only the last file's mask kept (8), the masks summed instead of OR-ed
    (a row in two files counted twice: 23), or a folder read as its last file only."""
    unique = sample.drop_duplicates(subset=FEATURE_COLUMNS).reset_index(drop=True)
    a, b, c = unique.iloc[0:100], unique.iloc[100:200], unique.iloc[200:300]
    c = pd.concat([c, a.iloc[0:10]])  # rows 0-9 are in the first AND the last file
    folder = tmp_path / "train"
    folder.mkdir()
    for name, part in (("a.csv", a), ("b.csv", b), ("c.csv", c)):
        write_layout(part, folder / name, KAGGLE)
    # 5 rows of a (also in c), 10 of b only, 3 of c only, 30 in no training file.
    test = pd.concat([unique.iloc[0:5], unique.iloc[120:130], unique.iloc[250:253],
                      unique.iloc[300:330]], ignore_index=True)  # fmt: skip
    test_path = write_layout(test, tmp_path / "test.csv", KAGGLE)

    # The Ray Data path: one mask per file (in its read task), combined on the driver.
    files = list_files(str(folder))
    assert [Path(f).name for f in files] == ["a.csv", "b.csv", "c.csv"]
    hashes = feature_hashes(read_table(test_path))
    masks = [overlap_mask(hashes, read_table(f)) for f in files]
    assert [int(m.sum()) for m in masks] == [5, 10, 8]
    assert combine_overlap(masks) == 18
    # The in-process path: the folder's rows concatenated, one mask.
    assert count_overlap(read_table(folder), test) == 18
    splits = load_splits(DataConfig(train_path=folder, test_path=test_path,
                                    max_test_overlap=0.5))  # fmt: skip
    assert splits.provenance["test_overlap"] == {"rows": 18, "of": 48, "rate": 0.375}
    # 18 of 48 is above a 30 % limit: refused, whichever file the repeated rows are in.
    with pytest.raises(DataError, match=r"18 of 48 test rows \(37.50%\) repeat rows"):
        load_splits(DataConfig(train_path=folder, test_path=test_path, max_test_overlap=0.3))
    with pytest.raises(DataError, match="no training files"):
        combine_overlap([])


# --- batch scoring's bad rows, several input files ------------------------------------------


def test_bad_rows_of_several_files_name_their_own_file_and_line(tmp_path, sample):
    """`ray-app predict` over a folder of three files (CSV with a header, raw UCI, Parquet),
    each with invalid rows: every bad row is reported once, under its own file and its own
    line or row, in the files' order; the good rows keep theirs (source_file, source_row).

    Regressions this catches: only the last file's errors written (the per-file lists
    overwritten, not concatenated), line numbers counted across the folder instead of per
    file, rows numbered from 0 or by position among the good rows, or a bad row dropped."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [GOOD_ROW] * 4
    rows[1] = GOOD_ROW.replace("39,", "abc,", 1)  # line 3 (after the header)
    (folder / "a.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    uci = [GOOD_ROW.replace(",", ", ")] * 3
    uci[0] = uci[0].replace("State-gov, 77516", "State-gov, -1")  # line 1: fnlwgt < 0
    uci[2] = uci[2].replace("<=50K", "maybe")  # line 3: an unknown label
    (folder / "b.data").write_text("\n".join(uci) + "\n")
    frame = sample.head(5).copy()
    frame.loc[frame.index[3], "capital_gain"] = -5.0  # row 4
    frame.to_parquet(folder / "c.parquet", index=False)

    files = list_files(str(folder))
    assert [Path(f).name for f in files] == ["a.csv", "b.data", "c.parquet"]
    read = [read_for_scoring(f) for f in files]
    count, bad_file = write_bad_rows([errors for _, errors in read], str(tmp_path / "out"))
    assert count == 4 and bad_file == f"{tmp_path / 'out'}.bad_rows.csv"
    assert pd.read_csv(bad_file)["error"].tolist() == [
        f"{files[0]}: line 3, column 'age': 'abc' is not a number",
        f"{files[1]}: line 1, column 'fnlwgt': '-1' must be a finite number >= 0",
        f"{files[1]}: line 3, column 'income': unknown label 'maybe'; expected one of "
        "['<=50K', '>50K']",
        f"{files[2]}: row 4, column 'capital_gain': '-5.0' must be a finite number >= 0",
    ]
    good = pd.concat([f for f, _ in read], ignore_index=True)
    assert list(zip(good["source_file"].map(lambda p: Path(p).name), good["source_row"],
                    strict=True)) == [("a.csv", 2), ("a.csv", 4), ("a.csv", 5), ("b.data", 2),
                                      ("c.parquet", 1), ("c.parquet", 2), ("c.parquet", 3),
                                      ("c.parquet", 5)]  # fmt: skip
    # No bad row: no file written.
    assert write_bad_rows([[], []], str(tmp_path / "clean")) == (0, None)
    assert not (tmp_path / "clean.bad_rows.csv").exists()
