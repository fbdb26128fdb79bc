"""Evaluation results cached on disk by a hash of what defines them: a JSON record plus, optionally, the
per-user metric arrays (.npz) that the paired tests read. The arrays are written first and the JSON last,
so a JSON on disk means the entry is complete; an interrupted write leaves nothing half-written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dynrec.checkpoint import write_arrays, write_json


def payload_key(payload: dict) -> str:
    """A short stable hash of a JSON-ready payload."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _file(stem: Path, suffix: str) -> Path:
    return stem.parent / f"{stem.name}{suffix}"  # not with_suffix: a stem may hold a dot


def read_record(stem: Path) -> dict | None:
    """The cached record at `stem`.json, or None when it is not there (yet)."""
    path = _file(stem, ".json")
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(stem: Path, record: dict, arrays: dict[str, np.ndarray] | None = None) -> dict:
    """Store `arrays` as `stem`.npz (compressed), then `record` as `stem`.json, each atomically, and return
    the record now on disk. The first record written wins: when two processes compute the same entry (two
    tables sharing a pair), the second gets the first's record back, so both report the same one. The arrays
    are deterministic, so either process's copy is the same."""
    if arrays:
        write_arrays(_file(stem, ".npz"), arrays)
    if write_json(_file(stem, ".json"), record, replace=False):
        return record
    return read_record(stem)


def read_arrays(stem: Path, name: str) -> np.ndarray:
    """One per-user array stored next to the record at `stem` (the others are not read)."""
    with np.load(_file(stem, ".npz")) as arrays:
        return arrays[name]
