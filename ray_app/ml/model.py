"""Tabular MLP: categorical embeddings + periodic (PLR) numeric embeddings -> MLP -> logit.

PLR follows Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning": each scalar x_i becomes [cos(2*pi*c_i*x_i), sin(2*pi*c_i*x_i)] with trainable
frequencies c_i ~ N(0, sigma), then a per-feature Linear and ReLU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ray_app.core.config import ModelConfig


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


class StackedMLP(nn.Module):
    """K TabularMLPs of one config (a deep ensemble), their weights stacked on a leading member
    axis so that one forward pass scores every member: B rows -> logits (K, B), not K calls.

    The same arithmetic as TabularMLP.forward, member by member (a test holds them equal);
    inference only (no dropout).
    """

    def __init__(self, members: list[TabularMLP]) -> None:
        super().__init__()
        first = members[0]
        if any(m.cfg != first.cfg for m in members):
            raise ValueError("stacked members must share one model config")
        self.cfg, self.members = first.cfg, len(members)

        def stack(tensors: list[Any]) -> nn.Parameter:
            return nn.Parameter(torch.stack([t.detach() for t in tensors]), requires_grad=False)

        # Column j's table of every member: (K, n_j, E).
        self.cat_tables = nn.ParameterList(
            stack([m.cat_embeddings[j].weight for m in members])
            for j in range(len(first.cat_embeddings))
        )
        self.plr: nn.ParameterList | None = None
        if first.num_embedding is not None:
            plr = [m.num_embedding for m in members if m.num_embedding is not None]
            self.plr = nn.ParameterList([
                stack([p.frequencies for p in plr]),  # (K, F, Kf)
                stack([p.weight for p in plr]),  # (K, F, 2Kf, D)
                stack([p.bias for p in plr]),  # (K, F, D)
            ])  # fmt: skip
        linears = [[layer for layer in m.mlp if isinstance(layer, nn.Linear)] for m in members]
        # Layer i of every member, transposed for baddbmm: weights (K, in, out), biases (K, 1, out).
        self.weights = nn.ParameterList(
            stack([ls[i].weight.T for ls in linears]) for i in range(len(linears[0]))
        )
        self.biases = nn.ParameterList(
            stack([ls[i].bias.unsqueeze(0) for ls in linears]) for i in range(len(linears[0]))
        )

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """x_cat (B, C) int64, x_num (B, F) float32 -> logits (K, B)."""
        parts = [table[:, x_cat[:, j]] for j, table in enumerate(self.cat_tables)]  # C x (K,B,E)
        if self.plr is not None:
            frequencies, weight, bias = self.plr
            angles = 2 * math.pi * x_num[None, :, :, None] * frequencies[:, None]  # (K, B, F, Kf)
            periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (K,B,F,2Kf)
            out = torch.einsum("mbfk,mfkd->mbfd", periodic, weight) + bias[:, None]
            parts.append(torch.relu(out).flatten(2))  # (K, B, F*D)
        else:
            parts.append(x_num.expand(self.members, -1, -1))
        h = torch.cat(parts, dim=-1)  # (K, B, width_in)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)  # (K, B, out)
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)
