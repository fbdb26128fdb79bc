"""The CKI paper's Tables 1, 3 and 4 on real data, cached so that a reproduction resumes where it stopped.

For each dataset, backbone and seed: the two base runs (model A is the static twin of the static-vs-dynamic
grid, shared by every table; model B is another seed's static twin, or for Table 3 the dynamic model trained
on A's frozen backbone), then every method of the table: its options chosen on validation (the run config's
selection protocol and metric), then one evaluation on test under every protocol. Each evaluation is stored
with its per-user arrays, keyed by a hash of what defines it, so a rerun only computes what is missing and
the paired tests never re-evaluate; the tests read each user's clipped rank, committed per cell (per_user), so
they pool seeds across sittings whose run caches are gone.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dynrec.checkpoint import TEST_OUTCOMES, load_checkpoint, write_json
from dynrec.config import RunConfig
from dynrec.data.preprocess import SequenceData
from dynrec.errors import ConfigError
from dynrec.evaluate import PROTOCOLS, evaluate, public
from dynrec.experiments import per_user
from dynrec.experiments.cache import payload_key, read_arrays, read_record, write_record
from dynrec.experiments.dynamic import frozen_dynamic_config, twin_config
from dynrec.experiments.methods import METHODS, Method, Pair, check_frozen_on
from dynrec.experiments.runner import (
    committed_builds,
    config_key,
    keeps_committed,
    merge_rows,
    outputs_lock,
    run_cached,
    run_directory,
    write_csv,
)
from dynrec.experiments.stats import RESAMPLES, paired_bootstrap, paired_t_test
from dynrec.machine import machine_info, trained_with
from dynrec.train import RESULT, data_for, log

DATASETS = ("ml-1m", "beauty", "douban-book", "douban-music")
BACKBONES = ("din", "gru4rec", "sasrec")
SEEDS = (0, 1, 2)
QUICK_DATASETS, QUICK_SEEDS = ("ml-100k",), (0, 1)  # the smoke run's defaults
B_SEED_OFFSET = 100  # Tables 1 and 4: model B is the static run of seed s + 100, never another pair's model A
TESTED_METRICS = ("ndcg@10", "hr@10")
CELL_KEY = ("dataset", "backbone", "seed")  # one pair of base runs
ROW_KEY = (*CELL_KEY, "method", "protocol")  # one row of <table>.csv
TEST_KEY = ("dataset", "backbone", "protocol", "metric", "method", "versus")  # one row of <table>_tests.csv
FUSION_ROWS = ("magnitude", "ensemble", "average", "task-arithmetic", "ties", "dare", "cki", "cki-hard", "cki-learned")


@dataclass(frozen=True)
class Table:
    """A table: how its model B is trained, its methods, and the paired tests run on them."""

    title: str
    b_variant: str  # static (another seed's static twin) | static-shared-init (the same, from A's initial weights)
    # | dynamic-on-a (the dynamic model on A's frozen backbone)
    b_seed_offset: int
    methods: tuple[str, ...]
    singles: tuple[str, ...]  # the single models; "best-single" is the one with the higher test mean
    tests: tuple[tuple[str, str], ...]  # (method, comparator) pairs tested per dataset x backbone x protocol x metric


def _fusion_tests(single_b: str) -> tuple[tuple[str, str], ...]:
    return (("cki", "best-single"), ("cki", "model-a"), ("cki", single_b), ("cki", "average"), ("cki", "ensemble"),
            ("cki-hard", "best-single"), ("cki-hard", "average"), ("cki-learned", "best-single"),
            ("cki-learned", "average"))


TABLES = {
    "table1": Table("Table 1: static + static (model B: another seed)", "static", B_SEED_OFFSET,
                    ("model-a", "model-b", *FUSION_ROWS), ("model-a", "model-b"), _fusion_tests("model-b")),
    "table1-shared-init": Table("Table 1, shared start: static + static (model B: A's initial weights, another seed's "
                                "data order and dropout)", "static-shared-init", B_SEED_OFFSET,
                                ("model-a", "model-b", *FUSION_ROWS), ("model-a", "model-b"), _fusion_tests("model-b")),
    "table3": Table("Table 3: static + dynamic (model B(G): dynamic on A's frozen backbone)", "dynamic-on-a", 0,
                    ("model-a", "model-bg", *FUSION_ROWS), ("model-a", "model-bg"), _fusion_tests("model-bg")),
    "table4": Table("Table 4: CKI as a starting point, then one epoch of training", "static", B_SEED_OFFSET,
                    ("model-a", "cki", "cki+epoch", "model-a+epoch", "average+epoch"), ("model-a",),
                    (("cki+epoch", "cki"), ("cki+epoch", "model-a+epoch"), ("cki+epoch", "average+epoch"),
                     ("cki", "model-a"))),
}


@dataclass(frozen=True)
class Budget:
    """How much training a reproduction gets: the paper setting, or a quick smoke budget."""

    name: str  # paper | quick
    overrides: tuple[str, ...] = ()  # applied after the grid's own overrides
    config_dataset: str | None = None  # read configs/<this>/ (and set data.dataset) instead of the dataset's own


PAPER = Budget("paper")
QUICK = Budget("quick", ("train.epochs=2", "train.patience=1"), "ml-100k")  # smoke runs only: not results


@dataclass
class Context:
    """Settings shared by every cell of a reproduction, and the datasets loaded so far."""

    root: Path
    budget: Budget = PAPER
    protocols: tuple[str, ...] = PROTOCOLS
    threads: int = 0
    progress: bool = False
    cached_only: bool = False  # report what exists; train and evaluate nothing
    jobs: int = 1  # processes that train a pair's two base runs side by side (Tables 1 and 4)
    replace_rows: bool = False  # write cells whose committed rows other code trained (runner.keeps_committed)
    loaded: dict[str, SequenceData] = field(default_factory=dict)

    def data(self, cfg: RunConfig) -> SequenceData:
        if cfg.data.dataset not in self.loaded:
            self.loaded[cfg.data.dataset] = data_for(cfg)
        return self.loaded[cfg.data.dataset]


@dataclass
class Evaluated:
    """One method on one pair: its cached record and per-user array stem per protocol evaluated so far, and
    the seconds its selection on validation took."""

    records: dict[str, dict]
    stems: dict[str, Path]
    selection_seconds: float


def check_request(tables: list[str], protocols: list[str] | tuple[str, ...], methods: list[str] | None = None) -> None:
    """Raise ConfigError naming the first unknown table, protocol or method (or a method no table asked has)."""
    for name in tables:
        if name not in TABLES:
            raise ConfigError(f"reproduce: unknown table {name!r} (expected one of {', '.join(TABLES)} or all)")
    offered = [m for name in tables for m in TABLES[name].methods]
    for method in methods or []:
        if method not in offered:
            raise ConfigError(f"reproduce --methods: {method!r} is not a method of {', '.join(tables)} "
                              f"(expected one of {', '.join(dict.fromkeys(offered))})")
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"reproduce --protocols: unknown protocol {protocol!r} (expected {PROTOCOLS})")


def base_configs(table: Table, dataset: str, backbone: str, seed: int, ctx: Context) -> list[tuple[RunConfig, str]]:
    """(config, tag) of model A (the grid's static twin) and model B: another seed's static twin, or the dynamic
    model on A's frozen backbone (quick budget: ml-100k's configs on `dataset`)."""
    config_dataset = ctx.budget.config_dataset or dataset
    extra = ctx.budget.overrides
    if ctx.budget.config_dataset:
        extra = (*extra, f"data.dataset={dataset}")
    cfg_a, tag_a = twin_config(config_dataset, backbone, seed, "paper", "static", ctx.threads, extra)
    if table.b_variant == "dynamic-on-a":
        return [(cfg_a, tag_a), frozen_dynamic_config(cfg_a, run_directory(cfg_a, ctx.root, tag_a), "paper")]
    cfg_b, tag_b = twin_config(config_dataset, backbone, seed + table.b_seed_offset, "paper", "static", ctx.threads,
                               extra)
    if table.b_variant == "static-shared-init":
        cfg_b.train.init_seed = seed  # A's initial weights (A draws them from its seed)
        tag_b = f"{tag_b}-init{seed}"
    return [(cfg_a, tag_a), (cfg_b, tag_b)]


def train_base_runs(runs: list[tuple[RunConfig, str]], ctx: Context, side_by_side: bool) -> list[dict]:
    """run_cached for each base run; with ctx.jobs > 1 and runs that do not depend on each other, in that many
    spawned processes at once, each at ctx.threads torch threads (or its share of the cores)."""
    untrained = sum(not (run_directory(cfg, ctx.root, tag) / RESULT).is_file() for cfg, tag in runs)
    if ctx.jobs <= 1 or not side_by_side or ctx.cached_only or untrained < 2:
        return [run_cached(cfg, ctx.root, tag, ctx.progress, ctx.cached_only) for cfg, tag in runs]
    jobs = min(ctx.jobs, len(runs))
    workers = []
    for cfg, tag in runs:
        cfg.out_dir = str(run_directory(cfg, ctx.root, tag))  # what run_cached sets in the worker
        worker = copy.deepcopy(cfg)  # threads are not part of a run's identity, so only the worker's copy changes
        worker.train.threads = ctx.threads or max(1, (os.cpu_count() or 1) // jobs)
        workers.append(worker)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_cached, workers, [ctx.root] * len(runs), [tag for _, tag in runs]))


def open_pair(table: Table, dataset: str, backbone: str, seed: int, ctx: Context) -> tuple[Pair | None, float]:
    """Train (or read back) the pair's two base runs and load them; None while a run is missing (cached_only).
    Also returns the seconds the base runs took to train and evaluate, as recorded in their results."""
    runs = base_configs(table, dataset, backbone, seed, ctx)
    results = train_base_runs(runs, ctx, side_by_side=table.b_variant != "dynamic-on-a")
    seconds = sum(r.get("train_seconds", 0) + r.get("valid_eval_seconds", 0) + r.get("test_eval_seconds", 0)
                  for r in results)
    if not all(results):
        return None, seconds
    (cfg_a, _), (cfg_b, _) = runs
    dirs = (Path(cfg_a.out_dir), Path(cfg_b.out_dir))
    pair = Pair(load_checkpoint(dirs[0])[0], load_checkpoint(dirs[1])[0], dirs, (config_key(cfg_a), config_key(cfg_b)),
                cfg_a, ctx.data(cfg_a), ctx.root, f"{Path(dataset).name}-{backbone}-s{seed}", ctx.progress,
                trained_with(*results), tuple(r.get("selection", {}).get("best_epoch") for r in results))
    if pair.online:
        check_frozen_on(pair.a, pair.b)
    return pair, seconds


def grid_points(grid: dict[str, tuple]) -> list[dict]:
    """Every combination of a grid's candidates, in order (the first option varies slowest)."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _runs(pair: Pair, method: Method) -> list[str]:
    return [pair.keys[0 if which == "a" else 1] for which in method.models]


def _eval_settings(pair: Pair) -> dict:
    t = pair.cfg.train
    return {"eval": dataclasses.asdict(pair.cfg.eval), "select": [t.select_protocol, t.select_metric]}


def _valid_score(scorer, pair: Pair) -> tuple[dict, float]:
    e, t = pair.cfg.eval, pair.cfg.train
    result = evaluate(scorer, pair.data, "valid", [t.select_protocol], e.ks, e.batch_size, e.sampled_negatives,
                      e.sample_seed)
    return result, float(result[t.select_protocol][t.select_metric])


def validation_score(pair: Pair, name: str, options: dict, ctx: Context) -> dict | None:
    """One grid point of a method on validation (cached): {"options", "valid", "seconds"}."""
    method = METHODS[name]
    payload = {"method": name, "options": options, "runs": _runs(pair, method), **_eval_settings(pair)}
    stem = ctx.root / "tables" / pair.name / "select" / f"{name}-{payload_key(payload)}"
    record = read_record(stem)
    if record is None and not ctx.cached_only:
        tic = time.perf_counter()
        scorer, _ = method.build(pair, options)
        _, score = _valid_score(scorer, pair)
        record = write_record(stem, {"options": options, "valid": score,
                                     "seconds": round(time.perf_counter() - tic, 3)})
    return record


def select(pair: Pair, name: str, ctx: Context) -> tuple[dict, list[dict]] | None:
    """The options of `name` with the best validation score (ties: the first in grid order) and every grid
    point's record; None while a grid point is missing (cached_only). Test data is never read here."""
    method = METHODS[name]
    if method.options_of is not None:
        chosen = select(pair, method.options_of, ctx)
        return None if chosen is None else (chosen[0], [])
    points = grid_points(method.grid_for(pair))
    if len(points) == 1:
        return points[0], []
    scored = [validation_score(pair, name, options, ctx) for options in points]
    if any(record is None for record in scored):
        return None
    best = max(range(len(scored)), key=lambda i: (scored[i]["valid"], -i))
    return points[best], scored


def evaluate_method(pair: Pair, name: str, ctx: Context) -> Evaluated | None:
    """The method with its validation-chosen options, on test under each protocol (one cached record and
    per-user arrays per protocol, so protocols can be run in separate sittings); only the missing protocols
    are computed. None when nothing is there (cached_only)."""
    method = METHODS[name]
    chosen = select(pair, name, ctx)
    if chosen is None:
        return None
    options, grid = chosen
    payload = {"method": name, "options": options, "runs": _runs(pair, method), **_eval_settings(pair)}
    stems = {p: ctx.root / "tables" / pair.name / f"{name}-{p}-{payload_key({**payload, 'protocol': p})}"
             for p in ctx.protocols}
    records = {p: read_record(stem) for p, stem in stems.items()}
    missing = [p for p, record in records.items() if record is None]
    if missing and not ctx.cached_only:
        for protocol, (record, arrays) in _evaluate(pair, name, options, missing, ctx).items():
            records[protocol] = write_record(stems[protocol], record, arrays)
    present = {p: record for p, record in records.items() if record is not None}
    if not present:
        return None
    return Evaluated(present, {p: stems[p] for p in present}, sum(point["seconds"] for point in grid))


def _evaluate(pair: Pair, name: str, options: dict, protocols: list[str], ctx: Context) -> dict[str, tuple]:
    """Build the method once, score validation (the selection metric) and test under each protocol; the
    build and validation seconds are shared evenly by the protocols computed together. A trained model's
    rows are read back from its run's own evaluation where the run kept its per-user test metrics."""
    method, e = METHODS[name], pair.cfg.eval
    out = _from_run(pair, name, options, protocols, ctx)
    protocols = [p for p in protocols if p not in out]
    if not protocols:
        return out
    if ctx.progress:
        log(f"{pair.name}: {name} {options} on {', '.join(protocols)}")
    tic = time.perf_counter()
    scorer, details = method.build(pair, options)
    valid = public(_valid_score(scorer, pair)[0])
    shared = round((time.perf_counter() - tic) / len(protocols), 3)
    for protocol in protocols:
        tic = time.perf_counter()
        test = evaluate(scorer, pair.data, "test", [protocol], e.ks, e.batch_size, e.sampled_negatives, e.sample_seed)
        seconds = {"build_and_validation": shared, "test": round(time.perf_counter() - tic, 3)}
        out[protocol] = (_record(pair, name, options, protocol, valid, test[protocol], details, seconds, ctx),
                         {f"test/{protocol}/{m}": v for m, v in test["_per_user"][protocol].items()})
    return out


def _record(pair: Pair, name: str, options: dict, protocol: str, valid: dict, test: dict, details: dict,
            seconds: dict, ctx: Context) -> dict:
    """One method's cached test record under one protocol."""
    method, t = METHODS[name], pair.cfg.train
    return {
        "method": name, "label": method.label, "protocol": protocol, "options": options,
        "options_from": method.options_of, "runs": [str(d) for d in pair.dirs], "budget": ctx.budget.name,
        "selection": {"split": "valid", "protocol": t.select_protocol, "metric": t.select_metric,
                      "value": valid[t.select_protocol][t.select_metric]},
        "valid": valid, "test": test, "details": details, "seconds": seconds, "machine": machine_info(),
    }


def _from_run(pair: Pair, name: str, options: dict, protocols: list[str], ctx: Context) -> dict[str, tuple]:
    """The rows of a method that is a trained run as it is (model A, B, B(G)), read back from the run's own
    validation and test evaluation, for the protocols the run scored with the table's evaluation settings and
    kept per-user metrics of (runs trained before those were kept have none: they are scored again)."""
    method = METHODS[name]
    run = pair.dirs[0 if method.models == "a" else 1]
    if not (method.is_run and (run / TEST_OUTCOMES).is_file()):
        return {}
    result = json.loads((run / RESULT).read_text())
    settings = {key: value for key, value in dataclasses.asdict(pair.cfg.eval).items() if key != "protocols"}
    if any(result["config"]["eval"].get(key) != value for key, value in settings.items()):
        return {}
    select = pair.cfg.train.select_protocol
    if select not in result["valid"]:
        return {}
    valid = {select: result["valid"][select]}
    with np.load(run / TEST_OUTCOMES) as saved:
        arrays = {key: saved[key] for key in saved.files}
    seconds = {"build_and_validation": 0.0, "test": 0.0}  # spent, and counted, in the run itself
    out = {}
    for protocol in (p for p in protocols if p in result["test"]):
        record = _record(pair, name, options, protocol, valid, result["test"][protocol], {}, seconds, ctx)
        record["read_from"] = f"{run / RESULT} and {TEST_OUTCOMES}"
        out[protocol] = record, {f"test/{key}": v for key, v in arrays.items() if key.startswith(f"{protocol}/")}
    return out


def _options_text(options: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in options.items())


def metric_columns(ks: list[int]) -> list[str]:
    """The metric columns of every row, whatever its protocol (a protocol without one leaves it empty)."""
    return [f"{m}@{k}" for k in ks for m in ("ndcg", "hr", "mrr")] + ["auc", "uauc"]


def _a_share(shares: list[float] | None) -> float | None:
    """Model A's entry of a fusion's shares; None where the fusion has no maps or the record predates them."""
    return shares[0] if shares else None


def rows_of(table: str, cell: tuple[str, str, int], evaluated: Evaluated, ks: list[int], pair: Pair) -> list[dict]:
    """One CSV row per protocol: test metrics, the validation score that selected the method, its options,
    the seconds its selection and evaluation took, model A's share of the spliced positions and of the head's
    (methods with maps; blank in records made before each was kept), and the base runs' provenance (`pair`):
    the commit(s) that trained them and the epochs validation selected for A and B."""
    dataset, backbone, seed = cell
    epoch_a, epoch_b = pair.best_epochs
    rows = []
    for protocol, record in evaluated.records.items():
        selection = record["selection"]
        rows.append({"table": table, "dataset": Path(dataset).name, "backbone": backbone, "method": record["method"],
                     "protocol": protocol, "seed": seed, **{m: record["test"].get(m) for m in metric_columns(ks)},
                     "selected_on": f"valid {selection['protocol']} {selection['metric']}",
                     "valid_score": selection["value"], "options": _options_text(record["options"]),
                     "seconds": round(sum(record["seconds"].values()) + evaluated.selection_seconds, 3),
                     "budget": record["budget"], "trained_with": pair.trained_with, "a_best_epoch": epoch_a,
                     "b_best_epoch": epoch_b, "a_share": _a_share(record["details"].get("share")),
                     "a_share_head": _a_share((record["details"].get("share_by_group") or {}).get("head"))})
    return rows


def outcomes_of(cells: dict[tuple, Evaluated]) -> dict[tuple, dict[str, np.ndarray]]:
    """Each computed cell's per-user outcomes, (dataset, backbone, seed) -> {"<method>/<protocol>": clipped
    ranks}, read from the run cache (see per_user: they rebuild the tested metrics bit for bit)."""
    out: dict[tuple, dict[str, np.ndarray]] = {}
    for (dataset, backbone, seed, method), evaluated in cells.items():
        for protocol, stem in evaluated.stems.items():
            arrays = {m: read_arrays(stem, f"test/{protocol}/{m}") for m in TESTED_METRICS}
            out.setdefault((dataset, backbone, seed), {})[f"{method}/{protocol}"] = per_user.codes_of(arrays)
    return out


def _per_user(outcomes: dict, where: tuple, method: str, seeds: list[int]) -> np.ndarray:
    """(S, U) test arrays of one method over seeds, `where` = (dataset, backbone, protocol, metric)."""
    dataset, backbone, protocol, metric = where
    return np.stack([per_user.metric_of(outcomes[dataset, backbone, s][f"{method}/{protocol}"], metric)
                     for s in seeds])


def paired_tests(
    name: str, outcomes: dict[tuple, dict[str, np.ndarray]], protocols: tuple[str, ...], root: Path
) -> list[dict]:
    """The table's paired tests per dataset x backbone x protocol x metric, pooled over the seeds in
    `outcomes` (see outcomes_of): a user's difference is averaged over the seeds both methods have, then
    tested over users. "Best single" is the single model with the higher test mean (the harder comparison).
    p-values are cached under `root` by the differences they test."""
    table, rows = TABLES[name], []
    for dataset, backbone in sorted({(d, b) for d, b, _ in outcomes}):
        for protocol, metric, (tested, versus) in itertools.product(protocols, TESTED_METRICS, table.tests):
            seeds_of = {m: {s for (d, b, s), have in outcomes.items()
                            if (d, b) == (dataset, backbone) and f"{m}/{protocol}" in have} for m in table.methods}
            where = (dataset, backbone, protocol, metric)
            other = versus
            if versus == "best-single":
                means = {m: _per_user(outcomes, where, m, sorted(seeds_of[m])).mean()
                         for m in table.singles if seeds_of[m]}
                other = max(means, key=means.get) if means else table.singles[0]
            seeds = sorted(seeds_of[tested] & seeds_of[other])
            if not seeds:
                continue
            mine, theirs = _per_user(outcomes, where, tested, seeds), _per_user(outcomes, where, other, seeds)
            differences = (mine - theirs).mean(0)  # (U,): each user's difference, averaged over seeds
            rows.append({"table": name, "dataset": Path(dataset).name, "backbone": backbone, "protocol": protocol,
                         "metric": metric, "method": tested, "versus": versus, "versus_method": other,
                         "seeds": len(seeds), "pooled_seeds": " ".join(map(str, seeds)), "users": len(differences),
                         "mean_method": round(float(mine.mean()), 6),
                         "mean_versus": round(float(theirs.mean()), 6),
                         "difference": round(float(differences.mean()), 6),
                         **_p_values(differences, root)})
    return rows


def _p_values(differences: np.ndarray, root: Path) -> dict:
    """Bootstrap and t-test p-values, cached by a digest of the differences they test."""
    digest = hashlib.sha1(np.ascontiguousarray(differences, dtype=np.float64).tobytes()).hexdigest()
    stem = root / "tables" / "tests" / payload_key({"differences": digest, "resamples": RESAMPLES})
    record = read_record(stem)
    if record is None:
        record = write_record(stem, {"p_bootstrap": paired_bootstrap(differences),
                                     "p_t_test": paired_t_test(differences)})
    return record


def reproduce_table(
    name: str,
    datasets: list[str],
    backbones: list[str],
    seeds: list[int],
    ctx: Context,
    out_dir: Path,
    methods: list[str] | None = None,
) -> dict:
    """Run (or read back) one table, or only its `methods`, and merge its rows, paired tests and seconds into
    <name>.csv, <name>_tests.csv and <name>_timing.json in out_dir (see merge_rows), and each computed cell's
    per-user outcomes into out_dir/per_user (a requested cell not computed is tested from those); returns the
    timing."""
    check_request([name], ctx.protocols)
    table, started = TABLES[name], time.perf_counter()
    wanted = [m for m in table.methods if methods is None or m in methods]
    rows, cells, cell_seconds = [], {}, {}
    builds = committed_builds(out_dir / f"{name}.csv", CELL_KEY)
    for dataset, backbone, seed in itertools.product(datasets, backbones, seeds):
        pair, base_seconds = open_pair(table, dataset, backbone, seed, ctx)
        cell, per_method = cell_key(dataset, backbone, seed), {}
        if pair is None:
            if base_seconds:  # one base run done, the other not yet
                cell_seconds[cell] = {"base_runs_seconds": round(base_seconds, 1), "by_method": {}}
            continue
        if keeps_committed(out_dir / f"{name}.csv", builds, (Path(dataset).name, backbone, seed), pair.trained_with,
                           ctx.replace_rows):
            continue  # its committed rows, per-user outcomes and seconds stay as they are
        for method in wanted:
            evaluated = evaluate_method(pair, method, ctx)
            if evaluated is None:
                continue
            cells[dataset, backbone, seed, method] = evaluated
            rows += rows_of(name, (dataset, backbone, seed), evaluated, pair.cfg.eval.ks, pair)
            per_method[method] = {"selection": round(evaluated.selection_seconds, 1),
                                  **{p: round(sum(r["seconds"].values()), 1) for p, r in evaluated.records.items()}}
        cell_seconds[cell] = {"base_runs_seconds": round(base_seconds, 1), "by_method": per_method}
    outcomes = outcomes_of(cells)
    pooled = dict(outcomes)
    for dataset, backbone, seed in itertools.product(datasets, backbones, seeds):
        if (dataset, backbone, seed) not in outcomes:  # its run caches are gone: the committed outcomes
            archived = per_user.load(per_user.archive_path(out_dir, name, dataset, backbone, seed))
            if archived:
                pooled[dataset, backbone, seed] = archived
    tested = paired_tests(name, pooled, ctx.protocols, ctx.root)
    with outputs_lock(out_dir):  # another worker may be merging into the same files
        for (dataset, backbone, seed), cell_outcomes in outcomes.items():
            per_user.save(per_user.archive_path(out_dir, name, dataset, backbone, seed), cell_outcomes)
        rows = merge_rows(out_dir / f"{name}.csv", rows, ROW_KEY)
        write_csv(out_dir / f"{name}.csv", rows)
        tests = merge_rows(out_dir / f"{name}_tests.csv", tested, TEST_KEY, keep_pooled=True)
        write_csv(out_dir / f"{name}_tests.csv", tests)
        timing = merge_timing(out_dir / f"{name}_timing.json", {
            "table": name, "title": table.title, "budget": ctx.budget.name,
            "pairs_complete": complete_cells(rows, wanted, ("sampled",)),  # the headline protocol
            "pairs_complete_full": complete_cells(rows, wanted, ("full",)),
            "pairs_requested": len(datasets) * len(backbones) * len(seeds),
            "requested_cells": [cell_key(*cell) for cell in itertools.product(datasets, backbones, seeds)],
            "cells": cell_seconds,
            "wall_seconds_this_call": round(time.perf_counter() - started, 1),
            "note": "seconds as recorded when each part was computed, over every sitting; base runs shared with "
                    "another table (model A in every table) count in each; a pair's two runs add up, also when "
                    "they trained side by side (--jobs), so its wall time can be shorter",
            "machine": machine_info(),
        })
        write_json(out_dir / f"{name}_timing.json", timing)
    return timing


def cell_key(dataset: str, backbone: str, seed: int) -> str:
    """A cell's name in the timing file: dataset file name, backbone and seed."""
    return f"{Path(dataset).name}/{backbone}/{seed}"


def complete_cells(rows: list[dict], methods: list[str], protocols: tuple[str, ...]) -> int:
    """Cells (dataset, backbone, seed) of the merged rows that have every method under every protocol given
    (counted from the merged rows, so the count does not depend on which protocols a call computed)."""
    have: dict[tuple, set] = {}
    for row in rows:
        cell = (row["dataset"], row["backbone"], str(row["seed"]))
        have.setdefault(cell, set()).add((row["method"], row["protocol"]))
    wanted = set(itertools.product(methods, protocols))
    return sum(wanted <= done for done in have.values())


def merge_timing(path: Path, timing: dict) -> dict:
    """This call's per-cell seconds merged into the committed timing file's, with the totals over all cells;
    the cells requested are those of every call (a file older than that list keeps its count as a floor).
    A file written before cells were itemised keeps its totals apart as `earlier_not_itemised`: they may cover
    cells recomputed since, so they are not added to the totals."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    earlier = old.get("earlier_not_itemised")
    if old and "cells" not in old:
        earlier = {k: old[k] for k in ("pairs_complete", "base_runs_seconds", "methods_seconds")}
    old_cells = old.get("cells", {})
    cells = {**old_cells, **{key: merge_cell(old_cells.get(key), cell) for key, cell in timing["cells"].items()}}
    base = sum(c["base_runs_seconds"] for c in cells.values())
    methods = sum(c["methods_seconds"] for c in cells.values())
    requested = {*old.get("requested_cells", ()), *timing["requested_cells"], *cells}  # cells: old and new
    merged = {**timing, "pairs_requested": max(len(requested), old.get("pairs_requested", 0)),
              "requested_cells": sorted(requested),
              "base_runs_seconds": round(base, 1), "methods_seconds": round(methods, 1),
              "total_seconds": round(base + methods, 1), "cells": dict(sorted(cells.items()))}
    if earlier is not None:
        merged["earlier_not_itemised"] = earlier
    return merged


def _itemised(by_method: dict) -> float:
    """The seconds a cell's by_method adds up to."""
    return round(sum(sum(parts.values()) for parts in by_method.values()), 1)


def merge_cell(old: dict | None, new: dict) -> dict:
    """One cell's seconds: this call's base runs, and each method's selection and per-protocol evaluation
    seconds from the call that computed them (a call that reads back fewer methods or protocols keeps the
    others'), methods_seconds their sum. A cell recorded before methods were itemised keeps its total as a floor
    through every later merge (a methods_seconds above its itemised sum is that floor): no call can tell how much
    of that total has been itemised since."""
    old = old or {}
    kept = old.get("by_method", {})
    per_method = {m: {**kept.get(m, {}), **new["by_method"].get(m, {})}
                  for m in sorted({*kept, *new["by_method"]})}
    recorded = old.get("methods_seconds", 0.0)
    floor = recorded if recorded > _itemised(kept) else 0.0
    return {"base_runs_seconds": new["base_runs_seconds"], "methods_seconds": max(_itemised(per_method), floor),
            "by_method": per_method}
