"""One validator: columns of strings (CSV) or typed values (Parquet) -> typed rows, vectorised;
a bad cell is named by file, line (or row) and column."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.errors import DataError
from ray_app.core.schema import LABEL_COLUMN, LABELS, NUMERIC_COLUMNS, POSITIVE_LABEL, RAW_COLUMNS

MISSING_TOKENS = {"", "?"}


def _cell_problems(column: str, values: Any) -> tuple[pd.Series, pd.Series, list[str | None]]:
    """One column, vectorised: (typed values, bad-row mask, problem text per row or None)."""
    series = pd.Series(values)
    if column in NUMERIC_COLUMNS:
        if pd.api.types.is_numeric_dtype(series):
            number = series.astype("float64")
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
