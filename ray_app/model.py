"""Tabular MLP: categorical embeddings + periodic (PLR) numeric embeddings -> MLP -> logit.

PLR follows Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning": each scalar x_i becomes [cos(2*pi*c_i*x_i), sin(2*pi*c_i*x_i)] with trainable
frequencies c_i ~ N(0, sigma), then a per-feature Linear and ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ray_app.config import ModelConfig


class PeriodicEmbedding(nn.Module):
    """Numeric features (B, F) -> ReLU(Linear([cos, sin](2*pi*c*x))) of shape (B, F, D)."""

    def __init__(self, n_features: int, n_frequencies: int, sigma: float, dim: int) -> None:
        super().__init__()
        # A large sigma lets the embedding resolve fine structure of quantile-normal inputs.
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        # One Linear per feature, stored as a batched weight: (F, 2K, D).
        bound = 1.0 / math.sqrt(2 * n_frequencies)
        self.weight = nn.Parameter(
            torch.empty(n_features, 2 * n_frequencies, dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x.unsqueeze(-1) * self.frequencies  # (B, F, K)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, F, 2K)
        out = torch.einsum("bfk,fkd->bfd", periodic, self.weight) + self.bias  # (B, F, D)
        return torch.relu(out)


class TabularMLP(nn.Module):
    """Embeddings of every column, concatenated, through `depth` ReLU blocks to one logit."""

    def __init__(self, cfg: ModelConfig, cardinalities: list[int], n_numeric: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.cat_embeddings = nn.ModuleList(
            nn.Embedding(n, cfg.cat_embedding_dim) for n in cardinalities
        )
        self.num_embedding: PeriodicEmbedding | None = None
        if cfg.num_embedding == "plr":
            self.num_embedding = PeriodicEmbedding(
                n_numeric, cfg.n_frequencies, cfg.frequency_scale, cfg.num_embedding_dim
            )
            num_width = n_numeric * cfg.num_embedding_dim
        else:
            num_width = n_numeric  # plain MLP: scaled numbers go straight in
        layers: list[nn.Module] = []
        width_in = len(cardinalities) * cfg.cat_embedding_dim + num_width
        for _ in range(cfg.depth):
            layers += [nn.Linear(width_in, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width_in = cfg.width
        layers.append(nn.Linear(width_in, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """x_cat (B, C) int64, x_num (B, F) float32 -> logits (B,)."""
        parts = [emb(x_cat[:, j]) for j, emb in enumerate(self.cat_embeddings)]  # C x (B, E)
        if self.num_embedding is not None:
            parts.append(self.num_embedding(x_num).flatten(1))  # (B, F*D)
        else:
            parts.append(x_num)
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
