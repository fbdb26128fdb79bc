"""Committed per-user outcomes: clipped ranks rebuild the tested metrics bit for bit, values that no rank
gives are refused, and an unchanged archive is not rewritten."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynrec.evaluate import rank_metrics
from dynrec.experiments import per_user


def _metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    out = rank_metrics(torch.from_numpy(ranks), [5, 10, 20], torch.full((len(ranks),), 100))
    return {name: values.numpy() for name, values in out.items()}


def test_clipped_ranks_rebuild_every_metric_up_to_the_cutoff_exactly():
    ranks = np.random.default_rng(0).integers(0, 100, size=500)
    ranks[:12] = np.arange(12)  # every kept rank, the first miss and one past it
    arrays = _metrics(ranks)
    codes = per_user.codes_of(arrays)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, np.minimum(ranks, per_user.CUTOFF))
    for metric in ("ndcg@10", "hr@10", "ndcg@5", "hr@5", "mrr@10"):
        assert np.array_equal(per_user.metric_of(codes, metric), arrays[metric]), metric  # bitwise, not close
    with pytest.raises(ValueError, match="cannot rebuild 'ndcg@20'"):
        per_user.metric_of(codes, "ndcg@20")


def test_values_that_no_rank_gives_are_refused():
    arrays = _metrics(np.array([0, 3, 50]))
    with pytest.raises(ValueError, match="hr@10 does not read back"):
        per_user.codes_of({**arrays, "hr@10": np.array([1.0, 0.0, 0.0])})
    with pytest.raises(ValueError, match="ndcg@10 does not read back"):
        per_user.codes_of({"ndcg@10": np.array([1.0, 0.7, 0.0]), "hr@10": arrays["hr@10"]})
    with pytest.raises(ValueError, match="need ndcg@10"):
        per_user.codes_of({"hr@10": arrays["hr@10"]})


def test_an_archive_merges_new_outcomes_and_is_not_rewritten_when_unchanged(tmp_path):
    path = per_user.archive_path(tmp_path, "table1", "data/ml-1m", "sasrec", 2)
    assert path == tmp_path / "per_user" / "table1" / "ml-1m-sasrec-s2.npz"
    assert per_user.load(path) == {}
    a, b = np.array([0, 10, 3], dtype=np.uint8), np.array([1, 1, 10], dtype=np.uint8)
    assert per_user.save(path, {"model-a/sampled": a})
    assert per_user.save(path, {"cki/sampled": b})
    stamp = path.stat().st_mtime_ns
    assert not per_user.save(path, {"model-a/sampled": a.copy()})
    assert path.stat().st_mtime_ns == stamp
    loaded = per_user.load(path)
    assert sorted(loaded) == ["cki/sampled", "model-a/sampled"]
    np.testing.assert_array_equal(loaded["model-a/sampled"], a)
    np.testing.assert_array_equal(loaded["cki/sampled"], b)
    assert not list(path.parent.glob("*.tmp"))
