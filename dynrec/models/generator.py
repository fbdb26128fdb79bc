"""The DUET-style hypernetwork: a sample's recent items -> a code z -> that sample's head weights.

DUET (Lv et al., WWW 2023) reads the recent sequence with a GRU, maps its last state through a two-layer
Tanh MLP to z, and generates every head layer as a linear function of z. Here a generated layer is the
static head's layer plus a generated delta, W_i = W0 + G(z_i), so a generator that outputs zero is the
static model: training on top of a static model starts exactly where that model is. The low-rank form
(APG, Yan et al., NeurIPS 2022) generates only a K x K core, W_i = W0 + U S(z_i) V, applied factored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynrec.config import ModelConfig
from dynrec.errors import ConfigError
from dynrec.models.gru4rec import realign
from dynrec.models.head import LowRank, Weights

SOURCES = ("gru", "backbone")
FORMS = ("full", "lowrank")


def recent_windows(seq: torch.Tensor, window: int) -> torch.Tensor:
    """(B, L) left-padded histories -> (B, L, window): the last `window` items up to each position."""
    return nn.functional.pad(seq, (window - 1, 0)).unfold(1, window, 1)


class HeadGenerator(nn.Module):
    """Generates per-sample weights for head layers of the given shapes from a window or a backbone state."""

    def __init__(self, layer_shapes: list[tuple[int, int]], d: int, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.generator_source not in SOURCES:
            raise ConfigError(f"model.generator_source: {cfg.generator_source!r} is not one of {SOURCES}")
        if cfg.generator_form not in FORMS:
            raise ConfigError(f"model.generator_form: {cfg.generator_form!r} is not one of {FORMS}")
        if not 0 <= cfg.generator_dropout < 1:
            raise ConfigError(f"model.generator_dropout: {cfg.generator_dropout} is not in [0, 1)")
        self.source, self.form, self.window = cfg.generator_source, cfg.generator_form, cfg.generator_window
        self.shapes = list(layer_shapes)
        z, k = cfg.code_size, cfg.generator_rank
        self.gru = nn.GRU(d, d, batch_first=True) if self.source == "gru" else None
        self.to_code = nn.Sequential(nn.Linear(d, z), nn.Tanh(), nn.Linear(z, z), nn.Tanh())
        # no module at all when off, so runs without it draw the same random numbers as before it existed
        self.code_dropout = nn.Dropout(cfg.generator_dropout) if cfg.generator_dropout > 0 else nn.Identity()
        width = (lambda i, o: i * o) if self.form == "full" else (lambda i, o: k * k)
        self.splits = [n for i, o in self.shapes for n in (width(i, o), o)]  # per layer: weight delta, bias delta
        self.maps = nn.Linear(z, sum(self.splits))  # every layer's deltas in one matmul: fewer ops per request
        nn.init.normal_(self.maps.weight, std=0.01 / math.sqrt(z))  # small deltas: start near the static head
        nn.init.zeros_(self.maps.bias)
        if self.form == "lowrank":
            self.left = nn.ParameterList(nn.Parameter(torch.randn(i, k) / math.sqrt(i)) for i, _ in self.shapes)
            self.right = nn.ParameterList(nn.Parameter(torch.randn(k, o) / math.sqrt(k)) for _, o in self.shapes)

    def code(
        self, window_emb: torch.Tensor | None, valid: torch.Tensor, state: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, w, d) left-padded window embeddings, (N, w) validity, or an (N, d) backbone state -> z (N, z)."""
        if self.gru is None:
            if state is None:
                raise ConfigError("model.generator_source: backbone needs a candidate-free state; use gru")
            return self.to_code(state)
        lengths = valid.sum(1)  # (N,)
        right = realign(window_emb, lengths, to_left=False)  # real items first, so padding never enters the GRU
        out, _ = self.gru(right)  # (N, w, d)
        last = out.gather(1, (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, out.shape[-1]))[:, 0]
        return self.to_code(last * (lengths > 0).unsqueeze(-1))  # (N, z); an empty window reads a zero state

    def forward(self, z: torch.Tensor, static: Weights) -> Weights:
        """The per-sample weights W_i = W0 + delta(z_i), b_i = b0 + delta_b(z_i), one set per row of z."""
        weights: Weights = []
        deltas = self.maps(self.code_dropout(z)).split(self.splits, dim=1)  # weight delta, bias delta, ...
        for index, ((fan_in, fan_out), (w0, b0)) in enumerate(zip(self.shapes, static, strict=True)):
            delta, bias = deltas[2 * index], b0 + deltas[2 * index + 1]  # (N, in*out or K*K), (N, out)
            if self.form == "full":
                weights.append((w0 + delta.view(-1, fan_in, fan_out), bias))  # (N, in, out)
            else:
                core = delta.view(-1, self.left[index].shape[1], self.left[index].shape[1])  # (N, K, K)
                weights.append((LowRank(w0, self.left[index], core, self.right[index]), bias))
        return weights
