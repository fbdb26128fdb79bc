"""Online CKI (the paper's Table 3): for every request, splice the static head with the head generated for it.

`OnlineCKI` is an `OnlineMerge` (the scoring wrapper it shares with the online baselines). For each sample
i and head layer it assesses the two models, static W0 (in, out) and generated W_i (in, out), with
per-sample histogram entropies, and scores with the spliced per-sample weights (B, in, out). Two models
make the assessment cheap: the softmax of two scores is a sigmoid, and soft splicing is W0 + V_i (W_i - W0).
Everything is batched over samples (the static head's entropies are kept until its weights change); no
loop over samples or positions.
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

SMALL_BATCH_VALUES = 65_536  # up to this many generated values, layers of one size share a histogram call


def entropy_gaps(
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    bins: int = BINS,
    static_entropies: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """E(W_i) - E(W0), shaped (B, 1, 1), for each (static (in, out), per-sample (B, in, out)) pair; E(W0) is
    computed unless given. Small batches put the generated rows of same-sized layers in one histogram call
    (a call's fixed cost dominates at batch 1); large ones make one call per layer (there, the copy that
    joins the layers and counts that no longer fit the cache cost more than the extra call)."""
    if static_entropies is None:
        static_entropies = [histogram_entropy(static.reshape(1, -1), bins)[0] for static, _ in pairs]
    groups: dict[tuple, list[int]] = {}  # ("size", n): same-sized small layers together; ("layer", i): alone
    for index, (static, generated) in enumerate(pairs):
        small = generated.numel() * 2 <= SMALL_BATCH_VALUES  # two layers of this size still fit
        groups.setdefault(("size", static.numel()) if small else ("layer", index), []).append(index)
    gaps: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for members in groups.values():
        rows = [pairs[i][1].reshape(len(pairs[i][1]), -1) for i in members]
        entropy = histogram_entropy(rows[0] if len(rows) == 1 else torch.cat(rows), bins)
        for index, part in zip(members, entropy.split([len(r) for r in rows]), strict=True):
            gaps[index] = (part - static_entropies[index]).view(-1, 1, 1)
    return gaps


def splice_per_sample(
    static: torch.Tensor,
    generated: torch.Tensor,
    bins: int = BINS,
    hard: bool = False,
    local: LocalFn | None = None,
    global_: GlobalFn | None = None,
    gap: torch.Tensor | None = None,
    reuse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CKI of a static (in, out) and per-sample (B, in, out) weights -> spliced (B, in, out) and the map
    V(generated) (B, in, out); V(static) = 1 - map. Model 0 is the static one, model 1 the generated.
    `gap` is E(W_i) - E(W0) when already computed (see entropy_gaps). With `reuse` (no graph needed),
    hard splicing may write its result into `generated`, the caller's temporary, instead of a new tensor."""
    gap = entropy_gaps([(static, generated)], bins)[0] if gap is None else gap  # (B, 1, 1)
    if hard and local is None:
        # One symmetric local term v > 0 for both models, and V = g (1 - exp(-g v)) grows with g: the model
        # with the larger f_G, i.e. the higher entropy, wins every position. Equal entropies tie everywhere.
        wins = gap > 0  # (B, 1, 1): whole tensors, unless entropies tie
        if bool((gap == 0).any()):
            wins = wins | ((gap == 0) & (generated > static))  # (B, in, out)
        elif reuse and not torch.is_grad_enabled():  # whole samples: overwrite the losers' rows only
            generated[~wins.view(-1)] = static
            return generated, wins.to(generated.dtype).expand_as(generated)
        return torch.where(wins, generated, static), wins.to(generated.dtype).expand_as(generated)
    delta = generated - static  # (B, in, out)
    distance = delta.abs()
    differentiable = torch.is_grad_enabled()
    if local is None:  # symmetric f_L: one local term for both models (in place when nothing needs a graph)
        v_static = v_generated = fixed_local(distance) if differentiable else distance.sigmoid_()
    else:
        v_static, v_generated = local(0, distance), local(1, distance)
    global_ = global_ or fixed_global
    g_static, g_generated = global_(-gap), global_(gap)  # (B, 1, 1)
    # V(generated) - V(static) = g1 (1 - exp(-g1 v1)) - g0 (1 - exp(-g0 v0)): few passes, no broadcast addcmul
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
        self._static_entropies: dict[int, tuple[tuple, torch.Tensor]] = {}

    def static_entropy(self, index: int, static: torch.Tensor) -> torch.Tensor:
        """E(W0) of head layer `index`, recomputed only when the static weight changes (its storage or its
        in-place version), so a request pays for the generated weights' histograms only."""
        key = (static.data_ptr(), static._version, static.shape, self.bins)
        cached = self._static_entropies.get(index)
        if cached is None or cached[0] != key:
            cached = (key, histogram_entropy(static.detach().reshape(1, -1), self.bins)[0].clone())
            self._static_entropies[index] = cached
        return cached[1]

    def merge_weights(self, pairs: Pairs, reuse: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """CKI per sample and layer (see entropy_gaps for the histogram calls); the maps are V(generated)."""
        gaps = entropy_gaps(pairs, self.bins, [self.static_entropy(i, static) for i, (static, _) in enumerate(pairs)])
        weights, maps = [], []
        for index, ((static, generated), gap) in enumerate(zip(pairs, gaps, strict=True)):
            learned = self.compatibility.functions(f"layer{index}") if self.compatibility is not None else (None, None)
            spliced, share = splice_per_sample(static, generated, self.bins, self.hard, *learned, gap=gap, reuse=reuse)
            weights.append(spliced)
            maps.append(share)
        return weights, maps
