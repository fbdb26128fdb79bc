"""Runs cached by their config: a run's directory name holds a hash of its full config, so an interrupted
experiment resumes where it stopped (finished runs are read back, a half-trained one resumes from its
trainer state) and can be spread over several sittings."""

from __future__ import annotations

import copy
import csv
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dynrec.checkpoint import CONFIG, IDMAP, STATE, WEIGHTS, atomic_write, wait_for_run, write_json
from dynrec.config import RunConfig, load_config
from dynrec.experiments.cache import payload_key
from dynrec.train import RESULT, log, train

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository: configs/ lives here

# The DUET/CKI papers' training setting (DESIGN section 3): the last 10 items, BCE with 4 sampled negatives,
# embedding size 32, models selected on the sampled protocol. Patience 20 within 300 epochs: with the earlier 5
# within 100, validation noise stopped runs that were still climbing, and on Douban (64-94 optimiser steps an
# epoch) some runs stopped on a validation plateau (docs/results/discussion.md).
PAPER_SETTING = [
    "model.hidden_size=32", "model.max_len=10", "model.head_hidden=[32]", "model.num_heads=1",
    "train.mode=window", "train.loss=bce", "train.num_negatives=4", "train.batch_size=1024", "train.lr=0.001",
    "train.epochs=300", "train.patience=20", "train.select_protocol=sampled", "model.generator_window=10",
    "train.loss_scale=batch",  # one target per window sample: pinned so the grid does not follow the yaml files
    "train.cover=last",  # pinned likewise (it only matters in sequence mode; "last" keeps the runs' cache keys)
]

# Budgets (train.patience, train.epochs) the paper setting had before. A run under a smaller budget is the
# first part of the same run under a larger one (early stopping does not steer training, and a resume is
# bit-exact), so run_cached goes on from its trainer state instead of training again from epoch 0.
EARLIER_BUDGETS = ((5, 100),)


def canonical_path(path: str) -> str:
    """One spelling of a path: relative to the repository when inside it, else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def config_key(cfg: RunConfig) -> str:
    """A short stable hash of everything that defines a run except where it is written (a run it starts
    from counts by its canonical path, so a relative and an absolute --root give the same key)."""
    values = cfg.to_dict()
    values.pop("out_dir")
    values["train"].pop("threads")
    values["train"].pop("device")
    added_later = (("train", "cover", "last"), ("train", "init_seed", None), ("train", "select_start", False),
                   ("model", "generator_dropout", 0.0), ("train", "lr_decays", 0), ("train", "lr_decay_factor", 0.1))
    for section, key, default in added_later:  # at their defaults, runs made before they existed keep their keys
        if values[section][key] == default:
            values[section].pop(key)
    if values["train"].get("init_from"):
        values["train"]["init_from"] = canonical_path(values["train"]["init_from"])
    return payload_key(values)


def experiment_config(dataset: str, backbone: str, overrides: list[str]) -> RunConfig:
    """The dataset x backbone config from configs/, with the experiment's overrides applied."""
    return load_config(ROOT / "configs" / dataset / f"{backbone}.yaml", overrides)


def run_directory(cfg: RunConfig, root: Path, tag: str) -> Path:
    """Where run_cached keeps this run: known before it trains, so another run can name it (train.init_from)."""
    return root / f"{Path(cfg.data.dataset).name}-{cfg.model.name}-{tag}-s{cfg.train.seed}-{config_key(cfg)}"


def run_cached(cfg: RunConfig, root: Path, tag: str, progress: bool = False, cached_only: bool = False) -> dict:
    """Train the run unless its result exists (waiting first while another process trains it); `tag` only makes
    the directory name readable. With `cached_only` (or $DYNREC_CACHED_ONLY) a missing run gives {} instead of
    training. Sets cfg.out_dir."""
    cfg.out_dir = str(run_directory(cfg, root, tag))
    result_file = Path(cfg.out_dir) / RESULT
    if cached_only or os.environ.get("DYNREC_CACHED_ONLY"):  # report what exists without training more
        return json.loads(result_file.read_text()) if result_file.is_file() else {}
    wait_for_run(Path(cfg.out_dir))  # another worker may be training this very run (e.g. a shared model A)
    if result_file.is_file():
        return json.loads(result_file.read_text())
    earlier = earlier_budget_run(cfg, root, tag)
    if earlier is not None and not (Path(cfg.out_dir) / STATE).exists():
        continue_from(earlier, cfg)
    return train(cfg, progress=progress)


def earlier_budget_run(cfg: RunConfig, root: Path, tag: str) -> Path | None:
    """This run's directory under an earlier, smaller budget (EARLIER_BUDGETS), when it has a trainer state."""
    t = cfg.train
    for patience, epochs in EARLIER_BUDGETS:
        if patience > t.patience or epochs > t.epochs or (patience, epochs) == (t.patience, t.epochs):
            continue
        earlier = copy.deepcopy(cfg)
        earlier.train.patience, earlier.train.epochs = patience, epochs
        directory = run_directory(earlier, root, tag)
        if all((directory / name).is_file() for name in (STATE, WEIGHTS, CONFIG, IDMAP)):
            return directory
    return None


def continue_from(earlier: Path, cfg: RunConfig) -> None:
    """Seed cfg's run directory with an earlier budget's selected weights and trainer state, so that train()
    resumes where that run stopped; config.json is rewritten with cfg. The state is written last: train()
    resumes only once it is there."""
    run_dir = Path(cfg.out_dir)
    for name in (WEIGHTS, IDMAP):
        atomic_write(run_dir / name, lambda tmp, name=name: shutil.copyfile(earlier / name, tmp))
    write_json(run_dir / CONFIG, {**json.loads((earlier / CONFIG).read_text()), "config": cfg.to_dict()})
    atomic_write(run_dir / STATE, lambda tmp: shutil.copyfile(earlier / STATE, tmp))
    log(f"continuing {earlier} (an earlier, smaller budget) in {run_dir}")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows atomically, columns in first-seen order after an existing file's header, so that a row whose
    keys come in another order does not reorder (and rewrite) every line of a committed file."""
    columns: list[str] = []
    if path.is_file():
        with path.open(newline="") as f:
            columns = [key for key in next(csv.reader(f), []) if any(key in row for row in rows)]
    for row in rows:
        columns += [key for key in row if key not in columns]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


OUTPUTS_LOCK = ".dynrec-outputs.lock"


@contextmanager
def outputs_lock(out_dir: Path) -> Iterator[None]:
    """Hold out_dir's committed outputs while one process reads, merges and writes them: workers that share
    an out_dir take turns, so none writes over rows another has just merged. Released on exit, killed or not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / OUTPUTS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks until the other worker is done
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV written by write_csv, empty cells left out; [] when the file does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{key: value for key, value in row.items() if value != ""} for row in csv.DictReader(f)]


def committed_builds(path: Path, unit: tuple[str, ...]) -> dict[tuple[str, ...], set[str]]:
    """The code that trained the committed rows of `path` (their `trained_with` column), per unit: the columns
    in `unit` that name one run or one pair of runs. Rows that predate that column are left out."""
    builds: dict[tuple[str, ...], set[str]] = {}
    for row in read_csv(path):
        if row.get("trained_with", "unrecorded") != "unrecorded":
            builds.setdefault(tuple(str(row[k]) for k in unit), set()).add(row["trained_with"])
    return builds


def keeps_committed(path: Path, builds: dict[tuple[str, ...], set[str]], unit: tuple, build: str,
                    replace: bool) -> bool:
    """Whether the committed rows of `unit` stay instead of this call's: they were trained by other code than
    the runs this call trained or read back, which may be a retrain or another sitting's run left in the run
    root, and either would otherwise replace them unseen. `replace` writes this call's rows; both are logged.
    Runs that predate the record (`build` 'unrecorded') are not compared."""
    unit = tuple(str(v) for v in unit)
    others = builds.get(unit, set()) - {build}
    if not others or build == "unrecorded":
        return False
    done = "replaced" if replace else "kept"
    hint = "" if replace else "; --replace-rows writes this call's"
    log(f"{path.name}: {done} the committed rows of {unit}, trained with {' '.join(sorted(others))}: this call's "
        f"runs were trained with {build}{hint}")
    return not replace


def _pooled(row: dict) -> frozenset[str] | None:
    """The seeds a paired-test row pooled; None for rows written before the `pooled_seeds` column."""
    return frozenset(str(row["pooled_seeds"]).split()) if "pooled_seeds" in row else None


def _supersedes(new: dict, old: dict) -> bool:
    """Whether a test row makes an older one of the same key redundant: it pooled a superset of its seeds
    (where either seed set is unrecorded, by the number of seeds alone)."""
    if _pooled(old) is None or _pooled(new) is None:
        return int(old["seeds"]) <= int(new["seeds"])
    return _pooled(old) <= _pooled(new)


def merge_rows(path: Path, rows: list[dict], key: tuple[str, ...], keep_pooled: bool = False) -> list[dict]:
    """This call's rows, merged into the rows already in `path`: a row with the same `key` is replaced, the
    others are kept, so results of an earlier sitting survive a call that covers only some cells (run caches
    need not outlive a sitting; the committed CSVs do). With `keep_pooled` (rows of paired tests, which carry
    `seeds` and `pooled_seeds`), a row replaces only those it pooled a superset of seeds for: a committed row
    over more seeds stays in its place, and one over other seeds (whose runs are gone) stays beside it."""
    merged = read_csv(path)
    for row in rows:
        index = tuple(str(row[k]) for k in key)
        same = [i for i, old in enumerate(merged) if tuple(str(old[k]) for k in key) == index]
        if keep_pooled:
            covered = [i for i in same if _supersedes(row, merged[i])]
            kept = [merged[i] for i in same if i not in covered]
            wider = [old for old in kept if _supersedes(old, row)]
            if wider:
                log(f"{path.name}: kept the committed row {index}, pooled over seeds "
                    f"{wider[0].get('pooled_seeds', 'unrecorded')} (this call read back seeds {row['pooled_seeds']})")
                continue
            for old in kept:
                missing = " ".join(sorted(_pooled(old) - _pooled(row), key=int))
                every = " ".join(sorted(_pooled(old) | _pooled(row), key=int))
                log(f"{path.name}: kept the committed row {index}, pooled over seeds {old['pooled_seeds']}, beside "
                    f"this call's over seeds {row['pooled_seeds']}; seeds {missing} were not read back (not asked "
                    f"for, or neither run caches nor a per-user archive is here): --seeds {every} --cached-only "
                    f"pools them all where those exist")
            for i in covered:
                was = merged[i].get("pooled_seeds", "unrecorded")
                if str(was) != str(row["pooled_seeds"]):
                    log(f"{path.name}: replaced the committed row {index}, pooled over seeds {was}, by one over "
                        f"seeds {row['pooled_seeds']}")
            same = covered
        if not same:
            merged.append(row)
            continue
        merged[same[0]] = row
        merged = [old for i, old in enumerate(merged) if i not in same[1:]]
    return merged
