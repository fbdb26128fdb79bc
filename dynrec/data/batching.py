"""Tensors the models consume: left-padded history windows, training batches, negatives."""

from __future__ import annotations

import numpy as np
import torch

from dynrec.data.preprocess import SequenceData
from dynrec.errors import DataError


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """(R, length) rows items[max(start, end - length):end], left-padded with 0 (most recent item last)."""
    index = ends[:, None] - length + np.arange(length)[None, :]  # (R, length)
    valid = index >= starts[:, None]
    return np.where(valid, items[np.clip(index, 0, max(len(items) - 1, 0))], 0)


def history(data: SequenceData, split: str, length: int, users: np.ndarray | None = None) -> np.ndarray:
    """(U, length) the last `length` items a model sees when predicting the split's target."""
    users = np.arange(data.n_users) if users is None else users
    return windows(data.items, data.offsets[users], data.split_end(split)[users], length)


def sequence_training_rows(data: SequenceData, length: int, cover: str = "last") -> np.ndarray:
    """(R, length + 1) rows of training items: inputs [:, :-1], next-item targets [:, 1:]. cover "last": one
    row per user, its last length+1 items (the reference SASRec loop; older targets are never trained on);
    "all": consecutive windows overlapping by one item, so every training target is predicted exactly once."""
    if cover == "last":
        return history(data, "train", length + 1)
    if cover != "all":
        raise ValueError(f"cover: unknown value {cover!r} (expected last or all)")
    starts = data.offsets[:-1]
    ends = data.split_end("train")
    counts = np.maximum(-(-(ends - starts - 1) // length), 1)  # windows per user (at least one, as in "last")
    owner = np.repeat(np.arange(data.n_users), counts)
    back = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0 = the most recent window
    return windows(data.items, starts[owner], ends[owner] - back * length, length + 1)


def window_training_samples(data: SequenceData, window: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample per training interaction with at least one item before it: (S, window) history, (S,) target."""
    starts = data.offsets[:-1]
    train_end = data.split_end("train")
    counts = np.maximum(train_end - starts - 1, 0)  # targets at positions start+1 .. train_end-1
    owner = np.repeat(np.arange(data.n_users), counts)
    first = np.repeat(starts + 1, counts)
    position = first + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    hist = windows(data.items, starts[owner], position, window)
    return hist, data.items[position]


def uniform_negatives(
    n_items: int, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Item ids drawn uniformly from 1..n_items (training negatives; a rare hit on a positive is tolerated)."""
    return torch.randint(1, n_items + 1, shape, generator=generator).to(device)


def seen_mask_indices(data: SequenceData, split: str, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) of every item each user interacted with before the split's target (for exclusion)."""
    starts = data.offsets[users]
    ends = data.split_end(split)[users]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = data.items[np.repeat(starts, counts) + within]
    return rows, cols


def sampled_candidates(data: SequenceData, split: str, n_negatives: int = 99, seed: int = 2025) -> np.ndarray:
    """(U, 1 + n_negatives): the target, then items drawn uniformly without replacement from items the
    user never interacted with. Depends only on the data and the seed, so every model gets the same."""
    owners = np.repeat(np.arange(data.n_users), data.lengths)
    pairs = np.unique(owners * (data.n_items + 1) + data.items)
    distinct = np.bincount(pairs // (data.n_items + 1), minlength=data.n_users)  # distinct items per user
    worst = int(np.argmax(distinct))
    if data.n_items - distinct[worst] < n_negatives:
        raise DataError(data.name, f"user {data.user_ids[worst]} interacted with {distinct[worst]} of {data.n_items} "
                        f"items, leaving fewer than the {n_negatives} negatives the sampled protocol needs")
    generator = torch.Generator().manual_seed(seed + (0 if split == "valid" else 1))
    targets = data.targets(split)
    out = np.empty((data.n_users, 1 + n_negatives), dtype=np.int64)
    out[:, 0] = targets
    chunk = max(1, 2_000_000 // (data.n_items + 1))
    for lo in range(0, data.n_users, chunk):
        users = np.arange(lo, min(lo + chunk, data.n_users))
        keys = torch.rand(len(users), data.n_items + 1, generator=generator)
        keys[:, 0] = 2.0  # padding is never a candidate
        counts = data.lengths[users]
        rows = np.repeat(np.arange(len(users)), counts)
        keys[torch.from_numpy(rows), torch.from_numpy(data.items[data.offsets[lo] : data.offsets[users[-1] + 1]])] = 2.0
        out[users, 1:] = torch.topk(keys, n_negatives, dim=1, largest=False).indices.numpy()
    return out
