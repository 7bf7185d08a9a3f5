"""The Tune part of the console: a callback (it runs on the driver) saying when trials end
(`ray-app tune`'s trials, `ray-app train --ensemble`'s members).

A module of its own, imported only by those two commands: Tune pickles its callbacks into the
experiment state, so the class must be importable by reference, and its printer (the CLI's
terminal console) is left out of the pickled state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray import tune

from ray_app.training.loop import OBJECTIVE


class TrialConsole(tune.Callback):
    """One line per trial that ends: its epochs, its best val log loss, the best so far."""

    def __init__(self, total: int, say: Callable[[str], None], label: str = "trial") -> None:
        self.total, self.say, self.label = total, say, label
        self.ended, self.best = 0, float("inf")

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "ended": self.ended, "best": self.best, "label": self.label}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.say = lambda _: None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        loss = float(trial.metric_analysis.get(OBJECTIVE, {}).get("min", float("nan")))
        self.best = min(self.best, loss)
        running = sum(t.status == "RUNNING" for t in trials)
        self.say(f"  {self.label} {self.ended:>2}/{self.total}: {epochs:>2} epochs, val loss "
                 f"{loss:.4f}, best so far {self.best:.4f}, {running} running")  # fmt: skip
