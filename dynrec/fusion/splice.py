"""CKI's parameter splicing: combine n models' weights position by position with compatibility weights V.

Soft splicing takes W = sum_k V(k) W_k. Hard splicing takes each position from exactly one model, the one
with the largest V there; a tie goes to the largest weight value among the tied models, so the result does
not depend on the order the models are given in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def soft_splice(weights: Sequence[torch.Tensor], maps: torch.Tensor) -> torch.Tensor:
    """sum_k V(k) W_k for V (n, ...) that broadcasts against the weights."""
    return (maps * torch.stack(torch.broadcast_tensors(*weights))).sum(0)


def hard_splice(weights: Sequence[torch.Tensor], maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position from the model with the largest V (ties: the largest value); returns (W, one-hot maps)."""
    stacked = torch.stack(torch.broadcast_tensors(*weights))  # (n, ...)
    maps = maps.expand_as(stacked)
    tied_best = maps == maps.amax(0, keepdim=True)  # (n, ...)
    choice = torch.where(tied_best, stacked, torch.tensor(float("-inf"), dtype=stacked.dtype)).argmax(0, keepdim=True)
    one_hot = torch.zeros_like(maps).scatter_(0, choice, 1.0)  # (n, ...)
    return stacked.gather(0, choice)[0], one_hot


def splice(
    weights: Sequence[torch.Tensor], maps: torch.Tensor, hard: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft or hard splice; returns (W, the maps actually used): V itself, or the one-hot choice."""
    if hard:
        return hard_splice(weights, maps)
    return soft_splice(weights, maps), maps
