"""Online CKI (the paper's Table 3): for every request, splice the static head with the head generated for it.

`OnlineCKI` wraps a `DynamicRecommender` (it does not subclass it). For each sample i and head layer it
assesses the two models, static W0 (in, out) and generated W_i (in, out), with per-sample histogram
entropies, and scores with the spliced per-sample weights (B, in, out). Two models make the assessment
cheap: the softmax of two scores is a sigmoid, and soft splicing is W0 + V_i (W_i - W0). Everything is
batched over samples (one bincount for all the entropies); there is no loop over samples or positions.
Biases are the generated ones (as in the official code); only weight matrices are spliced.
"""

from __future__ import annotations

import torch
from torch import nn

from dynrec.fusion.compatibility import (
    BINS,
    GlobalFn,
    LearnedCompatibility,
    LocalFn,
    fixed_global,
    fixed_local,
    histogram_entropy,
)
from dynrec.models.base import DotProductRecommender, Recommender, training_positions
from dynrec.models.dynamic import DynamicRecommender
from dynrec.models.generator import recent_windows
from dynrec.models.head import LowRank, Weight, Weights


def entropy_gaps(pairs: list[tuple[torch.Tensor, torch.Tensor]], bins: int = BINS) -> list[torch.Tensor]:
    """E(W_i) - E(W0), shaped (B, 1, 1), for each (static (in, out), per-sample (B, in, out)) pair. Layers with
    the same number of weights share one histogram call (one bincount for all their B + 1 tensors)."""
    groups: dict[int, list[int]] = {}
    for index, (static, _) in enumerate(pairs):
        groups.setdefault(static.numel(), []).append(index)
    gaps: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for size, members in groups.items():
        statics = [pairs[i][0].reshape(1, size) for i in members]
        generated = [pairs[i][1].reshape(-1, size) for i in members]
        entropy = histogram_entropy(torch.cat(statics + generated), bins)  # (m + m B,)
        per_layer = entropy[len(members) :].view(len(members), -1)  # (m, B)
        for row, index in enumerate(members):
            gaps[index] = (per_layer[row] - entropy[row]).view(-1, 1, 1)
    return gaps


def splice_per_sample(
    static: torch.Tensor,
    generated: torch.Tensor,
    bins: int = BINS,
    hard: bool = False,
    local: LocalFn | None = None,
    global_: GlobalFn | None = None,
    gap: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CKI of a static (in, out) and per-sample (B, in, out) weights -> spliced (B, in, out) and the map
    V(generated) (B, in, out); V(static) = 1 - map. Model 0 is the static one, model 1 the generated.
    `gap` is E(W_i) - E(W0) when already computed (see entropy_gaps)."""
    gap = entropy_gaps([(static, generated)], bins)[0] if gap is None else gap  # (B, 1, 1)
    if hard and local is None:
        # One symmetric local term v > 0 for both models, and V = g (1 - exp(-g v)) grows with g: the model
        # with the larger f_G, i.e. the higher entropy, wins every position. Equal entropies tie everywhere.
        wins = gap > 0  # (B, 1, 1): whole tensors, unless entropies tie
        if bool((gap == 0).any()):
            wins = wins | ((gap == 0) & (generated > static))  # (B, in, out)
        return torch.where(wins, generated, static), wins.to(generated.dtype).expand_as(generated)
    delta = generated - static  # (B, in, out)
    distance = delta.abs()
    if local is None:
        v_static = v_generated = fixed_local(distance)  # symmetric f_L: one local term for both models
    else:
        v_static, v_generated = local(0, distance), local(1, distance)
    global_ = global_ or fixed_global
    g_static, g_generated = global_(-gap), global_(gap)  # (B, 1, 1)
    # V(generated) - V(static) = g1 (1 - exp(-g1 v1)) - g0 (1 - exp(-g0 v0)): few passes, no broadcast addcmul
    lead = g_static * torch.exp(v_static * -g_static) - g_generated * torch.exp(v_generated * -g_generated)
    lead = lead + (g_generated - g_static)  # (B, in, out)
    if hard:  # ties go to the larger weight, as in offline hard splicing
        take = (lead > 0) | ((lead == 0) & (generated > static))
        return torch.where(take, generated, static), take.to(generated.dtype)
    share = torch.sigmoid(lead)  # the two-model softmax
    return torch.addcmul(static, share, delta), share  # W0 + V (W_i - W0)


def _dense(weight: Weight) -> torch.Tensor:
    return weight.dense() if isinstance(weight, LowRank) else weight


class OnlineCKI(Recommender):
    """A dynamic model whose generated head weights are spliced with its static head before scoring.

    `last_maps` holds, after each call, the per-layer maps V(generated) (B, in, out) of the last batch.
    With `learned=True`, f_L and f_G are learned (train them with dynrec.fusion.learned.train_online);
    otherwise they are the parameter-free forms. The DynamicRecommender's own weights are not changed.
    """

    def __init__(self, model: DynamicRecommender, hard: bool = False, bins: int = BINS, learned: bool = False) -> None:
        super().__init__()
        self.model = model
        self.n_items, self.max_len = model.n_items, model.max_len
        self.hard, self.bins = hard, bins
        shapes = {f"layer{i}": shape for i, shape in enumerate(model.backbone.head.layer_shapes)}
        self.compatibility = LearnedCompatibility(shapes, n_models=2) if learned else None
        self.last_maps: list[torch.Tensor] = []

    @property
    def item_emb(self) -> nn.Embedding:  # type: ignore[override]
        return self.model.item_emb

    def splice(self, generated: Weights) -> tuple[Weights, list[torch.Tensor]]:
        """Per-sample weights of every head layer spliced with the static head; returns (weights, maps)."""
        pairs = [(static, _dense(weight)) for (static, _), (weight, _) in
                 zip(self.model.backbone.head.static_weights(), generated, strict=True)]
        gaps = entropy_gaps(pairs, self.bins)
        weights: Weights = []
        maps = []
        for index, ((static, dense), (_, bias), gap) in enumerate(zip(pairs, generated, gaps, strict=True)):
            learned = self.compatibility.functions(f"layer{index}") if self.compatibility is not None else (None, None)
            spliced, share = splice_per_sample(static, dense, self.bins, self.hard, *learned, gap=gap)
            weights.append((spliced, bias))
            maps.append(share)
        self.last_maps = [m.detach() for m in maps]
        return weights, maps

    def _features_and_weights(self, seq: torch.Tensor) -> tuple[torch.Tensor | None, Weights]:
        """The backbone's last features (dot-product backbones; computed once) and the spliced weights."""
        if not isinstance(self.model.backbone, DotProductRecommender):
            return None, self.splice(self.model.generate(seq))[0]
        features = self.model.backbone.last_features(seq)  # (B, d)
        return features, self.splice(self.model.generate(seq, features))[0]

    def score_candidates(self, seq, candidates, weights=None):
        if weights is not None:  # explicit weights are used as given, without splicing
            return self.model.score_candidates(seq, candidates, weights)
        features, spliced = self._features_and_weights(seq)
        if features is None:
            return self.model.score_candidates(seq, candidates, spliced)
        user = self.model.backbone.head(features, spliced)  # (B, d)
        return torch.einsum("bd,bcd->bc", user, self.item_emb(candidates))

    def score_all(self, seq, weights=None):
        if weights is not None:
            return self.model.score_all(seq, weights)
        features, spliced = self._features_and_weights(seq)
        if features is None:
            return self.model.score_all(seq, spliced)
        scores = self.model.backbone.head(features, spliced) @ self.item_emb.weight[1:].T  # (B, N)
        return nn.functional.pad(scores, (1, 0), value=float("-inf"))

    def training_loss(self, seq, targets, loss, negatives=None, weights=None):
        """DynamicRecommender.training_loss with every generated head spliced first."""
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
