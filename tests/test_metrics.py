"""Metrics and evaluation protocols against hand-computed values and brute-force references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dynrec.data.batching import sampled_candidates
from dynrec.data.preprocess import build_sequences
from dynrec.data.readers import read_interactions
from dynrec.errors import DataError
from dynrec.evaluate import evaluate, pooled_auc, public, rank_metrics

BIG_K = 1000  # with K above every rank, mrr@K = 1 / (rank + 1) exposes the exact rank


def ranks_of(per_user: dict) -> np.ndarray:
    return np.rint(1.0 / per_user[f"mrr@{BIG_K}"] - 1.0).astype(int)


# --- rank_metrics and pooled_auc ---


def test_rank_metrics_hand_computed():
    ranks = torch.tensor([0, 1, 4, 9, 20])
    n_candidates = torch.tensor([101, 101, 5, 11, 21])
    out = rank_metrics(ranks, [5, 10], n_candidates)
    assert sorted(out) == ["hr@10", "hr@5", "mrr@10", "mrr@5", "ndcg@10", "ndcg@5", "uauc"]
    expected = {
        "ndcg@5": [1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0, 0.0],
        "ndcg@10": [1.0, 0.6309297535714575, 0.38685280723454163, 0.28906482631788782, 0.0],
        "hr@5": [1.0, 1.0, 1.0, 0.0, 0.0],
        "hr@10": [1.0, 1.0, 1.0, 1.0, 0.0],
        "mrr@5": [1.0, 0.5, 0.2, 0.0, 0.0],
        "mrr@10": [1.0, 0.5, 0.2, 0.1, 0.0],
        "uauc": [1.0, 0.99, 0.0, 0.1, 0.0],  # 1 - rank / (n - 1)
    }
    for name, values in expected.items():
        assert out[name].dtype == torch.float64
        np.testing.assert_allclose(out[name].numpy(), values, rtol=0, atol=1e-12, err_msg=name)


def brute_force_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos.ravel() for n in neg.ravel())
    return total / (pos.size * neg.size)


def test_pooled_auc_small_hand_case_with_a_tie():
    # pairs: 1>0 (1), 1<2 (0), 2>0 (1), 2=2 (1/2) -> 2.5 / 4
    assert pooled_auc(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])) == 0.625
    assert pooled_auc(torch.tensor([3.0, 3.0]), torch.tensor([[3.0, 3.0], [3.0, 3.0]])) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_auc_matches_brute_force_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 5, size=17).astype(np.float32)
    neg = rng.integers(0, 5, size=(17, 6)).astype(np.float32)
    expected = brute_force_auc(pos, neg)
    assert pooled_auc(torch.from_numpy(pos), torch.from_numpy(neg)) == pytest.approx(expected, abs=1e-12)


# --- fake scorers ---


class HistoryScorer:
    """Score -item_id, plus 100 for items in the history: seen items would win were they not excluded."""

    max_len = 20

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def _scores(self, seq: torch.Tensor) -> torch.Tensor:
        scores = -torch.arange(self.n_items + 1, dtype=torch.float32).repeat(len(seq), 1)
        for row, items in enumerate(seq):
            seen = items[items > 0].unique()
            scores[row, seen] += 100.0
        return scores

    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        return self._scores(seq)

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self._scores(seq).gather(1, candidates)


class ConstantScorer:
    """Every item scores the same: ties must count against the target."""

    max_len = 20

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(seq), self.n_items + 1)

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.zeros(candidates.shape)


class BigramScorer:
    """Scores from a fixed table indexed by the last history item; small integers so ties are common."""

    max_len = 8

    def __init__(self, n_items: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.table = torch.from_numpy(rng.integers(0, 6, size=(n_items + 1, n_items + 1)).astype(np.float32))
        self.calls = 0

    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.table[seq[:, -1]].clone()

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.table[seq[:, -1]].gather(1, candidates)


@pytest.fixture
def tiny(tmp_path: Path):
    """Users 1, 2, 3 (internal 0, 1, 2); items 1..8, so internal item ids equal raw ids."""
    path = tmp_path / "tiny.txt"
    path.write_text("1 1 2 3 4\n2 5 6 7 8 2 6\n3 8 7 5\n")
    return build_sequences(read_interactions(path), "tiny")


# --- full protocol ---


def test_full_protocol_excludes_earlier_items_except_the_target(tiny):
    results = evaluate(HistoryScorer(8), tiny, "test", protocols=["full"], ks=[1, 5, BIG_K], batch_size=2)
    per_user = results["_per_user"]["full"]
    # user 1: history 1 2 3 excluded, target 4 beats 5..8 -> rank 0 of 5 (unexcluded it would be rank 3)
    # user 2: history 5 6 7 8 2 excluded except the repeated target 6 -> candidates 1 3 4 6, rank 0 of 4
    # user 3: history 8 7 excluded; -1..-4 beat the target's -5 -> rank 4 of 6
    np.testing.assert_array_equal(ranks_of(per_user), [0, 0, 4])
    np.testing.assert_allclose(per_user["hr@1"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(per_user["ndcg@5"], [1.0, 1.0, 1 / math.log2(6)])
    np.testing.assert_allclose(per_user["mrr@5"], [1.0, 1.0, 0.2])
    np.testing.assert_allclose(per_user["uauc"], [1.0, 1.0, 1 - 4 / 5])
    assert results["full"]["hr@1"] == 0.666667
    assert results["full"]["uauc"] == round((1 + 1 + 0.2) / 3, 6)
    assert public(results) == {"full": results["full"]}


def test_full_protocol_on_validation_split(tiny):
    per_user = evaluate(HistoryScorer(8), tiny, "valid", protocols=["full"], ks=[BIG_K])["_per_user"]["full"]
    # targets 3, 2, 7; candidates {3..8}, {1, 2, 3, 4}, {1..7}
    np.testing.assert_array_equal(ranks_of(per_user), [0, 1, 6])
    np.testing.assert_allclose(per_user["uauc"], [1.0, 1 - 1 / 3, 0.0])


def test_full_protocol_ties_count_against_the_target(tiny):
    results = evaluate(ConstantScorer(8), tiny, "test", protocols=["full"], ks=[1, 5, BIG_K])
    per_user = results["_per_user"]["full"]
    # every candidate ties with the target: rank = candidates - 1 = 5 - 1, 4 - 1, 6 - 1
    np.testing.assert_array_equal(ranks_of(per_user), [4, 3, 5])
    np.testing.assert_array_equal(per_user["hr@1"], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(per_user["uauc"], [0.0, 0.0, 0.0])
    assert results["full"]["ndcg@5"] == round((1 / math.log2(6) + 1 / math.log2(5)) / 3, 6)


def full_reference(scorer: BigramScorer, data, split: str) -> np.ndarray:
    """Per-user ranks in user order, one user at a time, straight from the protocol's definition."""
    ends = data.split_end(split)
    targets = data.targets(split)
    ranks = []
    for u in range(data.n_users):
        hist = data.items[data.offsets[u] : ends[u]]
        scores = scorer.table[hist[-1]].numpy().astype(np.float64)
        target_score = scores[targets[u]]
        scores[hist] = -np.inf
        scores[0] = -np.inf
        scores[targets[u]] = target_score
        ranks.append(int((scores >= target_score).sum()) - 1)
    return np.array(ranks)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_full_per_user_arrays_are_in_user_order(cyclic_data, split):
    scorer = BigramScorer(cyclic_data.n_items)
    results = evaluate(scorer, cyclic_data, split, protocols=["full"], ks=[5, 10, BIG_K], batch_size=7)
    assert scorer.calls == math.ceil(cyclic_data.n_users / 7)
    per_user = results["_per_user"]["full"]
    expected = full_reference(scorer, cyclic_data, split)
    assert len(set(expected.tolist())) > 5  # the reference is not trivially constant
    np.testing.assert_array_equal(ranks_of(per_user), expected)
    np.testing.assert_allclose(per_user["ndcg@5"], np.where(expected < 5, 1 / np.log2(expected + 2.0), 0.0))
    np.testing.assert_array_equal(per_user["hr@10"], (expected < 10).astype(float))
    for name, values in per_user.items():
        assert results["full"][name] == round(float(values.mean()), 6)


# --- sampled protocol ---


def test_sampled_candidates_exclude_every_interacted_item(cyclic_data):
    cands = sampled_candidates(cyclic_data, "test", 10, seed=7)
    assert cands.shape == (cyclic_data.n_users, 11) and cands.dtype == np.int64
    np.testing.assert_array_equal(cands[:, 0], cyclic_data.targets("test"))
    for u in range(cyclic_data.n_users):
        negatives = cands[u, 1:]
        assert len(set(negatives.tolist())) == 10, f"user {u}: repeated negatives {negatives}"
        assert negatives.min() >= 1 and negatives.max() <= cyclic_data.n_items
        assert not set(negatives.tolist()) & set(cyclic_data.sequence(u).tolist()), f"user {u} saw a negative"


def test_sampled_candidates_deterministic_for_a_seed(cyclic_data):
    first = sampled_candidates(cyclic_data, "test", 10, seed=7)
    np.testing.assert_array_equal(first, sampled_candidates(cyclic_data, "test", 10, seed=7))
    assert not np.array_equal(first, sampled_candidates(cyclic_data, "test", 10, seed=8))
    valid = sampled_candidates(cyclic_data, "valid", 10, seed=7)
    np.testing.assert_array_equal(valid[:, 0], cyclic_data.targets("valid"))
    assert not np.array_equal(first[:, 1:], valid[:, 1:])  # each split has its own draw


def test_sampled_candidates_when_negatives_are_exactly_enough(tiny):
    cands = sampled_candidates(tiny, "test", 3, seed=0)
    # user 2 interacted with 2 5 6 7 8: its only possible negatives are 1 3 4
    assert sorted(cands[1, 1:].tolist()) == [1, 3, 4]
    assert set(cands[0, 1:].tolist()) <= {5, 6, 7, 8}
    assert set(cands[2, 1:].tolist()) <= {1, 2, 3, 4, 6}


def test_sampled_candidates_too_few_negatives_is_an_error(tiny):
    with pytest.raises(DataError) as error:
        sampled_candidates(tiny, "test", 4)
    assert str(error.value) == (
        "tiny: user 2 interacted with 5 of 8 items, leaving fewer than the 4 negatives the sampled protocol needs"
    )


def test_sampled_protocol_matches_reference_and_repeats(cyclic_data):
    scorer = BigramScorer(cyclic_data.n_items, seed=3)
    kwargs = dict(protocols=["sampled"], ks=[1, 5, BIG_K], batch_size=7, sampled_negatives=10, sample_seed=11)
    results = evaluate(scorer, cyclic_data, "test", **kwargs)
    cands = sampled_candidates(cyclic_data, "test", 10, seed=11)
    last = cyclic_data.items[cyclic_data.split_end("test") - 1]
    scores = np.stack([scorer.table[last[u]].numpy()[cands[u]] for u in range(cyclic_data.n_users)])
    expected = (scores >= scores[:, :1]).sum(1) - 1
    per_user = results["_per_user"]["sampled"]
    np.testing.assert_array_equal(ranks_of(per_user), expected)
    np.testing.assert_allclose(per_user["uauc"], 1 - expected / 10)
    assert results["sampled"]["auc"] == pytest.approx(brute_force_auc(scores[:, 0], scores[:, 1:]), abs=1e-6)
    again = evaluate(scorer, cyclic_data, "test", **kwargs)
    assert public(again) == public(results)


def test_sampled_protocol_ties_count_against_the_target(tiny):
    results = evaluate(ConstantScorer(8), tiny, "test", protocols=["sampled"], ks=[1, BIG_K], sampled_negatives=3)
    np.testing.assert_array_equal(ranks_of(results["_per_user"]["sampled"]), [3, 3, 3])
    assert results["sampled"]["hr@1"] == 0.0 and results["sampled"]["uauc"] == 0.0
    assert results["sampled"]["auc"] == 0.5


def test_unknown_protocol_is_an_error(tiny):
    with pytest.raises(ValueError, match=r"unknown protocol 'popular': expected one of \('full', 'sampled'\)"):
        evaluate(ConstantScorer(8), tiny, protocols=["popular"])
