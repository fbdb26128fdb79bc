"""Ranking metrics under the two protocols, vectorised over users and deterministic.

full:    rank every item; the user's earlier items are excluded, except the target itself.
sampled: rank the target among 99 items the user never interacted with (fixed seed, same for all models).
Ties count against the target (rank = number of candidates scoring >= it, minus itself), so a model that
scores everything equal gets no credit.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from dynrec.data.batching import history, sampled_candidates, seen_mask_indices
from dynrec.data.preprocess import SequenceData

PROTOCOLS = ("full", "sampled")


def rank_metrics(ranks: torch.Tensor, ks: list[int], n_candidates: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-user NDCG@K, HR@K, MRR@K and AUC from 0-based ranks among n_candidates (target included)."""
    ranks = ranks.double()
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = ranks < k
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), 0.0)
        out[f"hr@{k}"] = hit.double()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1.0), 0.0)
    out["uauc"] = 1.0 - ranks / (n_candidates.double() - 1.0)  # per-user AUC: one positive vs the rest
    return out


def pooled_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Global AUC over all (positive, negative) score pairs pooled across users (Mann-Whitney, ties = 1/2)."""
    scores = torch.cat([pos.flatten(), neg.flatten()]).double()
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks[order] = average[inverse]
    n_pos, n_neg = pos.numel(), neg.numel()
    return float((ranks[: n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _batches(data: SequenceData, split: str, size: int):
    """Users in batches of similar history length (less padding to compute), in a fixed order."""
    order = np.argsort(data.split_end(split) - data.offsets[:-1], kind="stable")
    for lo in range(0, len(order), size):
        yield order[lo : lo + size]


class Scorer(Protocol):
    """What evaluation needs: any model (dynrec's, a fused one, a RecBole wrapper) that scores histories."""

    max_len: int

    def score_all(self, seq: torch.Tensor) -> torch.Tensor: ...

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor: ...


def mask_seen(
    scores: torch.Tensor, data: SequenceData, split: str, users: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set, in place, the users' earlier items (all but the split's target) and padding to -inf in (B, N + 1)
    scores, as full ranking excludes them; returns the scores and (B, 1) the target's score."""
    target = torch.from_numpy(data.targets(split)[users])[:, None]  # (B, 1)
    target_score = scores.gather(1, target)  # (B, 1)
    rows, cols = seen_mask_indices(data, split, users)
    scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")  # earlier items are excluded...
    scores.scatter_(1, target, target_score)  # ...except the target itself
    scores[:, 0] = float("-inf")
    return scores, target_score


def _full_ranks(scorer: Scorer, data: SequenceData, split: str, users: np.ndarray, seq: torch.Tensor):
    scores, target_score = mask_seen(scorer.score_all(seq).float().cpu(), data, split, users)  # (B, N + 1)
    ranks = (scores >= target_score).sum(1) - 1  # (B,) ties count against the target
    return ranks, torch.isfinite(scores).sum(1), None


def _sampled_ranks(scorer: Scorer, candidates: np.ndarray, users: np.ndarray, seq: torch.Tensor):
    cand = torch.from_numpy(candidates[users]).to(seq.device)  # (B, 1 + n): the target first
    scores = scorer.score_candidates(seq, cand).float().cpu()  # (B, 1 + n)
    ranks = (scores >= scores[:, :1]).sum(1) - 1
    return ranks, torch.full((len(users),), scores.shape[1]), scores


@torch.inference_mode()
def evaluate(
    scorer: Scorer,
    data: SequenceData,
    split: str = "test",
    protocols: tuple[str, ...] | list[str] = PROTOCOLS,
    ks: tuple[int, ...] | list[int] = (5, 10, 20),
    batch_size: int = 512,
    sampled_negatives: int = 99,
    sample_seed: int = 2025,
) -> dict:
    """Mean metrics per protocol over every user's validation or test target.

    The result maps protocol -> {metric: mean}; `_per_user` holds the per-user arrays for paired tests.
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: expected one of {PROTOCOLS}")
    was_training = getattr(scorer, "training", False)
    if isinstance(scorer, torch.nn.Module):
        scorer.eval()
        device = next(scorer.parameters()).device
    else:
        device = torch.device("cpu")
    results: dict = {"_per_user": {}}
    for protocol in protocols:
        candidates = sampled_candidates(data, split, sampled_negatives, sample_seed) if protocol == "sampled" else None
        collected: dict[str, list[torch.Tensor]] = {}
        pos_scores, neg_scores = [], []
        for users in _batches(data, split, batch_size):
            seq = torch.from_numpy(history(data, split, scorer.max_len, users))
            seq = seq[:, -max(int((seq > 0).sum(1).max()), 1) :].to(device)  # exact: positions align to the end
            if protocol == "full":
                ranks, n_candidates, _ = _full_ranks(scorer, data, split, users, seq)
            else:
                ranks, n_candidates, scores = _sampled_ranks(scorer, candidates, users, seq)
                pos_scores.append(scores[:, 0])
                neg_scores.append(scores[:, 1:])
            for name, values in rank_metrics(ranks, list(ks), n_candidates).items():
                collected.setdefault(name, []).append(values)
        order = torch.from_numpy(np.concatenate(list(_batches(data, split, batch_size))))
        merged = {}
        for name, values in collected.items():
            merged[name] = torch.empty(data.n_users, dtype=torch.float64)
            merged[name][order] = torch.cat(values)  # back to user order, for paired comparisons
        results[protocol] = {name: round(float(values.mean()), 6) for name, values in merged.items()}
        if protocol == "sampled":
            results[protocol]["auc"] = round(pooled_auc(torch.cat(pos_scores), torch.cat(neg_scores)), 6)
        results["_per_user"][protocol] = {name: values.numpy() for name, values in merged.items()}
    if isinstance(scorer, torch.nn.Module):
        scorer.train(was_training)
    return results


def public(results: dict) -> dict[str, dict[str, float]]:
    """Drop the per-user arrays, keeping the JSON-ready means."""
    return {key: value for key, value in results.items() if not key.startswith("_")}
