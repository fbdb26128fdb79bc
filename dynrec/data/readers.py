"""Readers for the three interaction formats dynrec accepts, with errors naming file and line.

Every reader returns a DataFrame with columns user, item (raw ids as str), rating and
timestamp (float, NaN when the format has none) and order (the row's position in the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dynrec.errors import DataError

FORMATS = ("atomic", "sequence", "ratings")
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
_USER_FIELDS = ("user_id",)
_ITEM_FIELDS = ("item_id",)


def detect_format(path: Path) -> str:
    """Guess the format from the file name: .inter is RecBole atomic, .dat/.tsv ratings, .txt sequences."""
    name = path.name.lower()
    if name.endswith(".inter"):
        return "atomic"
    if name.endswith((".dat", ".tsv")):
        return "ratings"
    if name.endswith(".txt"):
        return "sequence"
    raise DataError(path, f"unknown format: expected a file ending in .inter, .dat, .tsv or .txt, or one of {FORMATS}")


def read_interactions(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read one interaction file in the given (or detected) format."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataError(path, f"unknown format {fmt!r}: expected one of {FORMATS}")
    fmt = fmt or detect_format(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with path.open("r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(path, "file is empty: expected at least one interaction")
    reader = {"atomic": _read_atomic, "sequence": _read_sequences, "ratings": _read_ratings}[fmt]
    frame = reader(path, lines)
    if frame.empty:
        raise DataError(path, "no interactions found")
    frame["order"] = np.arange(len(frame), dtype=np.int64)
    return frame


def _check_int(path: Path, line_no: int, value: str, field: str) -> str:
    if not value.lstrip("-").isdigit():
        raise DataError(path, f"{field} {value!r} is not an integer id", line_no)
    return value


def _read_sequences(path: Path, lines: list[str]) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(path, "expected 'user item item ...' (a user id and at least one item id)", line_no)
        user = _check_int(path, line_no, fields[0], "user id")
        for value in fields[1:]:
            items.append(_check_int(path, line_no, value, "item id"))
        users.extend([user] * (len(fields) - 1))
    return pd.DataFrame({"user": users, "item": items, "rating": np.nan, "timestamp": np.nan})


def _read_ratings(path: Path, lines: list[str]) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise DataError(path, f"expected 3 tab-separated columns user, item, rating; found {len(fields)}", line_no)
        users.append(_check_int(path, line_no, fields[0].strip(), "user id"))
        items.append(_check_int(path, line_no, fields[1].strip(), "item id"))
        try:
            ratings.append(float(fields[2]))
        except ValueError:
            raise DataError(path, f"rating {fields[2]!r} is not a number", line_no) from None
    return pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": np.nan})


def _parse_atomic_header(path: Path, header: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, field in enumerate(header.split("\t")):
        name, sep, kind = field.strip().partition(":")
        if not sep or not name or kind not in ATOMIC_TYPES:
            raise DataError(
                path, f"malformed header field {field!r}: expected 'name:type' with type in {ATOMIC_TYPES}", 1
            )
        columns[name] = index
    for required in ("user_id", "item_id"):
        if required not in columns:
            raise DataError(path, f"missing column {required!r} in header (found {list(columns)})", 1)
    return columns


def _read_atomic(path: Path, lines: list[str]) -> pd.DataFrame:
    columns = _parse_atomic_header(path, lines[0])
    wanted = {"user": columns["user_id"], "item": columns["item_id"]}
    for optional in ("rating", "timestamp"):
        if optional in columns:
            wanted[optional] = columns[optional]
    width = len(lines[0].split("\t"))
    values: dict[str, list[str]] = {key: [] for key in wanted}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise DataError(path, f"expected {width} tab-separated fields (header), found {len(fields)}", line_no)
        for key, index in wanted.items():
            values[key].append(fields[index])
    frame = pd.DataFrame({"user": values["user"], "item": values["item"]})
    for optional in ("rating", "timestamp"):
        if optional not in values:
            frame[optional] = np.nan
            continue
        numbers = pd.to_numeric(pd.Series(values[optional]), errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy())
        if len(bad):
            line_no = _data_line_number(lines, int(bad[0]))
            raise DataError(path, f"{optional} {values[optional][bad[0]]!r} is not a number", line_no)
        frame[optional] = numbers.to_numpy(dtype=np.float64)
    return frame


def _data_line_number(lines: list[str], row: int) -> int:
    """The 1-based file line of the row-th non-empty data line (after the header)."""
    seen = -1
    for line_no, line in enumerate(lines[1:], start=2):
        if line.strip():
            seen += 1
            if seen == row:
                return line_no
    return len(lines)
