"""Paired tests: no difference gives p = 1, a consistent shift a tiny p, the t-test a known value, and the
bootstrap is seeded, symmetric and close to the t-test where the normal approximation holds."""

from __future__ import annotations

import numpy as np
import pytest

from dynrec.experiments.stats import RESAMPLES, paired_bootstrap, paired_t_test


def test_identical_arrays_show_no_difference():
    scores = np.random.default_rng(0).random(500)
    differences = scores - scores
    assert paired_bootstrap(differences) == 1.0
    assert paired_t_test(differences) == 1.0


def test_a_large_consistent_shift_is_significant():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    differences = (base + 0.2 + 0.05 * rng.standard_normal(300)) - base
    assert paired_bootstrap(differences) < 0.01
    assert paired_bootstrap(differences) >= 2 / (RESAMPLES + 1)  # the smallest p the bootstrap can give
    assert paired_t_test(differences) < 0.01


def test_t_test_matches_the_closed_form_for_four_degrees_of_freedom():
    differences = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426, df = 4
    t = 3 / (np.sqrt(2.5) / np.sqrt(5))
    x = t / np.sqrt(t * t + 4)
    assert paired_t_test(differences) == pytest.approx(1 - x * (3 - x * x) / 2, rel=1e-9)  # = 0.013236
    assert paired_t_test(differences) == pytest.approx(0.0132356, abs=1e-7)


def test_bootstrap_is_seeded_symmetric_and_close_to_the_t_test():
    differences = np.random.default_rng(2).normal(0.06, 1.0, 2000)
    p = paired_bootstrap(differences)
    assert paired_bootstrap(differences) == p
    assert paired_bootstrap(-differences) == p  # same resamples: the two tails swap
    assert abs(p - paired_t_test(differences)) < 0.02


def test_constant_nonzero_differences_are_certain():
    assert paired_t_test(np.full(10, 0.1)) == 0.0


@pytest.mark.parametrize("bad", [np.array([]), np.zeros((2, 3))])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="per-user differences"):
        paired_bootstrap(bad)
    with pytest.raises(ValueError, match="per-user differences"):
        paired_t_test(bad)
