"""The contract every recommender keeps: score candidates, score all items, compute its training loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynrec.config import ModelConfig
from dynrec.models.head import MLPHead, Weights
from dynrec.models.losses import bce_loss, full_cross_entropy


class Recommender(nn.Module):
    """Base class. Item 0 is padding; histories are left-padded, most recent item last."""

    n_items: int
    item_emb: nn.Embedding

    def score_candidates(
        self, seq: torch.Tensor, candidates: torch.Tensor, weights: Weights | None = None
    ) -> torch.Tensor:
        """(B, L) histories, (B, C) item ids -> (B, C) scores for the next item."""
        raise NotImplementedError

    def score_all(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """(B, L) histories -> (B, n_items + 1) scores; column 0 (padding) is -inf."""
        raise NotImplementedError

    def _catalogue(self, n_items: int, cfg: ModelConfig) -> None:
        """The attributes every model shares: catalogue size, history length, item embeddings (0 = padding)."""
        self.n_items = n_items
        self.max_len = cfg.max_len
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden_size, padding_idx=0)

    def _init_item_embeddings(self, std: float) -> None:
        """Re-draw the item embeddings from N(0, std^2), keeping the padding row at zero."""
        nn.init.normal_(self.item_emb.weight, std=std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def training_loss(
        self,
        seq: torch.Tensor,
        targets: torch.Tensor,
        loss: str,
        negatives: torch.Tensor | None = None,
        weights: Weights | None = None,
    ) -> torch.Tensor:
        """Mean loss; targets (B, L) next items per position (0 = skip) or (B,) the item after seq."""
        raise NotImplementedError


def _pad_column(scores: torch.Tensor) -> torch.Tensor:
    return F.pad(scores, (1, 0), value=float("-inf"))


class DotProductRecommender(Recommender):
    """Encoders that map a history to one feature per position; the head turns a feature into a user state,
    scored by dot product with the item embeddings. Subclasses implement `features` (and may speed up
    `last_features`); the head's weights are swappable per sample."""

    head: MLPHead

    def features(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, d) the encoder's output after each position (causal), before the head."""
        raise NotImplementedError

    def last_features(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, d) the encoder's output after the most recent item."""
        return self.features(seq)[:, -1]

    def states(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """(B, L) -> (B, L, d) the user state after each position: features through the head."""
        return self.head(self.features(seq), weights)

    def last_state(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return self.head(self.last_features(seq), weights)  # (B, d)

    def score_candidates(self, seq, candidates, weights=None):
        user = self.last_state(seq, weights)  # (B, d)
        return torch.einsum("bd,bcd->bc", user, self.item_emb(candidates))

    def score_all(self, seq, weights=None):
        return _pad_column(self.last_state(seq, weights) @ self.item_emb.weight[1:].T)  # (B, N + 1)

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        window = targets.dim() == 1  # window mode scores the last position only
        states = self.last_state(seq, weights)[:, None] if window else self.states(seq, weights)  # (B, 1 or L, d)
        keep = training_positions(seq, targets)
        targets = targets[:, None] if window else targets
        negatives = negatives if negatives is None or negatives.dim() == 3 else negatives[:, None]
        return self.loss_from_states(states[keep], targets[keep], loss, None if negatives is None else negatives[keep])

    def loss_from_states(
        self, h: torch.Tensor, positives: torch.Tensor, loss: str, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss of (P, d) states against their (P,) next items: full softmax (ce) or sampled (bce)."""
        if loss == "ce":
            return full_cross_entropy(h, self.item_emb.weight[1:], positives - 1)  # softmax over all N items
        if loss == "bce":
            if negatives is None:
                raise ValueError("bce needs negatives")
            pos_logit = (h * self.item_emb(positives)).sum(-1)  # (P,)
            neg_logit = torch.einsum("pd,pkd->pk", h, self.item_emb(negatives))  # (P, k)
            return bce_loss(pos_logit, neg_logit)
        raise ValueError(f"unknown loss {loss!r}: expected ce or bce")


def training_positions(seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Which (row, position) pairs carry a training target: (B, L) for sequence mode, (B, 1) for window mode.

    In sequence mode a target needs at least one real item before it; in window mode every row is a sample.
    """
    if targets.dim() == 1:
        return (targets > 0)[:, None]
    return (targets > 0) & (seq > 0)
