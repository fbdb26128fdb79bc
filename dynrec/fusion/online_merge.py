"""The generic online merge: a dynamic model whose generated head is merged with its static head per request.

`OnlineMerge` wraps a `DynamicRecommender` (it does not subclass or change it) and scores through the
backbone's own head and item embeddings with merged per-sample weights. Subclasses say how one batch of
generated weight matrices is merged with the static ones (`merge_weights`): online CKI
(`dynrec.fusion.online`) and the fusion baselines (`dynrec.fusion.online_baselines`). Only weight matrices
are merged; biases are the generated ones (as in the official CKI code). The encoder is shared, so the
static head W0 and every generated head W_i read the same features, which is what makes merging them
meaningful (a dynamic model trained on a frozen static one; see docs/dynamic.md).
"""

from __future__ import annotations

import torch
from torch import nn

from dynrec.models.base import DotProductRecommender, Recommender, training_positions
from dynrec.models.dynamic import DynamicRecommender
from dynrec.models.generator import recent_windows
from dynrec.models.head import LowRank, Weight, Weights

Pairs = list[tuple[torch.Tensor, torch.Tensor]]  # per head layer: static (in, out), generated (B, in, out)


def dense(weight: Weight) -> torch.Tensor:
    """A generated weight as an explicit tensor: a low-rank one is formed (B, in, out), others as they are."""
    return weight.dense() if isinstance(weight, LowRank) else weight


class OnlineMerge(Recommender):
    """A dynamic model whose generated head weights are merged with its static head before scoring.

    `last_maps` holds, after each `splice`, the per-layer maps (B, in, out) of the last batch: the share of
    the generated weight at each position, for the methods that have one (empty for the others).
    """

    def __init__(self, model: DynamicRecommender) -> None:
        super().__init__()
        self.model = model
        self.n_items, self.max_len = model.n_items, model.max_len
        self.last_maps: list[torch.Tensor] = []

    @property
    def item_emb(self) -> nn.Embedding:  # type: ignore[override]
        return self.model.item_emb

    def merge_weights(self, pairs: Pairs, reuse: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the merged weights (B, in, out) of (static, generated) pairs, and the maps (possibly []).
        With `reuse`, a merge may write into the generated tensors (temporaries of the caller's)."""
        raise NotImplementedError

    def splice(self, generated: Weights, reuse: bool = False) -> tuple[Weights, list[torch.Tensor]]:
        """Per-sample weights of every head layer merged with the static head; returns (weights, maps). With
        `reuse`, `generated` is a temporary the merge may overwrite (scoring passes its own, without a graph)."""
        pairs = [(static, dense(weight)) for (static, _), (weight, _) in
                 zip(self.model.backbone.head.static_weights(), generated, strict=True)]
        merged, maps = self.merge_weights(pairs, reuse)
        self.last_maps = [m.detach() for m in maps]
        return [(weight, bias) for weight, (_, bias) in zip(merged, generated, strict=True)], maps

    def _features_and_weights(self, seq: torch.Tensor) -> tuple[torch.Tensor | None, Weights]:
        """The backbone's last features (dot-product backbones; computed once) and the merged weights."""
        reuse = not torch.is_grad_enabled()  # the generated weights are this call's own temporaries
        if not isinstance(self.model.backbone, DotProductRecommender):
            return None, self.splice(self.model.generate(seq), reuse)[0]
        features = self.model.backbone.last_features(seq)  # (B, d)
        return features, self.splice(self.model.generate(seq, features), reuse)[0]

    def score_candidates(self, seq, candidates, weights=None):
        if weights is not None:  # explicit weights are used as given, without merging
            return self.model.score_candidates(seq, candidates, weights)
        features, merged = self._features_and_weights(seq)
        if features is None:
            return self.model.score_candidates(seq, candidates, merged)
        user = self.model.backbone.head(features, merged)  # (B, d)
        return torch.einsum("bd,bcd->bc", user, self.item_emb(candidates))

    def score_all(self, seq, weights=None):
        if weights is not None:
            return self.model.score_all(seq, weights)
        features, merged = self._features_and_weights(seq)
        if features is None:
            return self.model.score_all(seq, merged)
        scores = self.model.backbone.head(features, merged) @ self.item_emb.weight[1:].T  # (B, N)
        return nn.functional.pad(scores, (1, 0), value=float("-inf"))

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        """DynamicRecommender.training_loss with every generated head merged first."""
        if weights is not None:
            return self.model.training_loss(seq, targets, loss, negatives, weights)
        backbone = self.model.backbone
        if not isinstance(backbone, DotProductRecommender):
            return backbone.training_loss(seq, targets, loss, negatives, self.splice(self.model.generate(seq))[0])
        keep = training_positions(seq, targets)  # (B, T)
        span = keep.shape[1]
        features = (backbone.last_features(seq)[:, None] if span == 1 else backbone.features(seq))[keep]  # (P, d)
        windows = recent_windows(seq, self.model.generator.window)[:, -span:][keep]  # (P, w)
        states = backbone.head(features, self.splice(self.model.generate(windows, features))[0])  # (P, d)
        targets = targets[:, None] if targets.dim() == 1 else targets
        if negatives is not None:
            negatives = (negatives if negatives.dim() == 3 else negatives[:, None])[keep]
        return backbone.loss_from_states(states, targets[keep], loss, negatives)
