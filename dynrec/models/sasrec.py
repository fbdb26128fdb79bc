"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over the item sequence.

The blocks keep the reference implementation's layout, which trained better on ML-1M than a pre-LayerNorm
block (docs/results/ml-1m_sasrec_tuning.md); attention is scaled_dot_product_attention. The mask is causal
AND hides padded keys, so a padded history position can never leak into a real one. One pass trains every
position of a sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dynrec.config import ModelConfig
from dynrec.models.base import DotProductRecommender
from dynrec.models.head import MLPHead


class Block(nn.Module):
    """The original SASRec block: the LayerNorm-ed sequence queries the raw sequence (keys and values), the
    residual adds to the normalised query; then LayerNorm -> point-wise feed-forward (ReLU) -> residual.
    Dropout on attention weights and inside the feed-forward, as in the reference code. Linear layers start
    at N(0, 0.02)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden_size {d} is not divisible by num_heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d, eps=1e-8)
        self.qkv = nn.Linear(d, 3 * d)  # rows [0, d) project queries, [d, 3d) keys and values
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(dropout))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); with last_only, only the most recent position queries: (B, 1, d)."""
        B, L, d = x.shape
        w, b = self.qkv.weight, self.qkv.bias
        k, v = F.linear(x, w[d:], b[d:]).split(d, dim=-1)  # (B, L, d) each, from the raw sequence
        query = self.norm1(x[:, -1:] if last_only else x)  # (B, Lq, d)
        q = F.linear(query, w[:d], b[:d]).reshape(B, -1, self.heads, d // self.heads).transpose(1, 2)  # (B, H, Lq, dh)
        k, v = (t.reshape(B, L, self.heads, d // self.heads).transpose(1, 2) for t in (k, v))  # (B, H, L, dh)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, Lq, dh)
        x = self.norm2(query + self.proj(att.transpose(1, 2).reshape(B, -1, d)))
        return x + self.ffn(x)


class SASRec(DotProductRecommender):
    def __init__(self, n_items: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self._catalogue(n_items, cfg)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head = MLPHead([d, *cfg.head_hidden, d], cfg.head_activation, residual=True)
        self._init_item_embeddings(0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def _encode(self, seq: torch.Tensor, last_only: bool) -> torch.Tensor:
        L = seq.shape[1]
        if self.max_len < L:
            seq, L = seq[:, -self.max_len :], self.max_len
        valid = seq > 0  # (B, L)
        positions = torch.arange(self.max_len - L, self.max_len, device=seq.device)  # most recent = max_len - 1
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)  # (B, L, d)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # (L, L)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = (causal & (valid[:, None, :] | eye)).unsqueeze(1)  # (B, 1, L, L); self-attention keeps pads finite
        for index, block in enumerate(self.blocks):
            if last_only and index == len(self.blocks) - 1:  # ranking needs the last position only
                return block(x, mask[:, :, -1:], last_only=True)[:, 0]  # (B, d)
            x = block(x, mask) * valid.unsqueeze(-1)
        return x[:, -1] if last_only else x

    def features(self, seq: torch.Tensor) -> torch.Tensor:
        return self.norm(self._encode(seq, last_only=False))  # (B, L, d)

    def last_features(self, seq: torch.Tensor) -> torch.Tensor:
        """The output after the most recent item, computing the final block for that one query only."""
        return self.norm(self._encode(seq, last_only=True))  # (B, d)
