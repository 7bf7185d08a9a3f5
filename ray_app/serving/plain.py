"""The seed's architecture for comparison: one FastAPI + uvicorn process scoring in-process.

    python -m ray_app.serving.plain --model-uri models:/adult-income@champion --port 8001

Same API module (validation, metrics) as the Serve ingress; only the backend differs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from ray_app.core.config import ServeConfig
from ray_app.core.constants import CHAMPION_URI, LOCAL_TRACKING_URI
from ray_app.core.settings import Settings
from ray_app.ml.scoring import Scorer
from ray_app.serving.api import Scored, create_api
from ray_app.serving.bundles import fetch_bundle
from ray_app.serving.config import is_loopback
from ray_app.serving.guards import AnonymousRefused, check_keys
from ray_app.serving.predlog import PredictionLog


@dataclass
class LocalScoring:
    """Preprocessing + model in this process."""

    scorer: Scorer
    model_version: str

    @property
    def members(self) -> int:
        return self.scorer.members

    async def score(self, columns: dict[str, list[Any]]) -> Scored:
        encoded = self.scorer.preprocessor.transform(columns)
        prob, spread = self.scorer.score_encoded(*encoded)
        return prob.tolist(), spread.tolist(), self.model_version

    async def ready(self) -> bool:
        return True


def main() -> None:
    import torch
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=CHAMPION_URI)
    parser.add_argument("--bundle-dir", default=None)
    parser.add_argument("--tracking-uri", default=LOCAL_TRACKING_URI)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-records", type=int, default=1000)
    parser.add_argument(
        "--abstain-above",
        type=float,
        default=None,
        help="members' spread above which a record gets no label",
    )
    parser.add_argument("--prediction-log", default="off", help="folder or URI; 'off': none")
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="no RAY_APP_API_KEY on a non-loopback --host: serve anyway",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    serve_args = ServeConfig(
        model_uri=args.model_uri,
        bundle_dir=args.bundle_dir,
        tracking_uri=args.tracking_uri,
        abstain_above=args.abstain_above,
        allow_anonymous=args.allow_anonymous or is_loopback(args.host),
    )
    settings = Settings()
    keys = settings.keys()
    try:  # before the model is loaded
        anonymous = check_keys(keys, serve_args.allow_anonymous)
    except AnonymousRefused as exc:
        raise SystemExit(f"error: {exc}") from None
    if anonymous:
        print(anonymous, file=sys.stderr)
    with fetch_bundle(serve_args) as (bundle, version):
        scoring = LocalScoring(Scorer.from_bundle(bundle), version)
    root = settings.prediction_log_location(args.prediction_log)
    log = PredictionLog(root, serve_args.prediction_log) if root else None
    app = create_api(lambda: scoring, lambda: args.max_records, keys=lambda: keys,
                     log=lambda: log, body_timeout_s=lambda: serve_args.body_timeout_s,
                     abstain_above=lambda: serve_args.abstain_above)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    if log is not None:  # uvicorn has stopped: write what is still buffered
        log.close()


if __name__ == "__main__":
    main()
