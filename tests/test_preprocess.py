"""Preprocessing: time order, filters, id maps, leave-one-out split, and the real datasets' statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynrec.data.batching import history, sequence_training_rows, window_training_samples
from dynrec.data.preprocess import PAD, build_sequences, filter_counts, load_dataset
from dynrec.data.readers import read_interactions
from dynrec.data.registry import DATA_ENV, DATASETS, default_data_dir, resolve
from dynrec.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def raw_sequences(data) -> dict[str, list[str]]:
    """Each user's sequence mapped back to raw ids: {raw user: [raw item, ...]}."""
    return {data.user_ids[u]: list(data.item_ids[data.sequence(u)]) for u in range(data.n_users)}


# --- order ---

# file order:      0        1        2        3        4        5        6
TIMED = [("2", "30", 5), ("1", "10", 3), ("1", "20", 1), ("1", "30", 3), ("2", "10", 1), ("2", "20", 9), ("1", "40", 2)]


def test_order_is_by_timestamp_with_file_order_breaking_ties(tmp_path):
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in TIMED]
    data = build_sequences(read_interactions(write(tmp_path / "t.inter", "\n".join(lines) + "\n")), "t")
    # user 1: item 20 (t=1), 40 (t=2), then 10 and 30 both at t=3 in file order (10 is on an earlier line)
    assert raw_sequences(data) == {"1": ["20", "40", "10", "30"], "2": ["10", "30", "20"]}
    np.testing.assert_array_equal(data.items, [2, 4, 1, 3, 1, 3, 2])
    np.testing.assert_array_equal(data.offsets, [0, 4, 7])
    assert data.info["order"] == "timestamp, then file order"


def test_order_falls_back_to_file_order_without_timestamps(tmp_path):
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i, _ in TIMED]
    data = build_sequences(read_interactions(write(tmp_path / "t.inter", "\n".join(lines) + "\n")), "t")
    assert raw_sequences(data) == {"1": ["10", "20", "30", "40"], "2": ["30", "10", "20"]}
    assert data.info["order"] == "file order"


def test_partial_timestamps_fall_back_to_file_order():
    frame = pd.DataFrame(
        {
            "user": ["1"] * 3,
            "item": ["3", "1", "2"],
            "rating": np.nan,
            "timestamp": [3.0, np.nan, 1.0],
            "order": [0, 1, 2],
        }
    )
    data = build_sequences(frame, "partial")
    assert raw_sequences(data) == {"1": ["3", "1", "2"]}
    assert data.info["order"] == "file order"


# --- filters ---

RATINGS = "1\t100\t5\n1\t101\t3\n1\t102\t4\n1\t103\t4\n2\t100\t2\n2\t101\t4\n2\t104\t5\n2\t105\t4.5\n"


def test_rating_threshold_keeps_ratings_at_or_above(tmp_path):
    frame = read_interactions(write(tmp_path / "r.dat", RATINGS))
    data = build_sequences(frame, "r", rating_threshold=4)
    assert raw_sequences(data) == {"1": ["100", "102", "103"], "2": ["101", "104", "105"]}
    assert (data.n_interactions, data.info["raw_interactions"], data.info["rating_threshold"]) == (6, 8, 4)
    assert build_sequences(frame, "r").n_interactions == 8  # no threshold keeps all


def test_rating_threshold_without_ratings_is_an_error(tmp_path):
    frame = read_interactions(write(tmp_path / "s.txt", "1 2 3 4\n"))
    with pytest.raises(DataError) as error:
        build_sequences(frame, "s", rating_threshold=4.0)
    assert str(error.value) == "s: rating_threshold=4.0 given but the data has no ratings"


def test_item_count_filter_drops_rare_items(tmp_path):
    frame = read_interactions(write(tmp_path / "s.txt", "1 10 20 30 40\n2 10 20 30\n3 10 50 20\n"))
    data = build_sequences(frame, "s", min_item_count=2)
    # items 40 and 50 occur once; user 3 keeps 2 items and is then dropped (< 3 interactions)
    assert raw_sequences(data) == {"1": ["10", "20", "30"], "2": ["10", "20", "30"]}
    assert list(data.item_ids) == [PAD, "10", "20", "30"]
    assert data.info["min_item_count"] == 2 and data.info["dropped_users_under_3"] == 1


# user 2 holds the only second copy of item 40; dropping user 2 (too short) leaves item 40 rare
KCORE = "1 10 20 30 40\n4 10 20 30\n2 40 50\n"


def test_kcore_single_pass(tmp_path):
    frame = read_interactions(write(tmp_path / "k.txt", KCORE))
    kept = filter_counts(frame, min_user=3, min_item=2, iterative=False)
    assert list(zip(kept["user"], kept["item"], strict=True)) == [
        ("1", "10"), ("1", "20"), ("1", "30"), ("1", "40"), ("4", "10"), ("4", "20"), ("4", "30"),
    ]
    data = build_sequences(frame, "k", min_user_count=3, min_item_count=2)
    assert raw_sequences(data) == {"1": ["10", "20", "30", "40"], "4": ["10", "20", "30"]}
    assert data.info["iterative_kcore"] is False


def test_kcore_iterative_repeats_until_stable(tmp_path):
    frame = read_interactions(write(tmp_path / "k.txt", KCORE))
    data = build_sequences(frame, "k", min_user_count=3, min_item_count=2, iterative=True)
    assert raw_sequences(data) == {"1": ["10", "20", "30"], "4": ["10", "20", "30"]}
    assert data.n_items == 3 and data.info["iterative_kcore"] is True
    kept = filter_counts(frame, min_user=3, min_item=2, iterative=True)
    assert kept["item"].value_counts().min() >= 2 and kept["user"].value_counts().min() >= 3


def test_users_with_fewer_than_three_interactions_are_dropped(tmp_path):
    frame = read_interactions(write(tmp_path / "s.txt", "1 1 2 3\n2 1 2\n3 3\n4 3 2 1 1\n"))
    data = build_sequences(frame, "s")
    assert list(data.user_ids) == ["1", "4"]
    np.testing.assert_array_equal(data.lengths, [3, 4])
    assert data.info["dropped_users_under_3"] == 2


def test_no_user_left_is_an_error(tmp_path):
    frame = read_interactions(write(tmp_path / "s.txt", "1 1 2\n2 3\n"))
    with pytest.raises(DataError) as error:
        build_sequences(frame, "short")
    assert str(error.value) == "short: no user has 3 or more interactions after filtering; leave-one-out needs 3"


# --- id maps ---


def test_id_maps_are_contiguous_and_round_trip(tmp_path):
    text = "10 100 9 2\n9 2 100 7 9\n100 7 7 2\n"
    frame = read_interactions(write(tmp_path / "s.txt", text))
    data = build_sequences(frame, "s")
    assert list(data.user_ids) == ["9", "10", "100"]  # integer ids sort numerically, not as strings
    assert list(data.item_ids) == [PAD, "2", "7", "9", "100"]
    assert set(data.items.tolist()) == set(range(1, data.n_items + 1))
    expected = {line.split()[0]: line.split()[1:] for line in text.splitlines()}
    assert raw_sequences(data) == expected
    item_index = {raw: i for i, raw in enumerate(data.item_ids)}
    for u in range(data.n_users):
        np.testing.assert_array_equal(data.sequence(u), [item_index[i] for i in expected[data.user_ids[u]]])


def test_token_ids_sort_lexicographically(tmp_path):
    lines = ["user_id:token\titem_id:token", "bob\tx2", "bob\tx10", "bob\ta", "amy\ta", "amy\tx10", "amy\tb"]
    data = build_sequences(read_interactions(write(tmp_path / "t.inter", "\n".join(lines) + "\n")), "t")
    assert list(data.user_ids) == ["amy", "bob"]
    assert list(data.item_ids) == [PAD, "a", "b", "x10", "x2"]
    assert raw_sequences(data) == {"amy": ["a", "x10", "b"], "bob": ["x2", "x10", "a"]}


# --- leave-one-out ---


def test_leave_one_out_split(tmp_path):
    # user 3 (2 items) is dropped; the remaining items are exactly 1..8, so internal ids equal raw ids
    frame = read_interactions(write(tmp_path / "s.txt", "1 5 3 8 1 7\n2 4 6 2\n3 9 9\n4 1 2 3\n"))
    data = build_sequences(frame, "loo")
    assert list(data.user_ids) == ["1", "2", "4"] and data.n_items == 8
    np.testing.assert_array_equal(data.offsets, [0, 5, 8, 11])
    np.testing.assert_array_equal(data.items, [5, 3, 8, 1, 7, 4, 6, 2, 1, 2, 3])
    np.testing.assert_array_equal(data.targets("test"), [7, 2, 3])
    np.testing.assert_array_equal(data.targets("valid"), [1, 6, 2])
    np.testing.assert_array_equal(data.split_end("test"), [4, 7, 10])
    np.testing.assert_array_equal(data.split_end("valid"), [3, 6, 9])
    np.testing.assert_array_equal(data.split_end("train"), [3, 6, 9])
    # the model's input: the test history includes the validation target, the validation history does not
    np.testing.assert_array_equal(history(data, "test", 4), [[5, 3, 8, 1], [0, 0, 4, 6], [0, 0, 1, 2]])
    np.testing.assert_array_equal(history(data, "valid", 4), [[0, 5, 3, 8], [0, 0, 0, 4], [0, 0, 0, 1]])
    np.testing.assert_array_equal(history(data, "test", 2), [[8, 1], [4, 6], [1, 2]])
    # training data excludes both targets
    np.testing.assert_array_equal(history(data, "train", 4), [[0, 5, 3, 8], [0, 0, 0, 4], [0, 0, 0, 1]])
    np.testing.assert_array_equal(sequence_training_rows(data, 3), [[0, 5, 3, 8], [0, 0, 0, 4], [0, 0, 0, 1]])
    # cover="all": user 1's two targets need two windows of one target, overlapping by one item
    np.testing.assert_array_equal(sequence_training_rows(data, 1, "all"), [[3, 8], [5, 3], [0, 4], [0, 1]])
    hist, targets = window_training_samples(data, 2)
    np.testing.assert_array_equal(hist, [[0, 5], [5, 3]])
    np.testing.assert_array_equal(targets, [3, 8])
    with pytest.raises(ValueError, match="split 'train' has no single target: expected valid or test"):
        data.targets("train")


# --- registry and real datasets ---


def test_covering_the_whole_history_trains_every_target_once_with_its_own_recent_items(tmp_path):
    rng = np.random.default_rng(3)
    lines = [" ".join(map(str, [u, *rng.integers(1, 60, size=n)])) for u, n in enumerate(rng.integers(3, 40, 30))]
    data = build_sequences(read_interactions(write(tmp_path / "c.txt", "\n".join(lines) + "\n")), "cover")
    bounds = list(zip(data.offsets[:-1], data.split_end("train"), strict=True))
    expected = sorted(np.concatenate([data.items[s + 1 : e] for s, e in bounds]).tolist())
    for length in (1, 4, 7, 50):
        rows = sequence_training_rows(data, length, "all")
        inputs, targets = rows[:, :-1], rows[:, 1:]
        assert sorted(targets[inputs > 0].tolist()) == expected  # every target once, each after an item
        for row in rows:  # each row is a run of consecutive training items, left-padded
            kept = row[row > 0]
            assert (row[: len(row) - len(kept)] == 0).all()
            assert any(np.array_equal(data.items[p : p + len(kept)], kept)
                       for s, e in bounds for p in range(s, e - len(kept) + 1))
        per_user = np.maximum(-(-(data.split_end("train") - data.offsets[:-1] - 1) // length), 1)
        newest = np.cumsum(per_user) - per_user  # each user's first row is the one "last" trains on
        np.testing.assert_array_equal(rows[newest], sequence_training_rows(data, length))


def test_unregistered_missing_name_is_an_error():
    with pytest.raises(DataError) as error:
        resolve("no-such-dataset")
    assert "no-such-dataset: not a registered dataset (ml-100k, ml-1m, beauty, douban-book, douban-music)" in str(
        error.value
    )


def test_registered_dataset_missing_under_data_dir(tmp_path):
    with pytest.raises(DataError) as error:
        resolve("beauty", tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'beauty' / 'Beauty.txt'}: file not found for dataset 'beauty'; "
        "see data/README.md for how to obtain it"
    )


def test_ml100k_from_recbole():
    data = load_dataset("ml-100k")
    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100000)
    assert data.info["order"] == "timestamp, then file order"
    # every user's sequence equals a pandas reference: sort by timestamp, ties by file order
    frame = read_interactions(data.info["source"])
    reference = frame.sort_values(["timestamp", "order"], kind="stable").groupby("user", sort=False)["item"]
    ours = raw_sequences(data)
    assert {user: list(items) for user, items in reference} == ours


def shared_data_dir() -> Path | None:
    """DYNREC_DATA, ../shared/data beside the working directory, or beside this repository."""
    found = default_data_dir()
    if found is None and not os.environ.get(DATA_ENV):
        candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
        found = candidate if candidate.is_dir() else None
    return found


ML1M_DIR = shared_data_dir()


@pytest.mark.skipif(
    ML1M_DIR is None or not (ML1M_DIR / DATASETS["ml-1m"].relative_path).is_file(),
    reason=f"ml-1m not found: set {DATA_ENV} to a data directory holding {DATASETS['ml-1m'].relative_path}",
)
def test_ml1m_statistics():
    data = load_dataset("ml-1m", ML1M_DIR)
    assert (data.n_users, data.n_items, data.n_interactions) == (6040, 3416, 999611)
    assert data.info["raw_interactions"] == 1000209 and data.info["min_item_count"] == 5
