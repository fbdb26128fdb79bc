"""Known datasets: where each file lives and how the field preprocesses it."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from dynrec.errors import DataError

DATA_ENV = "DYNREC_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its file (relative to the data directory), format and standard filters."""

    name: str
    relative_path: str  # file under the data directory (or under recbole's dataset_example for ml-100k)
    fmt: str  # one of readers.FORMATS
    min_item_count: int = 0  # drop items with fewer interactions (one pass unless iterative k-core)
    min_user_count: int = 0  # drop users with fewer interactions
    rating_threshold: float | None = None  # keep interactions with rating >= this; None keeps all
    note: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("ml-100k", "ml-100k/ml-100k.inter", "atomic", note="shipped inside the recbole wheel"),
        DatasetSpec(
            "ml-1m", "ml-1m/ml-1m.seq.txt", "sequence", min_item_count=5,
            note="SASRec preprocessing: items with >= 5 interactions (6,040 users, 3,416 items, 999,611 rows)",
        ),
        DatasetSpec("beauty", "beauty/Beauty.txt", "sequence", note="Amazon Beauty 5-core (S3-Rec)"),
        DatasetSpec(
            "douban-book", "douban-book/ratings.dat", "ratings",
            note="no timestamps: sequence order is the file order within a user",
        ),
        DatasetSpec(
            "douban-music", "douban-music/ratings.dat", "ratings",
            note="no timestamps: sequence order is the file order within a user",
        ),
    )
}


def recbole_example_dir() -> Path:
    """recbole's dataset_example folder, found without importing recbole (its import is slow and noisy)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("ml-100k", "recbole is not installed; it ships ml-100k (pip install recbole==1.2.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example"


def default_data_dir() -> Path | None:
    """DYNREC_DATA if set, else ../shared/data beside the working directory (the development layout)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    candidate = Path.cwd().parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def resolve(name_or_path: str, data_dir: str | Path | None = None) -> tuple[DatasetSpec, Path]:
    """Map a registered name or a file path to its spec and the file to read."""
    if name_or_path in DATASETS:
        spec = DATASETS[name_or_path]
        if spec.name == "ml-100k":
            return spec, recbole_example_dir() / spec.relative_path
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if root is None:
            raise DataError(
                spec.relative_path,
                f"no data directory: pass --data-dir or set {DATA_ENV} (data/README.md: how to get {spec.name})",
            )
        path = root / spec.relative_path
        if not path.is_file():
            raise DataError(path, f"file not found for dataset {spec.name!r}; see data/README.md for how to obtain it")
        return spec, path
    path = Path(name_or_path)
    if not path.exists():
        raise DataError(path, f"not a registered dataset ({', '.join(DATASETS)}) and no such file")
    from dynrec.data.readers import detect_format

    stem = path.name.split(".")[0]
    return DatasetSpec(stem, str(path), detect_format(path)), path
