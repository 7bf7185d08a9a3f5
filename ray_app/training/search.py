"""The hyperparameter search space, defined once: Ray Tune's param_space and Katib's parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError


class Param(BaseModel):
    """One searchable setting: its CLI/Katib name, where it lands in AppConfig, its range."""

    model_config = ConfigDict(frozen=True)

    name: str  # kebab-case: the CLI flag (--batch-size) and the Katib parameter name
    target: str  # dotted path into AppConfig, e.g. "train.batch_size"
    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: tuple[int | float, ...] | None = None
    description: str = ""
    # A budget rather than a search dimension: searches use `high`; a trial accepts [low, high].
    fixed: bool = False

    @model_validator(mode="after")
    def _range_is_valid(self) -> Param:
        if self.kind == "choice":
            if not self.values:
                raise ValueError(f"{self.name}: a choice needs values")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.name}: needs low < high")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"{self.name}: log-uniform needs low > 0")
        return self

    @property
    def camel(self) -> str:
        """Katib trialParameter name: 'batch-size' -> 'batchSize'."""
        head, *rest = self.name.split("-")
        return head + "".join(part.capitalize() for part in rest)

    @property
    def is_int(self) -> bool:
        return self.kind == "int" or (
            self.kind == "choice" and all(isinstance(v, int) for v in self.values or ())
        )

    def parse(self, text: str) -> int | float:
        """A CLI/Katib string -> a typed value inside the range; UserError otherwise."""
        try:
            value: int | float = int(text) if self.is_int else float(text)
        except ValueError:
            kind = "an integer" if self.is_int else "a number"
            raise UserError(f"--{self.name}: {text!r} is not {kind}") from None
        if self.kind == "choice":
            assert self.values is not None
            if value not in self.values:
                raise UserError(f"--{self.name}: {value} is not one of {list(self.values)}")
        else:
            assert self.low is not None and self.high is not None
            if not self.low <= value <= self.high:
                raise UserError(f"--{self.name}: {value} is outside [{self.low}, {self.high}]")
        return value

    def tune_domain(self) -> Any:
        from ray import tune

        if self.fixed:
            return int(self.high) if self.is_int and self.high is not None else self.high
        if self.kind == "choice":
            return tune.choice(list(self.values or ()))
        assert self.low is not None and self.high is not None
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        return tune.randint(int(self.low), int(self.high) + 1)  # upper bound exclusive


def search_space(max_epochs: int = 16) -> list[Param]:
    """What `ray-app tune` and the Katib Experiment search over."""
    return [
        Param(name="lr", target="train.lr", kind="loguniform", low=5e-4, high=5e-3,
              description="AdamW learning rate"),
        Param(name="weight-decay", target="train.weight_decay", kind="loguniform", low=1e-6,
              high=1e-3, description="AdamW weight decay"),
        Param(name="batch-size", target="train.batch_size", kind="choice", values=(128, 256, 512),
              description="global batch size"),
        Param(name="depth", target="model.depth", kind="int", low=1, high=4,
              description="hidden layers"),
        Param(name="width", target="model.width", kind="choice", values=(128, 256, 512),
              description="hidden units per layer"),
        Param(name="dropout", target="model.dropout", kind="uniform", low=0.0, high=0.4,
              description="dropout after each hidden layer"),
        Param(name="frequency-scale", target="model.frequency_scale", kind="loguniform",
              low=2.0, high=100.0, description="sigma of the PLR frequencies"),
        Param(name="n-frequencies", target="model.n_frequencies", kind="choice",
              values=(16, 32, 48, 64), description="PLR frequencies per feature"),
        Param(name="num-embedding-dim", target="model.num_embedding_dim", kind="choice",
              values=(8, 16, 24), description="PLR output width per feature"),
        Param(name="max-epochs", target="train.max_epochs", kind="int", low=1, high=max_epochs,
              fixed=True, description="epoch budget of one trial"),
    ]  # fmt: skip


def apply_params(cfg: AppConfig, params: dict[str, Any], space: list[Param]) -> AppConfig:
    """A copy of cfg with each named parameter written to its target."""
    by_name = {p.name: p for p in space}
    out = cfg.model_copy(deep=True)
    for name, value in params.items():
        if name not in by_name:
            raise UserError(f"unknown hyperparameter --{name}; known: {sorted(by_name)}")
        section, field = by_name[name].target.split(".")
        setattr(getattr(out, section), field, value)
    return out


def tune_param_space(space: list[Param]) -> dict[str, Any]:
    """Ray Tune's param_space: name -> tune domain."""
    return {p.name: p.tune_domain() for p in space}


def trial_config(cfg: AppConfig, params: dict[str, Any]) -> AppConfig:
    """One trial's config (Tune or Katib): sampled parameters written in, patience off.

    The scheduler (ASHA, medianstop, hyperband) decides when a trial stops, not patience.
    """
    out = apply_params(cfg, params, search_space(cfg.search.max_epochs))
    out.train.patience = out.train.max_epochs
    return out
