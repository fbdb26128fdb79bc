"""Readers: each format parses to the expected rows; bad input raises a DataError naming file, line and expectation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dynrec.data.readers import detect_format, read_interactions
from dynrec.errors import DataError

ATOMIC_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def rows(frame) -> list[tuple]:
    """(user, item, rating, timestamp, order) per row, with NaN as None so rows compare with ==."""
    out = []
    for user, item, rating, timestamp, order in frame[["user", "item", "rating", "timestamp", "order"]].itertuples(
        index=False
    ):
        out.append(
            (
                user,
                item,
                None if math.isnan(rating) else rating,
                None if math.isnan(timestamp) else timestamp,
                int(order),
            )
        )
    return out


def raised(path: Path, fmt: str | None = None) -> DataError:
    with pytest.raises(DataError) as error:
        read_interactions(path, fmt)
    return error.value


# --- correct files ---


def test_atomic_inter_parses_rows(tmp_path):
    path = write(
        tmp_path / "toy.inter",
        f"{ATOMIC_HEADER}\n196\t242\t3\t881250949\n186\t302\t3.5\t891717742\n\n22\t377\t1\t878887116\n",
    )
    frame = read_interactions(path)
    assert list(frame.columns) == ["user", "item", "rating", "timestamp", "order"]
    assert rows(frame) == [
        ("196", "242", 3.0, 881250949.0, 0),
        ("186", "302", 3.5, 891717742.0, 1),
        ("22", "377", 1.0, 878887116.0, 2),  # the blank line is skipped
    ]


def test_atomic_columns_in_any_order_extra_columns_ignored_missing_optional_is_nan(tmp_path):
    path = write(
        tmp_path / "toy.inter",
        "item_id:token\tlabel:float\tuser_id:token\tgenres:token_seq\nA7\t1\tu1\tx y\nB9\t0\tu2\tz\n",
    )
    frame = read_interactions(path)
    # atomic ids are RecBole tokens: any string is a valid id, kept verbatim
    assert rows(frame) == [("u1", "A7", None, None, 0), ("u2", "B9", None, None, 1)]


def test_sequence_txt_parses_rows(tmp_path):
    path = write(tmp_path / "seqs.txt", "1 10 11 12\n\n2 7\n3  5   6\n")
    frame = read_interactions(path)
    assert rows(frame) == [
        ("1", "10", None, None, 0),
        ("1", "11", None, None, 1),
        ("1", "12", None, None, 2),
        ("2", "7", None, None, 3),
        ("3", "5", None, None, 4),
        ("3", "6", None, None, 5),
    ]


@pytest.mark.parametrize("suffix", [".tsv", ".dat"])
def test_ratings_tsv_and_dat_parse_rows(tmp_path, suffix):
    path = write(tmp_path / f"ratings{suffix}", "1\t100\t4\n1\t101\t2.5\n\n2\t100\t5\n")
    frame = read_interactions(path)
    assert rows(frame) == [
        ("1", "100", 4.0, None, 0),
        ("1", "101", 2.5, None, 1),
        ("2", "100", 5.0, None, 2),
    ]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.inter", "atomic"),
        ("A.TXT", "sequence"),
        ("r.dat", "ratings"),
        ("r.tsv", "ratings"),
        ("x.seq.txt", "sequence"),
    ],
)
def test_detect_format_from_extension(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_explicit_format_overrides_extension(tmp_path):
    path = write(tmp_path / "data.csv", "1 5 6\n")
    assert rows(read_interactions(path, "sequence")) == [("1", "5", None, None, 0), ("1", "6", None, None, 1)]


# --- bad input: one test per case ---


def test_missing_file(tmp_path):
    path = tmp_path / "absent.inter"
    error = raised(path)
    assert str(error) == f"{path}: file not found"
    assert error.path == str(path) and error.line is None


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.txt", "\n   \n")
    error = raised(path)
    assert str(error) == f"{path}: file is empty: expected at least one interaction"
    assert error.line is None


def test_atomic_header_only_has_no_interactions(tmp_path):
    path = write(tmp_path / "header.inter", ATOMIC_HEADER + "\n")
    assert str(raised(path)) == f"{path}: no interactions found"


def test_missing_column_item_id(tmp_path):
    path = write(tmp_path / "noitem.inter", "user_id:token\trating:float\n1\t3\n")
    error = raised(path)
    assert str(error) == f"{path}, line 1: missing column 'item_id' in header (found ['user_id', 'rating'])"
    assert error.line == 1


def test_non_integer_item_id_in_sequence_file(tmp_path):
    path = write(tmp_path / "seqs.txt", "1 10 11\n2 7 x8 9\n")
    error = raised(path)
    assert str(error) == f"{path}, line 2: item id 'x8' is not an integer id"
    assert error.line == 2


def test_non_integer_user_id_in_sequence_file(tmp_path):
    path = write(tmp_path / "seqs.txt", "1 10 11\n\nu3 7 8\n")
    assert str(raised(path)) == f"{path}, line 3: user id 'u3' is not an integer id"


def test_non_integer_user_id_in_ratings_file(tmp_path):
    path = write(tmp_path / "ratings.dat", "1\t100\t4\nalice\t101\t3\n")
    error = raised(path)
    assert str(error) == f"{path}, line 2: user id 'alice' is not an integer id"
    assert error.line == 2


def test_non_integer_item_id_in_ratings_file(tmp_path):
    path = write(tmp_path / "ratings.tsv", "1\t100\t4\n1\t101\t3\n2\t1.5\t3\n")
    assert str(raised(path)) == f"{path}, line 3: item id '1.5' is not an integer id"


def test_ratings_header_line_is_rejected_as_non_integer_id(tmp_path):
    path = write(tmp_path / "ratings.tsv", "user\titem\trating\n1\t100\t4\n")
    assert str(raised(path)) == f"{path}, line 1: user id 'user' is not an integer id"


def test_unknown_extension(tmp_path):
    path = write(tmp_path / "ratings.csv", "1,2,3\n")
    error = raised(path)
    assert str(error) == (
        f"{path}: unknown format: expected a file ending in .inter, .dat, .tsv or .txt, "
        "or one of ('atomic', 'sequence', 'ratings')"
    )


def test_unknown_explicit_format(tmp_path):
    path = write(tmp_path / "ratings.tsv", "1\t2\t3\n")
    expected = f"{path}: unknown format 'csv': expected one of ('atomic', 'sequence', 'ratings')"
    assert str(raised(path, "csv")) == expected


def test_malformed_header_field_without_type(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id:token\titem_id\n1\t2\n")
    error = raised(path)
    assert str(error) == (
        f"{path}, line 1: malformed header field 'item_id': expected 'name:type' with type in "
        "('token', 'token_seq', 'float', 'float_seq')"
    )
    assert error.line == 1


def test_malformed_header_unknown_type(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id:int\titem_id:token\n1\t2\n")
    assert str(raised(path)) == (
        f"{path}, line 1: malformed header field 'user_id:int': expected 'name:type' with type in "
        "('token', 'token_seq', 'float', 'float_seq')"
    )


def test_atomic_row_with_wrong_field_count(tmp_path):
    path = write(tmp_path / "bad.inter", f"{ATOMIC_HEADER}\n1\t2\t3\t4\n1\t2\t3\n")
    assert str(raised(path)) == f"{path}, line 3: expected 4 tab-separated fields (header), found 3"


def test_atomic_non_numeric_timestamp_names_file_line_after_blank_lines(tmp_path):
    path = write(tmp_path / "bad.inter", f"{ATOMIC_HEADER}\n1\t2\t3\t10\n\n1\t3\t4\tyesterday\n")
    assert str(raised(path)) == f"{path}, line 4: timestamp 'yesterday' is not a number"


def test_ratings_too_few_columns(tmp_path):
    path = write(tmp_path / "ratings.dat", "1\t100\t4\n1::101::3\n")
    assert str(raised(path)) == f"{path}, line 2: expected 3 tab-separated columns user, item, rating; found 1"


def test_ratings_non_numeric_rating(tmp_path):
    path = write(tmp_path / "ratings.dat", "1\t100\tfive\n")
    assert str(raised(path)) == f"{path}, line 1: rating 'five' is not a number"


def test_sequence_line_without_items(tmp_path):
    path = write(tmp_path / "seqs.txt", "1 2 3\n4\n")
    assert str(raised(path)) == f"{path}, line 2: expected 'user item item ...' (a user id and at least one item id)"
