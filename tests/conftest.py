"""Shared fixtures: tiny synthetic datasets with a learnable pattern, and tiny model configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynrec.config import ModelConfig
from dynrec.data.preprocess import SequenceData, build_sequences
from dynrec.data.readers import read_interactions


def write_cyclic_sequences(path: Path, n_users: int = 60, n_items: int = 30, seed: int = 0) -> Path:
    """Each user walks items i, i+1, i+2, ... (mod n_items) from a random start: next item is predictable."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, n_users + 1):
        start, length = rng.integers(1, n_items + 1), rng.integers(6, 16)
        items = [(start + step - 1) % n_items + 1 for step in range(length)]
        lines.append(" ".join(map(str, [user, *items])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cyclic_file(tmp_path: Path) -> Path:
    return write_cyclic_sequences(tmp_path / "cyclic.txt")


@pytest.fixture
def cyclic_data(cyclic_file: Path) -> SequenceData:
    return build_sequences(read_interactions(cyclic_file), "cyclic")


def tiny_model_config(name: str, **overrides) -> ModelConfig:
    values = dict(name=name, hidden_size=16, num_layers=2, num_heads=2, dropout=0.0, max_len=12,
                  head_hidden=[16], attention_hidden=[8, 4])
    values.update(overrides)
    return ModelConfig(**values)
