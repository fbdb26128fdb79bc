"""DIN (Zhou et al., KDD 2018): target attention over the history, then an MLP head gives a logit.

The attention unit reads [h, t, h - t, h * t]; its first layer is split into an h part, a t part and an
h * t part, which is exact and lets many candidates share the history's work (TargetAttention).
Weights are not softmaxed, as in the paper, and padded history positions get weight 0.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynrec.config import ModelConfig
from dynrec.models.base import Recommender
from dynrec.models.head import MLPHead, sample_rows
from dynrec.models.losses import bce_loss

# From this many candidates per history, inference scores attention with TargetAttention.scores_many: about
# 2.5x faster over the full catalogue at d = 32, a = 80 on one CPU thread (benchmarks/din_attention.py), 1.8x
# at 100 candidates; with few candidates (training's 1 + 4) the per-position matrices cost more than they save.
MANY_CANDIDATES = 32
# Inference scores blocks of users x candidates whose attention intermediates hold about this many values (16
# users x 512 items x 10 positions x 80 units, 26 MB): evaluation's 512 users at once made 840 MB tensors in
# full ranking and ran at half the speed per user-item of 16-user blocks on one CPU thread (measured,
# benchmarks/din_attention.py).
BLOCK_VALUES = 16 * 512 * 10 * 80


class TargetAttention(nn.Module):
    """Scores each history item against each candidate with a small MLP."""

    def __init__(self, d: int, hidden: list[int]) -> None:
        super().__init__()
        first = hidden[0]
        self.w_hist = nn.Linear(d, first)  # acts on h and h - t (their h parts summed)
        self.w_target = nn.Linear(d, first, bias=False)  # acts on t and -t
        self.w_prod = nn.Linear(d, first, bias=False)  # acts on h * t
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(hidden, [*hidden[1:], 1], strict=True):
            layers += [nn.Sigmoid(), nn.Linear(fan_in, fan_out)]
        self.rest = nn.Sequential(*layers)

    def forward(self, hist: torch.Tensor, valid: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """hist (B, L, d), valid (B, L), cand (B, C, d) -> attention-pooled history (B, C, d)."""
        many = cand.shape[1] >= MANY_CANDIDATES and not torch.is_grad_enabled()
        weight = (self.scores_many(hist, cand) if many else self.scores(hist, cand)) * valid.unsqueeze(1)
        return weight @ hist  # (B, C, d)

    def scores(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(B, C, L) unmasked attention scores, the first layer as the sum of its three parts."""
        pre = (
            self.w_hist(hist).unsqueeze(1)  # (B, 1, L, a)
            + self.w_target(cand).unsqueeze(2)  # (B, C, 1, a)
            + self.w_prod(cand.unsqueeze(2) * hist.unsqueeze(1))  # (B, C, L, a)
        )
        return self.rest(pre).squeeze(-1)

    def scores_many(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """`scores` for many candidates, without a graph. The first layer is linear in t for a fixed h:
        W_h h + b + W_t t + W_p (h * t) = (W_p diag(h) + W_t) t + (W_h h + b), so one batched matmul of the
        candidates (a 1 appended) against a per-position (a, d + 1) matrix gives it, without the
        (B, C, L, d) product or the (B, C, L, a) broadcast sums; the activations run in place."""
        b, c, length = len(cand), cand.shape[1], hist.shape[1]
        per_position = self.w_prod.weight * hist.unsqueeze(2) + self.w_target.weight  # (B, L, a, d)
        offset = self.w_hist(hist).unsqueeze(-1)  # (B, L, a, 1)
        matrices = torch.cat([per_position, offset], dim=-1).flatten(1, 2)  # (B, L * a, d + 1)
        x = torch.cat([cand, cand.new_ones(b, c, 1)], dim=-1) @ matrices.transpose(1, 2)  # (B, C, L * a)
        x = x.view(b, c, length, -1)  # (B, C, L, a)
        for layer in self.rest:
            x = x.sigmoid_() if isinstance(layer, nn.Sigmoid) else layer(x)
        return x.squeeze(-1)


class DIN(Recommender):
    def __init__(self, n_items: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self._catalogue(n_items, cfg)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.attention = TargetAttention(d, cfg.attention_hidden)
        self.head = MLPHead([3 * d, *cfg.head_hidden, 1], cfg.head_activation, dropout=cfg.dropout)
        self._init_item_embeddings(d**-0.5)

    def score_candidates(self, seq, candidates, weights=None):
        if seq.shape[1] > self.max_len:
            seq = seq[:, -self.max_len :]
        users = self.block_users(candidates.shape[1], seq.shape[1])
        if users < len(seq) and not torch.is_grad_enabled():  # inference: blocks of users (BLOCK_VALUES)
            blocks = (slice(lo, lo + users) for lo in range(0, len(seq), users))
            return torch.cat([self.score_candidates(seq[rows], candidates[rows],
                                                    None if weights is None else sample_rows(weights, rows))
                              for rows in blocks])
        valid = (seq > 0).float()  # (B, L)
        hist = self.emb_drop(self.item_emb(seq))  # (B, L, d)
        cand = self.item_emb(candidates)  # (B, C, d)
        scale = valid.sum(1).clamp(min=1).rsqrt()[:, None, None]  # sum pooling, kept length-free
        interest = self.attention(hist, valid, cand) * scale  # (B, C, d)
        features = torch.cat([interest, cand, interest * cand], dim=-1)  # (B, C, 3d)
        return self.head(features, weights).squeeze(-1)  # (B, C)

    def block_users(self, candidates: int, length: int) -> int:
        """Users per block so that the attention's (users, candidates, L, a) intermediates hold about
        BLOCK_VALUES values."""
        width = min(length, self.max_len) * self.attention.w_hist.out_features
        return max(1, BLOCK_VALUES // (candidates * width))

    def score_all(self, seq, weights=None, chunk: int = 512):
        """Every item, `chunk` items at a time (score_candidates takes blocks of users at inference)."""
        items = torch.arange(1, self.n_items + 1, device=seq.device)
        parts = [self.score_candidates(seq, items[lo : lo + chunk].expand(len(seq), -1), weights)
                 for lo in range(0, self.n_items, chunk)]
        return F.pad(torch.cat(parts, dim=1), (1, 0), value=float("-inf"))  # (B, N + 1)

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        if targets.dim() != 1:
            raise ValueError("DIN trains in window mode: targets must be (B,), one next item per history")
        if loss == "bce":
            if negatives is None:
                raise ValueError("bce needs negatives")
            logits = self.score_candidates(seq, torch.cat([targets[:, None], negatives], dim=1), weights)
            return bce_loss(logits[:, 0], logits[:, 1:])
        if loss == "ce":
            return F.cross_entropy(self.score_all(seq, weights)[:, 1:], targets - 1)
        raise ValueError(f"unknown loss {loss!r}: expected ce or bce")
