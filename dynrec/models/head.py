"""The head MLP, written once as a function of its weights so they can be shared or per-sample.

Static weights are (in, out) and shared by the batch; generated (DUET) or spliced (online CKI) weights
are (B, in, out), one set per sample. Both go through the same batched matmul, never a loop over samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LowRank:
    """A per-sample weight kept factored, W_i = base + left @ core_i @ right (APG); never formed in `linear`."""

    base: torch.Tensor  # (in, out), shared
    left: torch.Tensor  # (in, K), shared
    core: torch.Tensor  # (B, K, K), one per sample
    right: torch.Tensor  # (K, out), shared

    def dense(self) -> torch.Tensor:
        """(B, in, out): the explicit per-sample weights (for tests and for splicing)."""
        return self.base + self.left @ self.core @ self.right


Weight = torch.Tensor | LowRank
Weights = list[tuple[Weight, torch.Tensor]]  # per layer: W (in, out), (B, in, out) or LowRank; b (out) or (B, out)


def sample_rows(weights: Weights, rows: slice) -> Weights:
    """The weights of samples `rows` only: per-sample parts sliced, shared parts as they are."""
    def cut(weight: Weight) -> Weight:
        if isinstance(weight, LowRank):
            return dataclasses.replace(weight, core=weight.core[rows])
        return weight[rows] if weight.dim() == 3 else weight

    return [(cut(weight), bias[rows] if bias.dim() == 2 else bias) for weight, bias in weights]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor) -> torch.Tensor:
    """x @ W + b for x (B, ..., in) with shared W (in, out), per-sample W (B, in, out) or a LowRank W."""
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return x @ weight + bias
    flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, in)
    bias = bias.unsqueeze(1) if bias.dim() == 2 else bias  # (B, 1, out) or (out,)
    if isinstance(weight, LowRank):  # ((x U) S_i) V without forming W_i
        out = flat @ weight.base + torch.bmm(flat @ weight.left, weight.core) @ weight.right + bias
        return out.reshape(*x.shape[:-1], weight.base.shape[-1])
    out = torch.baddbmm(bias.expand(len(flat), 1, -1), flat, weight)  # (B, T, out)
    return out.reshape(*x.shape[:-1], weight.shape[-1])


def mlp(x: torch.Tensor, weights: Weights, activation: str = "relu", residual: bool = False) -> torch.Tensor:
    """Apply the head: activation between layers, none after the last; add x back when residual."""
    act = ACTIVATIONS[activation]
    h = x
    for index, (weight, bias) in enumerate(weights):
        h = linear(h, weight, bias)
        if index < len(weights) - 1:
            h = act(h)
    return x + h if residual else h


class MLPHead(nn.Module):
    """Holds the static head weights; `forward(x, weights)` runs any weights of the same layer shapes."""

    def __init__(
        self, sizes: list[int], activation: str = "relu", residual: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"head sizes {sizes} need at least an input and an output size")
        if residual and sizes[0] != sizes[-1]:
            raise ValueError(f"a residual head needs equal input and output sizes, got {sizes}")
        self.sizes = list(sizes)
        self.activation = activation
        self.residual = residual
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.ParameterList()
        self.bias = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1 / math.sqrt(fan_in)
            self.weight.append(nn.Parameter(torch.empty(fan_in, fan_out).uniform_(-bound, bound)))
            self.bias.append(nn.Parameter(torch.zeros(fan_out)))
        if residual:  # start as the identity so the head never hurts the encoder at initialisation
            nn.init.zeros_(self.weight[-1])

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def static_weights(self) -> Weights:
        return list(zip(self.weight, self.bias, strict=True))

    def forward(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return mlp(self.dropout(x), weights or self.static_weights(), self.activation, self.residual)
