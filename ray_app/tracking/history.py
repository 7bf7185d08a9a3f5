"""Every move of the champion alias, recorded in the registry, and the rollback it allows.

Each move is one tag on the registered model, `<alias>.moved.<UTC ms>`, holding the move as
JSON (time, from -> to, kind, reason, the figures behind it). Tags, not an artifact: MLflow's
registry keeps them on sqlite and on a tracking server alike, with no artifact store to reach;
one tag per move is written once and never rewritten (no read-modify-write of a shared
document that two movers could race on); and a reader needs only the registered model.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from ray_app.core.config import TrackingConfig
from ray_app.core.errors import UserError

Kind = Literal["promotion", "manual", "rollback"]


class AliasMove(BaseModel):
    """One move of an alias."""

    model_config = ConfigDict(extra="forbid")

    time: str  # ISO 8601, UTC
    alias: str
    from_version: str | None  # None: the alias named no version before
    to_version: str
    kind: Kind
    reason: str
    figures: dict[str, float | None] = {}


def _prefix(alias: str) -> str:
    return f"{alias}.moved."


def current(cfg: TrackingConfig, client: MlflowClient | None = None) -> str | None:
    """The version the champion alias names now (None: none yet)."""
    client = client or MlflowClient()
    try:
        found = client.get_model_version_by_alias(cfg.registered_model, cfg.champion_alias)
    except MlflowException:
        return None
    return str(found.version)


def move_alias(cfg: TrackingConfig, version: str, kind: Kind, reason: str,
               figures: dict[str, float | None] | None = None) -> AliasMove:  # fmt: skip
    """Point the champion alias at `version` and record the move (the one way it moves)."""
    client = MlflowClient()
    before = current(cfg, client)
    client.set_registered_model_alias(cfg.registered_model, cfg.champion_alias, version)
    now = time.time()
    move = AliasMove(
        time=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        alias=cfg.champion_alias, from_version=before, to_version=str(version), kind=kind,
        reason=reason, figures=figures or {},
    )  # fmt: skip
    key = f"{_prefix(cfg.champion_alias)}{int(now * 1000):013d}"
    client.set_registered_model_tag(cfg.registered_model, key, move.model_dump_json())
    return move


def history(cfg: TrackingConfig) -> list[AliasMove]:
    """The champion alias's moves, oldest first (empty: no registered model or no move)."""
    try:
        model = MlflowClient().get_registered_model(cfg.registered_model)
    except MlflowException:
        return []
    prefix = _prefix(cfg.champion_alias)
    keys = sorted(k for k in model.tags if k.startswith(prefix))
    return [AliasMove.model_validate(json.loads(model.tags[k])) for k in keys]


def rollback_target(moves: list[AliasMove]) -> str:
    """The version a rollback returns to: the champion before the current one, where a
    rollback undoes the move it reverted (so a second rollback goes one step further back,
    not forward again)."""
    held: list[str] = []  # the champions in force, oldest first, rolled-back ones removed
    for move in moves:
        if not held and move.from_version is not None:
            held.append(move.from_version)
        if move.kind == "rollback":
            while held and held[-1] != move.to_version:
                held.pop()
            if not held:
                held.append(move.to_version)
        else:
            held.append(move.to_version)
    if len(held) < 2:
        first = f"v{held[0]} is the first champion" if held else "the alias never moved"
        raise UserError(f"nothing to roll back to: {first} (ray-app history lists the moves)")
    return held[-2]


def rollback(cfg: TrackingConfig) -> AliasMove:
    """Move the champion alias back one step (see `rollback_target`) and record it."""
    moves = history(cfg)
    now = current(cfg)
    if moves and moves[-1].to_version != now:
        raise UserError(
            f"the {cfg.champion_alias} alias names v{now} but its last recorded move went to "
            f"v{moves[-1].to_version}: it was moved outside ray-app, so one step back is not "
            "known; move it explicitly (ray-app alias-set <version>)"
        )
    target = rollback_target(moves)
    return move_alias(cfg, target, "rollback", f"rollback from v{now} to v{target}")
