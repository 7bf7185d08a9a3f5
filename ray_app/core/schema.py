"""The UCI Adult schema, defined once: columns, categories, labels, the decision threshold.

Every layer reads these names from here: the file reader and its validation, the
preprocessor, the HTTP API's record model, the drift reference, the MLflow signature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMERIC_COLUMNS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss",
                   "hours_per_week"]  # fmt: skip
CATEGORICAL_COLUMNS = ["workclass", "education", "marital_status", "occupation", "relationship",
                       "race", "sex", "native_country"]  # fmt: skip
LABEL_COLUMN = "income"
# Order of the 15 columns in the raw UCI files (adult.names).
RAW_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
               "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
               "hours_per_week", "native_country", LABEL_COLUMN]  # fmt: skip
FEATURE_COLUMNS = [c for c in RAW_COLUMNS if c != LABEL_COLUMN]

# Categories per column as listed in data/adult.names (the UCI schema).
# fmt: off
CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
                  "State-gov", "Without-pay", "Never-worked"),
    "education": ("Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm",
                  "Assoc-voc", "9th", "7th-8th", "12th", "Masters", "1st-4th", "10th",
                  "Doctorate", "5th-6th", "Preschool"),
    "marital_status": ("Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed",
                       "Married-spouse-absent", "Married-AF-spouse"),
    "occupation": ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
                   "Prof-specialty", "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical",
                   "Farming-fishing", "Transport-moving", "Priv-house-serv", "Protective-serv",
                   "Armed-Forces"),
    "relationship": ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative",
                     "Unmarried"),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "native_country": ("United-States", "Cambodia", "England", "Puerto-Rico", "Canada",
                       "Germany", "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece",
                       "South", "China", "Cuba", "Iran", "Honduras", "Philippines", "Italy",
                       "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal", "Ireland", "France",
                       "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia",
                       "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand", "Yugoslavia",
                       "El-Salvador", "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands"),
}
# fmt: on
# The only columns with unknown values ('?') in the UCI files.
NULLABLE_COLUMNS = ("workclass", "occupation", "native_country")
# Plausible bounds of the numeric columns; outside them a served request is a client error.
NUMERIC_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (0, 120),
    "fnlwgt": (0, 5_000_000),
    "education_num": (1, 16),
    "capital_gain": (0, 1_000_000),
    "capital_loss": (0, 100_000),
    "hours_per_week": (0, 168),
}

NEGATIVE_LABEL = "<=50K"
POSITIVE_LABEL = ">50K"
LABELS = (NEGATIVE_LABEL, POSITIVE_LABEL)
# P(>50K) at or above this is the positive label: in metrics, the API, the pyfunc, batch scoring.
THRESHOLD = 0.5


def predicted(probability: Any) -> np.ndarray:
    """1 where P(>50K) reaches the threshold, else 0 (int array of the same shape)."""
    return (np.asarray(probability, dtype=np.float64) >= THRESHOLD).astype(np.int64)


def label_names(probability: Any) -> np.ndarray:
    """'>50K' / '<=50K' per probability (object array)."""
    return np.where(predicted(probability) == 1, POSITIVE_LABEL, NEGATIVE_LABEL).astype(object)


def label_name(probability: float) -> str:
    """The label of one probability (the API's per-record answer)."""
    return POSITIVE_LABEL if probability >= THRESHOLD else NEGATIVE_LABEL
