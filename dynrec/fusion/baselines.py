"""The baselines CKI is compared with, on one tensor of n models at a time (plus the output ensemble).

Task arithmetic, TIES and DARE work on task vectors tau_k = W_k - W_base. Their `base` is a given model
(the shared starting point, e.g. the static model a dynamic one was fine-tuned from) or, when none is
given, the mean of the models. With the mean as base the task vectors sum to zero, so task arithmetic
equals averaging and DARE equals averaging plus zero-mean noise: use a real base for those two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dynrec.fusion.splice import hard_splice
from dynrec.models.base import Recommender


def average(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Parameter averaging (model soup): the elementwise mean of the models."""
    return torch.stack(list(weights)).mean(0)


def magnitude(weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude selection: at each position keep the weight with the largest |W| (ties: the larger value),
    pruning the others; returns (W, one-hot maps of the model kept)."""
    return hard_splice(weights, torch.stack([w.abs() for w in weights]))


def _task_vectors(weights: Sequence[torch.Tensor], base: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, tau (n, ...)): the given base or the models' mean, and each model's difference from it."""
    stacked = torch.stack(list(weights))
    base = stacked.mean(0) if base is None else base
    return base, stacked - base


def task_arithmetic(
    weights: Sequence[torch.Tensor], base: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """Task arithmetic (Ilharco et al., ICLR 2023, https://arxiv.org/abs/2212.04089): base + scale * sum_k tau_k."""
    base, tau = _task_vectors(weights, base)
    return base + scale * tau.sum(0)


def ties(
    weights: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    density: float = 0.2,
    scale: float = 1.0,
    batch_dims: int = 0,
) -> torch.Tensor:
    """TIES merging (Yadav et al., NeurIPS 2023, https://arxiv.org/abs/2306.01708): trim each tau_k to its
    largest `density` fraction by magnitude (ties at the threshold kept), elect each position's sign by the
    summed trimmed vectors, average the entries that agree with it; base + scale * that mean. The first
    `batch_dims` dimensions of each tensor index independent merges (online: one per request), each trimmed
    by a threshold over its own entries."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    base, tau = _task_vectors(weights, base)
    if not 0 <= batch_dims < tau.dim() - 1:
        raise ValueError(f"batch_dims must be in [0, {tau.dim() - 1}) for tensors of shape {tuple(tau.shape[1:])}, "
                         f"got {batch_dims}")
    flat = tau.flatten(start_dim=1 + batch_dims).abs()  # (n, *batch, P)
    keep_count = max(1, math.ceil(density * flat.shape[-1]))
    threshold = flat.topk(keep_count, dim=-1).values[..., -1:]  # (n, *batch, 1): the keep_count-th largest |tau_k|
    trimmed = torch.where((flat >= threshold).view_as(tau), tau, torch.zeros_like(tau))
    sign = torch.sign(trimmed.sum(0))  # (...) the elected sign
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return base + scale * merged


def dare(
    weights: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    drop: float = 0.9,
    scale: float = 1.0,
    seed: int = 0,
    batch_dims: int = 0,
) -> torch.Tensor:
    """DARE (Yu et al., ICML 2024, https://arxiv.org/abs/2311.03099): drop each entry of tau_k with
    probability `drop`, rescale the rest by 1/(1 - drop), then task arithmetic. Seeded: the same seed
    gives the same masks (drawn model by model, in the order given). The first `batch_dims` dimensions index
    independent merges that share one mask, so a request's merge does not depend on the batch it is in."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    base, tau = _task_vectors(weights, base)
    if not 0 <= batch_dims < tau.dim() - 1:
        raise ValueError(f"batch_dims must be in [0, {tau.dim() - 1}) for tensors of shape {tuple(tau.shape[1:])}, "
                         f"got {batch_dims}")
    shape = (len(tau), *[1] * batch_dims, *tau.shape[1 + batch_dims :])  # (n, 1.., *entry): one mask per model
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(shape, generator=generator, dtype=torch.float64).to(tau.device) >= drop
    return base + scale * (tau * keep / (1 - drop)).sum(0)


class OutputEnsemble(Recommender):
    """Averages the scores of n models: n times the weights and n times the inference cost of one model.

    A baseline only, not a fused checkpoint: it cannot be saved as one model. Raw scores are averaged,
    which assumes the models' scores are on comparable scales (same architecture and loss).
    """

    def __init__(self, models: Sequence[Recommender]) -> None:
        super().__init__()
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
        self.models = nn.ModuleList(models)
        self.n_items = models[0].n_items
        self.max_len = max(m.max_len for m in models)

    @property
    def item_emb(self) -> nn.Embedding:  # type: ignore[override]
        return self.models[0].item_emb

    def score_all(self, seq, weights=None):
        return torch.stack([m.score_all(seq[:, -m.max_len :]) for m in self.models]).mean(0)  # (B, N + 1)

    def score_candidates(self, seq, candidates, weights=None):
        return torch.stack([m.score_candidates(seq[:, -m.max_len :], candidates) for m in self.models]).mean(0)
