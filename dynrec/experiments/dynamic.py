"""Static vs dynamic (DUET) twins over datasets, backbones and seeds: one CSV row per run and protocol,
and a Markdown summary with mean and standard deviation over seeds."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from dynrec.checkpoint import atomic_write
from dynrec.config import RunConfig
from dynrec.experiments.runner import (
    PAPER_SETTING,
    committed_builds,
    experiment_config,
    keeps_committed,
    merge_rows,
    outputs_lock,
    run_cached,
    run_directory,
    write_csv,
)
from dynrec.machine import trained_with

VARIANTS = {  # twins that differ by config overrides
    "static": [],
    "dynamic": ["model.dynamic=true"],
    # the joint twin with APG's low-rank heads: a K x K core per layer instead of in x out generated values
    "dynamic-lowrank": ["model.dynamic=true", "model.generator_form=lowrank"],
}
ON_STATIC = "dynamic-on-a"  # the generator trained on the static twin's frozen backbone (Table 3's model B(G))
ON_STATIC_VARIANTS = {  # the runs on the static twin's frozen backbone: whether selection may keep epoch 0
    ON_STATIC: False,
    # epoch 0 (A's weights, the untrained generator's small deltas) among the epochs validation selects from
    "dynamic-on-a-epoch0": True,
}
ALL_VARIANTS = (*VARIANTS, *ON_STATIC_VARIANTS)
DEFAULT_VARIANTS = ("static", "dynamic", ON_STATIC)  # what a grid trains unless asked for more
SETTINGS = {
    "paper": PAPER_SETTING,  # window 10, BCE 4 negatives, d = 32, selected on the sampled protocol
    # the dataset's own full-CE config; one generated head per position (about 20k per batch at L = 200), so
    # the code comes from the encoder's state (a GRU over every position's window would double the epoch)
    # and the heads are low-rank
    "full": ["model.generator_source=backbone", "model.generator_form=lowrank"],
}
METRICS = ("ndcg@5", "hr@5", "ndcg@10", "hr@10", "auc", "uauc")


def twin_config(
    dataset: str, backbone: str, seed: int, setting: str, variant: str, threads: int = 0, extra: tuple[str, ...] = ()
) -> tuple[RunConfig, str]:
    """One static or dynamic twin's config and directory tag; the paper tables train through this too, so
    they share the grid's runs. `extra` overrides come last (the tables' quick budget)."""
    overrides = [*SETTINGS[setting], f"train.seed={seed}", f"train.threads={threads}", *VARIANTS[variant], *extra]
    return experiment_config(dataset, backbone, overrides), f"{setting}-{variant}"


def frozen_dynamic_config(static: RunConfig, static_dir: Path, setting: str) -> tuple[RunConfig, str]:
    """The dynamic model on a static run's frozen backbone (docs/dynamic.md, mode 3): the static run's config
    with `model.dynamic`, its weights loaded from `static_dir` and frozen, so only the generator learns and the
    static head and the generated heads read one encoder. Returns the config and its directory tag."""
    cfg = copy.deepcopy(static)
    cfg.model.dynamic = True
    cfg.train.init_from, cfg.train.freeze_backbone = str(static_dir), True
    return cfg, f"{setting}-dynamic-on-a"


def variant_config(
    dataset: str, backbone: str, seed: int, setting: str, variant: str, threads: int, root: Path
) -> tuple[RunConfig, str]:
    """A grid run's config and tag: a twin, or the dynamic model on the static twin's run under `root`."""
    if variant in ON_STATIC_VARIANTS:
        static, static_tag = twin_config(dataset, backbone, seed, setting, "static", threads)
        cfg, _ = frozen_dynamic_config(static, run_directory(static, root, static_tag), setting)
        cfg.train.select_start = ON_STATIC_VARIANTS[variant]
        return cfg, f"{setting}-{variant}"
    return twin_config(dataset, backbone, seed, setting, variant, threads)


def static_vs_dynamic(
    datasets: list[str],
    backbones: list[str],
    seeds: list[int],
    setting: str,
    root: Path,
    progress: bool = False,
    threads: int = 0,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
) -> list[dict]:
    """Train (or read back) every static and dynamic run; rows of test metrics per protocol. Only the
    listed `variants` train (workers can take one each); finished runs of the others are read back. The
    dynamic model on the static twin's backbone trains once that twin has finished."""
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; expected some of {list(ALL_VARIANTS)}")
    rows = []
    for dataset in datasets:
        for backbone in backbones:
            for seed in seeds:
                static_done = False
                for variant in ALL_VARIANTS:
                    cfg, tag = variant_config(dataset, backbone, seed, setting, variant, threads, root)
                    trains = variant in variants and (variant not in ON_STATIC_VARIANTS or static_done)
                    result = run_cached(cfg, root, tag, progress, cached_only=not trains)
                    static_done = static_done or (variant == "static" and bool(result))
                    for protocol, metrics in result.get("test", {}).items():
                        rows.append({"dataset": dataset, "backbone": backbone, "variant": variant,
                                     "setting": setting, "protocol": protocol, "seed": seed,
                                     **{m: metrics.get(m) for m in METRICS if m in metrics},
                                     "epochs": result["epochs"],
                                     "best_epoch": result.get("selection", {}).get("best_epoch"),
                                     "seconds_per_epoch": result["seconds_per_epoch"],
                                     "trained_with": trained_with(result)})
    return rows


def summary_markdown(rows: list[dict], protocol: str) -> str:
    """Mean +- std over seeds per dataset x backbone x variant, and the dynamic - static difference over the
    seeds both variants have (named when they are fewer than either variant's own)."""
    metrics = [m for m in METRICS if any(m in r for r in rows if r["protocol"] == protocol)]
    lines = [f"| dataset | backbone | variant | seeds | {' | '.join(metrics)} |", "|---" * (4 + len(metrics)) + "|"]
    keys = sorted({(r["dataset"], r["backbone"]) for r in rows})
    for dataset, backbone in keys:
        groups = {}
        for variant in ALL_VARIANTS:
            group = [r for r in rows if (r["dataset"], r["backbone"], r["variant"], r["protocol"])
                     == (dataset, backbone, variant, protocol)]
            if not group:
                continue
            groups[variant] = {int(r["seed"]): r for r in group}
            cells = []
            for m in metrics:
                values = np.array([r[m] for r in group], dtype=float)
                spread = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""  # one seed has no spread
                cells.append(f"{values.mean():.4f}{spread}")
            lines.append(f"| {dataset} | {backbone} | {variant} | {len(group)} | {' | '.join(cells)} |")
        for variant in ALL_VARIANTS[1:]:
            common = sorted(set(groups.get("static", {})) & set(groups.get(variant, {})))
            if not common:
                continue
            delta = []
            for m in metrics:
                mean = {v: np.mean([float(groups[v][s][m]) for s in common]) for v in ("static", variant)}
                delta.append(f"{100 * (mean[variant] / mean['static'] - 1):+.1f}%")
            fewer = len(common) < max(len(groups["static"]), len(groups[variant]))
            seeds = f" seed{'s' if len(common) > 1 else ''} {' '.join(map(str, common))} " if fewer else " "
            lines.append(f"| {dataset} | {backbone} | {variant} vs static |{seeds}| {' | '.join(delta)} |")
    return "\n".join(lines)


RUN_KEY = ("dataset", "backbone", "variant", "setting", "seed")  # the rows of one run
ROW_KEY = (*RUN_KEY[:4], "protocol", "seed")


def _run_of(row: dict) -> tuple:
    """The run a row belongs to (its RUN_KEY values)."""
    return tuple(row[k] for k in RUN_KEY)


def write_outputs(rows: list[dict], setting: str, out_dir: Path, replace: bool = False) -> None:
    """Merge the rows into dynamic_<setting>.csv (rows of runs not read back this time are kept; see
    runner.merge_rows; committed rows of runs trained by other code stay unless `replace`, see
    runner.keeps_committed) and render dynamic_<setting>.md from the merged rows."""
    path = out_dir / f"dynamic_{setting}.csv"
    with outputs_lock(out_dir):  # another worker may be merging into the same file
        builds = committed_builds(path, RUN_KEY)
        runs = {_run_of(row): row.get("trained_with", "unrecorded") for row in rows}
        kept = {run for run, build in runs.items() if keeps_committed(path, builds, run, build, replace)}
        rows = merge_rows(path, [row for row in rows if _run_of(row) not in kept], ROW_KEY)
        write_csv(path, rows)
        text = [f"# Static vs dynamic, {setting} setting", ""]
        for protocol in sorted({r["protocol"] for r in rows}):
            text += [f"## {protocol} protocol (test)", "", summary_markdown(rows, protocol), ""]
        atomic_write(out_dir / f"dynamic_{setting}.md", lambda tmp: tmp.write_text("\n".join(text)))
