"""GRU4Rec (Hidasi et al., ICLR 2016): a GRU over the item sequence, one state per position.

Histories arrive left-padded; the GRU runs on them right-aligned so padding never enters a real state.
"""

from __future__ import annotations

import torch
from torch import nn

from dynrec.config import ModelConfig
from dynrec.models.base import DotProductRecommender
from dynrec.models.head import MLPHead


def realign(seq_like: torch.Tensor, lengths: torch.Tensor, to_left: bool) -> torch.Tensor:
    """Move each row's last `length` entries between left-padded and right-padded layout (dim 1)."""
    B, L = seq_like.shape[:2]
    index = torch.arange(L, device=seq_like.device).expand(B, L)
    shift = (L - lengths).unsqueeze(1)  # (B, 1)
    source = (index - shift) % L if to_left else (index + shift) % L  # (B, L)
    if seq_like.dim() == 3:
        source = source.unsqueeze(-1).expand_as(seq_like)
    return seq_like.gather(1, source)


class GRU4Rec(DotProductRecommender):
    def __init__(self, n_items: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self._catalogue(n_items, cfg)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, d, num_layers=cfg.num_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.out_drop = nn.Dropout(cfg.dropout)
        self.head = MLPHead([d, *cfg.head_hidden, d], cfg.head_activation, residual=True)
        self._init_item_embeddings(d**-0.5)

    def features(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.shape[1] > self.max_len:
            seq = seq[:, -self.max_len :]
        lengths = (seq > 0).sum(1)  # (B,)
        right = realign(seq, lengths, to_left=False)  # (B, L) real items first
        out, _ = self.gru(self.emb_drop(self.item_emb(right)))  # (B, L, d); states past the length are unused
        out = realign(out, lengths, to_left=True) * (seq > 0).unsqueeze(-1)  # back to left-padded
        return self.out_drop(out)  # (B, L, d)
