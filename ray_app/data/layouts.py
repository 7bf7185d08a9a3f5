"""Which columns a file has: the layouts people share (UCI names, Kaggle's `adult.csv`,
OpenML's), resolved by one column resolver to our canonical names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray_app.core.errors import DataError
from ray_app.core.schema import FEATURE_COLUMNS, LABEL_COLUMN, RAW_COLUMNS

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
