"""From raw interactions to per-user item sequences: filtering, id maps, leave-one-out split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dynrec.data.readers import read_interactions
from dynrec.data.registry import resolve
from dynrec.errors import DataError

PAD = "[PAD]"
MIN_SEQUENCE = 3  # leave-one-out needs one training item, one validation and one test item


@dataclass
class SequenceData:
    """All users' item sequences in time order, stored as CSR, with the raw-id maps.

    Internal item ids run 1..n_items; 0 is padding. Leave-one-out by time: a user's last item is the
    test target, the second-to-last the validation target, the rest is training data.
    """

    name: str
    user_ids: np.ndarray  # (U,) raw user ids (str); position = internal user index
    item_ids: np.ndarray  # (N + 1,) raw item ids (str); item_ids[0] is the padding token
    offsets: np.ndarray  # (U + 1,) CSR row pointers into items
    items: np.ndarray  # (nnz,) internal item ids, each user's sequence in time order
    info: dict = field(default_factory=dict)  # preprocessing facts: filters applied, rows dropped

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """One user's full sequence (internal ids)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def split_end(self, split: str) -> np.ndarray:
        """Per-user exclusive end of the history fed to the model when predicting the split's target."""
        ends = {"train": 2, "valid": 2, "test": 1}
        if split not in ends:
            raise ValueError(f"unknown split {split!r}: expected train, valid or test")
        return self.offsets[1:] - ends[split]

    def targets(self, split: str) -> np.ndarray:
        """(U,) the validation or test target of every user."""
        if split not in ("valid", "test"):
            raise ValueError(f"split {split!r} has no single target: expected valid or test")
        return self.items[self.split_end(split)]

    def stats(self) -> dict:
        lengths = self.lengths
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "mean_sequence_length": round(float(lengths.mean()), 2),
            "density": round(self.n_interactions / (self.n_users * self.n_items), 6),
            **self.info,
        }


def _natural_order(values: np.ndarray) -> np.ndarray:
    """Unique raw ids sorted numerically when all are integers, else lexicographically."""
    unique = pd.unique(values)
    if all(v.lstrip("-").isdigit() for v in unique):
        return np.array(sorted(unique, key=int), dtype=object)
    return np.array(sorted(unique), dtype=object)


def filter_counts(frame: pd.DataFrame, min_user: int, min_item: int, iterative: bool) -> pd.DataFrame:
    """Drop rare items then rare users; repeat until stable when iterative (k-core)."""
    while True:
        before = len(frame)
        if min_item > 0:
            counts = frame["item"].map(frame["item"].value_counts())
            frame = frame[counts >= min_item]
        if min_user > 0:
            counts = frame["user"].map(frame["user"].value_counts())
            frame = frame[counts >= min_user]
        if not iterative or len(frame) == before:
            return frame


def build_sequences(
    frame: pd.DataFrame,
    name: str,
    rating_threshold: float | None = None,
    min_user_count: int = 0,
    min_item_count: int = 0,
    iterative: bool = False,
) -> SequenceData:
    """Filter interactions, order them by time (timestamp, else file order) and map ids to 1..N."""
    info: dict = {"raw_interactions": len(frame)}
    if rating_threshold is not None:
        if frame["rating"].isna().all():
            raise DataError(name, f"rating_threshold={rating_threshold} given but the data has no ratings")
        frame = frame[frame["rating"] >= rating_threshold]
        info["rating_threshold"] = rating_threshold
    frame = filter_counts(frame, min_user_count, min_item_count, iterative)
    info.update(min_user_count=min_user_count, min_item_count=min_item_count, iterative_kcore=iterative)
    lengths = frame["user"].map(frame["user"].value_counts())
    short = frame[lengths < MIN_SEQUENCE]["user"].nunique()
    frame = frame[lengths >= MIN_SEQUENCE]
    info["dropped_users_under_3"] = int(short)
    if frame.empty:
        raise DataError(name, "no user has 3 or more interactions after filtering; leave-one-out needs 3")
    has_time = not frame["timestamp"].isna().any()
    info["order"] = "timestamp, then file order" if has_time else "file order"
    user_ids = _natural_order(frame["user"].to_numpy())
    item_ids = _natural_order(frame["item"].to_numpy())
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids)
    item_index = pd.Series(np.arange(1, len(item_ids) + 1), index=item_ids)
    ordered = pd.DataFrame(
        {
            "u": user_index.loc[frame["user"].to_numpy()].to_numpy(),
            "i": item_index.loc[frame["item"].to_numpy()].to_numpy(),
            "t": frame["timestamp"].to_numpy() if has_time else np.zeros(len(frame)),
            "o": frame["order"].to_numpy(),
        }
    ).sort_values(["u", "t", "o"], kind="stable")
    counts = np.bincount(ordered["u"].to_numpy(), minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SequenceData(
        name=name,
        user_ids=user_ids.astype(str),
        item_ids=np.concatenate([[PAD], item_ids]).astype(str),
        offsets=offsets,
        items=ordered["i"].to_numpy(dtype=np.int64),
        info=info,
    )


def load_dataset(
    name_or_path: str,
    data_dir: str | Path | None = None,
    fmt: str | None = None,
    rating_threshold: float | None = None,
    min_user_count: int | None = None,
    min_item_count: int | None = None,
    iterative: bool = False,
) -> SequenceData:
    """Load a registered dataset (or any file) with its standard filters unless overridden."""
    spec, path = resolve(name_or_path, data_dir)
    frame = read_interactions(path, fmt or spec.fmt)
    data = build_sequences(
        frame,
        spec.name,
        rating_threshold=spec.rating_threshold if rating_threshold is None else rating_threshold,
        min_user_count=spec.min_user_count if min_user_count is None else min_user_count,
        min_item_count=spec.min_item_count if min_item_count is None else min_item_count,
        iterative=iterative,
    )
    data.info["source"] = str(path)
    return data
