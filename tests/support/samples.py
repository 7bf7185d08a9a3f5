"""Sample inputs shared by several tests: one record, CSV layouts, the KubeRay folders."""

from __future__ import annotations

import os
from pathlib import Path

from ray_app.core.schema import RAW_COLUMNS

from .procs import REPO

DATA = REPO / "data"
KUBERAY = REPO / "kuberay"
CRDS = Path(os.environ.get("RAY_APP_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay" / "crds"))
# One valid /predict record (the first row of adult.data).
RECORD = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
    "education_num": 13, "marital_status": "Never-married", "occupation": "Adm-clerical",
    "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital_gain": 2174,
    "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States",
}  # fmt: skip
HEADER = ",".join(c.replace("_", "-") for c in RAW_COLUMNS)
GOOD_ROW = (
    "39,State-gov,77516,Bachelors,13,Never-married,Adm-clerical,Not-in-family,White,Male,"
    "2174,0,40,United-States,<=50K"
)
KAGGLE = ("age,workclass,fnlwgt,education,educational-num,marital-status,occupation,"
          "relationship,race,gender,capital-gain,capital-loss,hours-per-week,native-country,"
          "income")  # fmt: skip
OPENML = ("age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,"
          "race,sex,capital-gain,capital-loss,hours-per-week,native-country,class")  # fmt: skip


def write_layout(frame, path: Path, header: str, label_dot: bool = False, extra: bool = False):
    """`frame` (parsed, RAW_COLUMNS order) written as a CSV with `header` (same order)."""
    lines = [("id," if extra else "") + header + (",timestamp" if extra else "")]
    for i, row in enumerate(frame[RAW_COLUMNS].itertuples(index=False)):
        *features, label = row
        cells = ["?" if v is None or v != v else (f"{v:.0f}" if isinstance(v, float) else str(v))
                 for v in features]  # fmt: skip
        cells.append((">50K" if label else "<=50K") + ("." if label_dot else ""))
        line = ",".join(cells)
        lines.append(f"{i}," + line + ",2026-11-27T10:00:00" if extra else line)
    path.write_text("\n".join(lines) + "\n")
    return path
