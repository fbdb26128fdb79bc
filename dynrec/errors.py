"""Errors that name what was wrong and where, so a user can fix their input."""

from __future__ import annotations

from pathlib import Path


class DynrecError(Exception):
    """Base class for every error dynrec raises on bad input."""


class DataError(DynrecError):
    """A data file is missing, empty or malformed."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class ConfigError(DynrecError):
    """A configuration key or value is unknown or has the wrong type."""


class CheckpointError(DynrecError):
    """A checkpoint or bundle is missing, incomplete or does not match its model."""


class FusionError(DynrecError):
    """Models cannot be fused: tensors differ in name or shape, hold NaN/inf, or the method or options are unknown."""
