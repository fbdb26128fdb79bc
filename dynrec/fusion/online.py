"""Online CKI (the paper's Table 3): for every request, splice the static head with the head generated for it.

`OnlineCKI` is an `OnlineMerge` (the scoring wrapper it shares with the online baselines). For each sample
i and head layer it assesses the two models, static W0 (in, out) and generated W_i (in, out), with
per-sample histogram entropies, and scores with the spliced per-sample weights (B, in, out). Two models
make the assessment cheap: the softmax of two scores is a sigmoid, and soft splicing is W0 + V_i (W_i - W0).
Everything is batched over samples (one histogram call for all the entropies); no loop over samples or positions.
Biases are the generated ones (as in the official code); only weight matrices are spliced.
"""

from __future__ import annotations

import torch

from dynrec.fusion.compatibility import (
    BINS,
    GlobalFn,
    LearnedCompatibility,
    LocalFn,
    fixed_global,
    fixed_local,
    histogram_entropy,
)
from dynrec.fusion.online_merge import OnlineMerge, Pairs
from dynrec.models.dynamic import DynamicRecommender


def entropy_gaps(pairs: list[tuple[torch.Tensor, torch.Tensor]], bins: int = BINS) -> list[torch.Tensor]:
    """E(W_i) - E(W0), shaped (B, 1, 1), for each (static (in, out), per-sample (B, in, out)) pair. Layers with
    the same number of weights share one histogram call (one scatter-add for all their B + 1 tensors)."""
    groups: dict[int, list[int]] = {}
    for index, (static, _) in enumerate(pairs):
        groups.setdefault(static.numel(), []).append(index)
    gaps: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for size, members in groups.items():
        statics = [pairs[i][0].reshape(1, size) for i in members]
        generated = [pairs[i][1].reshape(-1, size) for i in members]
        entropy = histogram_entropy(torch.cat(statics + generated), bins)  # (m + m B,)
        m = len(members)
        per_layer = (entropy[m:].view(m, -1) - entropy[:m, None]).view(m, -1, 1, 1)  # (m, B, 1, 1)
        for index, gap in zip(members, per_layer.unbind(0), strict=True):
            gaps[index] = gap
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
    differentiable = torch.is_grad_enabled()
    if differentiable:
        lead = g_static * torch.exp(v_static * -g_static) - g_generated * torch.exp(v_generated * -g_generated)
        lead = lead + (g_generated - g_static)  # (B, in, out)
    else:  # the same arithmetic in place: on CPU a fresh (B, in, out) temporary costs more than the math on it
        lead = torch.mul(v_static, -g_static).exp_().mul_(g_static)
        lead.sub_(v_generated.mul_(-g_generated).exp_().mul_(g_generated)).add_(g_generated - g_static)
    if hard:  # ties go to the larger weight, as in offline hard splicing
        take = (lead > 0) | ((lead == 0) & (generated > static))
        return torch.where(take, generated, static), take.to(generated.dtype)
    share = torch.sigmoid(lead) if differentiable else lead.sigmoid_()  # the two-model softmax
    return torch.addcmul(static, share, delta), share  # W0 + V (W_i - W0)


class OnlineCKI(OnlineMerge):
    """A dynamic model whose generated head weights are spliced with its static head by CKI before scoring.

    `last_maps` holds, after each call, the per-layer maps V(generated) (B, in, out) of the last batch.
    With `learned=True`, f_L and f_G are learned (train them with dynrec.fusion.learned.train_online);
    otherwise they are the parameter-free forms. The DynamicRecommender's own weights are not changed.
    """

    def __init__(self, model: DynamicRecommender, hard: bool = False, bins: int = BINS, learned: bool = False) -> None:
        super().__init__(model)
        self.hard, self.bins = hard, bins
        shapes = {f"layer{i}": shape for i, shape in enumerate(model.backbone.head.layer_shapes)}
        self.compatibility = LearnedCompatibility(shapes, n_models=2) if learned else None

    def merge_weights(self, pairs: Pairs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """CKI per sample and layer (one histogram call for the entropies); the maps are V(generated)."""
        gaps = entropy_gaps(pairs, self.bins)
        weights, maps = [], []
        for index, ((static, generated), gap) in enumerate(zip(pairs, gaps, strict=True)):
            learned = self.compatibility.functions(f"layer{index}") if self.compatibility is not None else (None, None)
            spliced, share = splice_per_sample(static, generated, self.bins, self.hard, *learned, gap=gap)
            weights.append(spliced)
            maps.append(share)
        return weights, maps
