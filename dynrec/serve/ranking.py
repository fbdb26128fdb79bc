"""Top-k ranking for a batch of requests: one forward pass over all of them, then masks and one top-k.

Every request in a batch, with candidates or without, is scored against the whole catalogue by one
`score_all` call (the catalogue product is a small share of the cost next to the encoder and, in cki mode,
the per-request splice); candidates and seen-item exclusion are then masks on those scores, and a single
`topk` serves every k. Histories are left-padded to the longest in the batch, which does not change a
history's scores (positions align to the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dynrec.data.batching import windows
from dynrec.models import Recommender

NO_ITEMS = np.zeros(0, dtype=np.int64)


@dataclass
class Query:
    """One request in internal ids: what the model reads and what the answer may contain."""

    mode: str  # static | dynamic | cki
    history: np.ndarray  # (<= max_len,) internal ids, most recent last; empty means popularity fallback
    k: int
    seen: np.ndarray  # internal ids never to recommend (the user's items when exclude_seen; may be empty)
    candidates: np.ndarray | None = None  # internal ids to rank among; None ranks the whole catalogue


@dataclass
class Ranked:
    items: np.ndarray  # (<= k,) internal ids, best first; fewer than k when candidates or exclusion run out
    scores: np.ndarray  # (<= k,) their scores


class Ranker:
    """Scores batches of queries with a bundle's models (one per mode) or with item popularity."""

    def __init__(self, scorers: dict[str, Recommender], popularity: torch.Tensor) -> None:
        self.scorers = scorers
        self.popularity = popularity.numpy()  # (N + 1,), [0] = -inf
        self.by_popularity = np.argsort(-self.popularity, kind="stable")  # ties: the smaller internal id first
        self.n_items = len(popularity) - 1

    @torch.inference_mode()
    def rank(self, queries: list[Query]) -> list[Ranked]:
        """One forward pass for queries that all share one mode and have non-empty histories."""
        modes = {q.mode for q in queries}
        if len(modes) != 1:
            raise ValueError(f"one batch scores one mode, got {sorted(modes)}")
        lengths = np.array([len(q.history) for q in queries])
        ends = np.cumsum(lengths)
        items = np.concatenate([q.history for q in queries]).astype(np.int64)
        seq = torch.from_numpy(windows(items, ends - lengths, ends, max(int(lengths.max()), 1)))  # (B, L)
        scores = self.scorers[modes.pop()].score_all(seq).float()  # (B, N + 1)
        return self._top(scores, queries)

    def popular(self, query: Query) -> Ranked:
        """The most popular items in training (the answer for an empty history), with the same exclusions."""
        allowed = np.ones(self.n_items + 1, dtype=bool)
        allowed[0] = False
        allowed[query.seen] = False
        if query.candidates is not None:
            chosen = np.zeros_like(allowed)
            chosen[query.candidates] = True
            allowed &= chosen
        items = self.by_popularity[allowed[self.by_popularity]][: query.k]
        return Ranked(items, self.popularity[items])

    def _top(self, scores: torch.Tensor, queries: list[Query]) -> list[Ranked]:
        """Mask seen items and non-candidates with -inf, take one top-k, drop masked entries per query."""
        counts = [len(q.seen) for q in queries]
        if sum(counts):
            rows = torch.from_numpy(np.repeat(np.arange(len(queries)), counts))
            scores[rows, torch.from_numpy(np.concatenate([q.seen for q in queries]).astype(np.int64))] = float("-inf")
        restricted = [i for i, q in enumerate(queries) if q.candidates is not None]
        if restricted:
            chosen = [queries[i].candidates for i in restricted]
            allowed = torch.zeros(len(restricted), scores.shape[1], dtype=torch.bool)
            allowed[torch.from_numpy(np.repeat(np.arange(len(chosen)), [len(c) for c in chosen])),
                    torch.from_numpy(np.concatenate(chosen).astype(np.int64))] = True
            index = torch.tensor(restricted)
            scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
        values, indices = torch.topk(scores, min(max(q.k for q in queries), self.n_items), dim=1)  # (B, k)
        values, indices = values.numpy(), indices.numpy()
        finite = np.isfinite(values)
        return [Ranked(indices[i, : q.k][finite[i, : q.k]], values[i, : q.k][finite[i, : q.k]])
                for i, q in enumerate(queries)]
