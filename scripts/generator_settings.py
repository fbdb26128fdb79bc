"""Where the generator on A's frozen backbone switches itself off (docs/dynamic.md), would a gentler or a more
regularised generator help? Trains the grid's `dynamic-on-a-epoch0` run under other settings and records each
run's validation curve at its start, the epoch validation selects and that epoch's test metrics:

    python scripts/generator_settings.py --datasets douban-book --backbones gru4rec --seeds 0 1 2 \\
        --setting lr1e-4 train.lr=0.0001 --setting wd1 train.weight_decay=1.0 \\
        --setting window3 model.generator_window=3 --out docs/results/generator_settings

The setting `default` (the variant as the grid trains it) is always included. Runs are cached under --root
beside the grid's, whose static runs they start from (train those first: `dynrec experiment dynamic --variants
static`). Rows merge into OUT.csv by (dataset, backbone, seed, setting), so workers may split the cells, and
OUT.md is rewritten from every row; a committed row that other code trained stays unless --replace-rows (as
in `dynrec experiment`). Selection uses validation only; the test columns are read, never chosen on.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from dynrec.checkpoint import atomic_write
from dynrec.cli import REPLACE_ROWS_HELP
from dynrec.config import RunConfig, apply_overrides, config_from_dict
from dynrec.experiments.dynamic import variant_config
from dynrec.experiments.runner import (
    committed_builds,
    keeps_committed,
    merge_rows,
    outputs_lock,
    read_csv,
    run_cached,
    write_csv,
)
from dynrec.machine import trained_with

VARIANT = "dynamic-on-a-epoch0"
KEY = ("dataset", "backbone", "seed", "setting")
CURVE = 5  # validation scores kept per run: epochs 0..CURVE-1


def setting_config(dataset: str, backbone: str, seed: int, setting: str, overrides: list[str], threads: int,
                   root: Path) -> tuple[RunConfig, str]:
    """The variant's grid config with `overrides` applied, and its directory tag (the grid's own for `default`)."""
    cfg, tag = variant_config(dataset, backbone, seed, "paper", VARIANT, threads, root)
    tag = tag if setting == "default" else f"{tag}-{setting}"
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides)), tag


def run_row(dataset: str, backbone: str, seed: int, setting: str, overrides: list[str], threads: int,
            root: Path) -> dict:
    """Train (or read back) one run of the variant under `overrides`; its row of the table."""
    cfg, tag = setting_config(dataset, backbone, seed, setting, overrides, threads, root)
    result = run_cached(cfg, root, tag)
    curve = {f"valid_epoch{h['epoch']}": h["valid_sampled_ndcg@10"] for h in result["history"][:CURVE]}
    return {"dataset": dataset, "backbone": backbone, "seed": seed, "setting": setting,
            "overrides": " ".join(overrides), "epochs": result["epochs"],
            "best_epoch": result["selection"]["best_epoch"], "valid_best": result["selection"]["best_value"],
            **curve, "test_sampled_ndcg@10": result["test"]["sampled"]["ndcg@10"],
            "test_full_ndcg@10": result["test"]["full"]["ndcg@10"], "trained_with": trained_with(result),
            "cpu": result["machine"].get("cpu_id", result["machine"]["cpu"])}


def summary(rows: list[dict]) -> str:
    """Mean over seeds per cell and setting: validation at epochs 0 and 1, the best, the epochs selected and
    the selected epoch's test NDCG@10 (sampled and full). In each cell the setting with the highest mean best
    validation score is marked: the one validation would choose."""
    lines = ["| dataset | backbone | setting | seeds | valid, epoch 0 | valid, epoch 1 | valid, best | epochs selected "
             "| test sampled NDCG@10 | test full NDCG@10 | chosen on validation |", "|" + " --- |" * 11]
    groups: dict[tuple, list[dict]] = {}
    for row in sorted(rows, key=lambda r: int(r["seed"])):
        groups.setdefault((row["dataset"], row["backbone"], row["setting"]), []).append(row)

    def mean(key: tuple, column: str) -> float:
        return statistics.fmean(float(r[column]) for r in groups[key])

    chosen = {}
    for key in groups:
        best = chosen.get(key[:2])
        if best is None or mean(key, "valid_best") > mean(best, "valid_best"):
            chosen[key[:2]] = key
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] != "default", k[2])):
        values = " | ".join(f"{mean(key, column):.4f}" for column in ("valid_epoch0", "valid_epoch1", "valid_best"))
        tests = " | ".join(f"{mean(key, column):.4f}" for column in ("test_sampled_ndcg@10", "test_full_ndcg@10"))
        epochs = ", ".join(str(r["best_epoch"]) for r in groups[key])
        lines.append(f"| {' | '.join(key)} | {len(groups[key])} | {values} | {epochs} | {tests} | "
                     f"{'yes' if chosen[key[:2]] == key else ''} |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: Path, replace: bool = False) -> None:
    """Merge the rows into OUT.csv (a committed row that other code trained stays unless `replace`) and render
    OUT.md from every row of it."""
    path = out.with_suffix(".csv")
    with outputs_lock(path.parent):
        builds = committed_builds(path, KEY)  # a retrain by other code does not replace a committed row unseen
        rows = [row for row in rows if not keeps_committed(path, builds, tuple(row[k] for k in KEY),
                                                           row["trained_with"], replace)]
        write_csv(path, merge_rows(path, rows, KEY))
        rows = read_csv(path)
        cpus = ", ".join(sorted({r["cpu"] for r in rows}))
        text = ["# The generator on A's frozen backbone under other settings", "",
                f"Written by `scripts/generator_settings.py` ({path.name}; runs trained on {cpus}). Variant "
                f"`{VARIANT}`: validation may keep epoch 0 (A's weights plus the untrained generator's small "
                "deltas). Sampled validation NDCG@10 and the test NDCG@10 of the epoch it selects, mean over seeds.",
                "", summary(rows), ""]
        atomic_write(path.with_suffix(".md"), lambda tmp: tmp.write_text("\n".join(text)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--backbones", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--setting", dest="settings", nargs="+", action="append", default=[],
                        metavar=("NAME", "KEY=VALUE"), help="a named setting and its config overrides (repeatable)")
    parser.add_argument("--root", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/results/generator_settings"))
    parser.add_argument("--replace-rows", action="store_true", help=REPLACE_ROWS_HELP)
    args = parser.parse_args()
    if any(name == "default" for name, *_ in args.settings):
        parser.error("--setting: 'default' names the grid's own run; choose another name")
    settings = {"default": [], **{name: overrides for name, *overrides in args.settings}}
    rows = [run_row(dataset, backbone, seed, name, overrides, args.threads, args.root)
            for dataset in args.datasets for backbone in args.backbones for name, overrides in settings.items()
            for seed in args.seeds]
    write_outputs(rows, args.out, args.replace_rows)


if __name__ == "__main__":
    main()
