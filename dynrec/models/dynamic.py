"""A dynamic recommender: a static backbone whose head weights a generator makes for every sample.

It wraps the backbone instead of subclassing it (peft-style): the backbone keeps its static head, which
is both the generated weights' base (W_i = W0 + delta(z_i)) and the static side of an online CKI splice.
Sequence-mode training generates one head per position, from the window ending at that position.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynrec.config import ModelConfig
from dynrec.errors import ConfigError
from dynrec.models.base import DotProductRecommender, Recommender, training_positions
from dynrec.models.generator import HeadGenerator, recent_windows
from dynrec.models.head import Weights


class DynamicRecommender(Recommender):
    """Backbone + HeadGenerator; `generate(seq)` returns the per-sample head weights it scores with."""

    def __init__(self, backbone: Recommender, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.generator_source == "backbone" and not isinstance(backbone, DotProductRecommender):
            raise ConfigError(f"model.generator_source: {cfg.name} has no candidate-free state; use gru")
        self.backbone = backbone
        self.n_items, self.max_len = backbone.n_items, backbone.max_len
        self.generator = HeadGenerator(backbone.head.layer_shapes, backbone.item_emb.embedding_dim, cfg)

    @property
    def item_emb(self) -> nn.Embedding:  # type: ignore[override]
        return self.backbone.item_emb

    def generate(self, windows: torch.Tensor, state: torch.Tensor | None = None) -> Weights:
        """(N, w) recent items (left-padded), optional (N, d) backbone state -> per-sample head weights."""
        windows = windows[:, -self.generator.window :]
        embedded = self.item_emb(windows) if self.generator.gru is not None else None  # the backbone source reads none
        z = self.generator.code(embedded, windows > 0, state)  # (N, z)
        return self.generator(z, self.backbone.head.static_weights())

    def user_states(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """(B, L) -> (B, d): the backbone's last features through the generated (or the given) head."""
        features = self.backbone.last_features(seq)  # (B, d)
        weights = weights if weights is not None else self.generate(seq, features)
        return self.backbone.head(features, weights)

    def score_candidates(self, seq, candidates, weights=None):
        if isinstance(self.backbone, DotProductRecommender):
            return torch.einsum("bd,bcd->bc", self.user_states(seq, weights), self.item_emb(candidates))
        return self.backbone.score_candidates(seq, candidates, weights if weights is not None else self.generate(seq))

    def score_all(self, seq, weights=None):
        if isinstance(self.backbone, DotProductRecommender):
            scores = self.user_states(seq, weights) @ self.item_emb.weight[1:].T  # (B, N)
            return F.pad(scores, (1, 0), value=float("-inf"))
        return self.backbone.score_all(seq, weights if weights is not None else self.generate(seq))

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        backbone = self.backbone
        if not isinstance(backbone, DotProductRecommender):
            weights = weights if weights is not None else self.generate(seq)
            return backbone.training_loss(seq, targets, loss, negatives, weights)
        keep = training_positions(seq, targets)  # (B, T): T = L in sequence mode, 1 in window mode
        span = keep.shape[1]
        features = (backbone.last_features(seq)[:, None] if span == 1 else backbone.features(seq))[keep]  # (P, d)
        windows = recent_windows(seq, self.generator.window)[:, -span:][keep]  # (P, w): each position's own window
        states = backbone.head(features, self.generate(windows, features))  # (P, d), one head per position
        targets = targets[:, None] if targets.dim() == 1 else targets
        if negatives is not None:
            negatives = (negatives if negatives.dim() == 3 else negatives[:, None])[keep]
        return backbone.loss_from_states(states, targets[keep], loss, negatives)
