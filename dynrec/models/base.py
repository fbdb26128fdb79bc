"""The contract every recommender keeps: score candidates, score all items, compute its training loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynrec.models.head import Weights
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
    """Encoders that map a history to one state per position, scored by dot product with item embeddings."""

    def states(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """(B, L) -> (B, L, d) the user state after each position (causal), passed through the head."""
        raise NotImplementedError

    def last_state(self, seq: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return self.states(seq, weights)[:, -1]  # (B, d)

    def score_candidates(self, seq, candidates, weights=None):
        user = self.last_state(seq, weights)  # (B, d)
        return torch.einsum("bd,bcd->bc", user, self.item_emb(candidates))

    def score_all(self, seq, weights=None):
        return _pad_column(self.last_state(seq, weights) @ self.item_emb.weight[1:].T)  # (B, N + 1)

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        states = self.states(seq, weights)  # (B, L, d)
        if targets.dim() == 1:
            states, targets = states[:, -1:], targets[:, None]
            keep = targets > 0
        else:
            keep = (targets > 0) & (seq > 0)  # a target needs at least one item before it
        h = states[keep]  # (P, d): only real positions reach the output layer
        positives = targets[keep]  # (P,)
        if loss == "ce":
            return full_cross_entropy(h, self.item_emb.weight[1:], positives - 1)  # softmax over all N items
        if loss == "bce":
            if negatives is None:
                raise ValueError("bce needs negatives")
            neg = negatives[keep] if negatives.dim() == 3 else negatives.reshape(len(h), -1)  # (P, k)
            pos_logit = (h * self.item_emb(positives)).sum(-1)  # (P,)
            neg_logit = torch.einsum("pd,pkd->pk", h, self.item_emb(neg))  # (P, k)
            return bce_loss(pos_logit, neg_logit)
        raise ValueError(f"unknown loss {loss!r}: expected ce or bce")

