"""Experiments: the papers' tables as runnable, cached grids of runs."""
