"""Per-user test outcomes committed next to a table's CSV, so its paired tests can pool seeds whose run caches
are gone (run caches need not outlive a sitting; docs/results does).

A user's outcome is the target's 0-based rank clipped at CUTOFF (CUTOFF itself = a miss): one byte per user
before compression. Every metric at k <= CUTOFF is rebuilt from it bit for bit by `rank_metrics`, the
function that computed it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynrec.checkpoint import write_arrays
from dynrec.evaluate import rank_metrics

CUTOFF = 10  # ranks 0..9 are kept; the tested metrics (ndcg@10, hr@10) need no more


def archive_path(out_dir: Path, table: str, dataset: str, backbone: str, seed: int) -> Path:
    """Where one cell's outcomes live: <out_dir>/per_user/<table>/<dataset>-<backbone>-s<seed>.npz."""
    return out_dir / "per_user" / table / f"{Path(dataset).name}-{backbone}-s{seed}.npz"


def _rebuildable(metric: str) -> bool:
    name, _, k = metric.partition("@")
    return name in ("ndcg", "hr", "mrr") and k.isdigit() and int(k) <= CUTOFF


def _cutoff_of(metric: str) -> int:
    if not _rebuildable(metric):
        raise ValueError(f"per-user outcomes: cannot rebuild {metric!r} (expected ndcg, hr or mrr at k <= {CUTOFF})")
    return int(metric.partition("@")[2])


def metric_of(codes: np.ndarray, metric: str) -> np.ndarray:
    """One per-user metric (float64, as `evaluate` returns it) from clipped ranks."""
    ranks = torch.from_numpy(codes.astype(np.int64))
    values = rank_metrics(ranks, [_cutoff_of(metric)], torch.full_like(ranks, CUTOFF + 2))  # count: uauc only
    return values[metric].numpy()


def codes_of(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Clipped ranks from a method's per-user arrays (`ndcg@CUTOFF` at least); raises if they would not
    rebuild every array given that `metric_of` can rebuild, so nothing is archived that reads back different."""
    if f"ndcg@{CUTOFF}" not in arrays:
        raise ValueError(f"per-user outcomes need ndcg@{CUTOFF}; got {sorted(arrays)}")
    ndcg = np.asarray(arrays[f"ndcg@{CUTOFF}"], dtype=np.float64)
    hit = ndcg > 0
    ranks = np.full(ndcg.shape, CUTOFF, dtype=np.int64)
    ranks[hit] = np.rint(2.0 ** (1.0 / ndcg[hit]) - 2.0)
    codes = np.clip(ranks, 0, CUTOFF).astype(np.uint8)
    for metric in filter(_rebuildable, arrays):
        if not np.array_equal(metric_of(codes, metric), arrays[metric]):
            raise ValueError(f"per-user outcomes: {metric} does not read back from clipped ranks")
    return codes


def load(path: Path) -> dict[str, np.ndarray]:
    """A cell's archive: "<method>/<protocol>" -> clipped ranks; {} when there is none."""
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def save(path: Path, outcomes: dict[str, np.ndarray]) -> bool:
    """Merge `outcomes` ("<method>/<protocol>" -> clipped ranks) into the cell's archive, atomically; the file
    is rewritten only when its content changes (zip members carry a time stamp). True when it was written."""
    old = load(path)
    merged = {**old, **outcomes}
    if old.keys() == merged.keys() and all(np.array_equal(old[k], merged[k]) for k in merged):
        return False
    write_arrays(path, dict(sorted(merged.items())))
    return True
