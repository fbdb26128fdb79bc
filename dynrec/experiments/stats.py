"""Paired significance tests on per-user metric differences: a seeded bootstrap over users and a t-test.

Both take d_u = (method - other) for each user u (already averaged over seeds when several seeds are
pooled, so a user counts once) and test whether the mean difference is zero, two-sided.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

RESAMPLES = 10_000
CHUNK_VALUES = 4_000_000  # resampled values drawn at once: bounds the memory of the vectorised bootstrap


def paired_bootstrap(differences: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided bootstrap p-value of mean(differences) = 0: users resampled with replacement, p = twice the
    smaller share of resampled means on either side of 0 (plus one, so p >= 2 / (resamples + 1)), at most 1."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"expected a non-empty 1-d array of per-user differences, got shape {d.shape}")
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_VALUES // len(d))
    below = above = 0
    for start in range(0, resamples, chunk):  # chunks of resamples, each one vectorised over users
        means = d[rng.integers(0, len(d), size=(min(chunk, resamples - start), len(d)), dtype=np.int32)].mean(1)
        below += int((means <= 0).sum())
        above += int((means >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))


def paired_t_test(differences: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test (a one-sample t-test of the differences against 0). Differences
    that are all equal give 1 when they are 0 and 0 otherwise (the t statistic is then undefined)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"expected at least 2 per-user differences, got shape {d.shape}")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)
