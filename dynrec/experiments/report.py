"""docs/results.md and its bar charts, rendered from the committed outputs of `dynrec reproduce` alone
(<table>.csv, <table>_tests.csv, <table>_timing.json): rendering trains, evaluates and tests nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from dynrec.checkpoint import atomic_write
from dynrec.experiments.methods import LEARN_EPOCHS, METHODS, TENSORS
from dynrec.experiments.paper import SOURCE, published
from dynrec.experiments.stats import RESAMPLES
from dynrec.experiments.tables import B_SEED_OFFSET, BACKBONES, DATASETS, TABLES, TEST_KEY

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SHOWN = ("ndcg@5", "hr@5", "ndcg@10", "hr@10")  # the paper's four columns
CHARTED = ("ndcg@10", "hr@10")
ALPHA = 0.05
QUICK_BANNER = ("> **QUICK SMOKE RUN: these numbers are not results.** A tiny budget (2 epochs, ml-100k's configs) "
                "that only checks the pipeline end to end.")
NOT_RUN = "not run yet"
DISCUSSION = "discussion.md"  # in out_dir: the page's closing discussion, when there is one
TABLE_NOTES = {  # why a table is built the way it is: figures measured with an earlier build, not in these CSVs
    "table1": (
        "Model B is the static run of seed s + 100, so it starts from its own random initialisation as well as its "
        "own data order. A network's hidden units can be permuted without changing what it computes, and two "
        "trainings from different starts settle in different permutations, so merging them position by position "
        "mixes units that play different roles: weight-space merges (averaging, CKI, TIES, DARE, magnitude) can "
        "then fall far below both models; the output ensemble, which never mixes weights, is not exposed to this. "
        "The paper does not say whether its models B shared model A's initialisation; the next table builds B from "
        "A's initial weights."
    ),
    "table1-shared-init": (
        "Model B starts from model A's initial weights (`train.init_seed` = A's seed) and differs from A only in "
        "data order, negatives and dropout (`train.seed` = s + 100): the regime in which weight averaging of two "
        "trainings is known to work, because both stay in one basin of the loss and their hidden units keep their "
        "roles. Set beside Table 1, it separates what the merge methods do from what mismatched initialisations do."
    ),
    "table3": (
        "Model B(G) is trained on model A's frozen backbone and every fusion row merges heads online, so the static "
        "head and each generated head read the same encoder output. The first build trained B(G) jointly from "
        "scratch (its own encoder) and fused A's and B(G)'s backbones offline under B(G)'s generator, splicing "
        "weights that read different feature spaces. Its first cell (ML-1M, SASRec, seed 0, paper setting, sampled "
        "NDCG@10) shows the cost: on validation each single model scored about 0.60 (A 0.605, B(G) 0.611), but CKI "
        "soft 0.514 (head) and 0.544 (all tensors), CKI hard 0.494 (head); on test A 0.5810, B(G) 0.5848, output "
        "ensemble 0.5953, CKI soft 0.5264, averaging 0.4859 (files: results/table3_joint_bg/)."
    ),
}


def _read(out_dir: Path, name: str) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict | None]:
    def csv(path: Path) -> pd.DataFrame | None:
        try:
            return pd.read_csv(path)
        except (FileNotFoundError, pd.errors.EmptyDataError):  # not run yet, or run with nothing to show
            return None

    timing = out_dir / f"{name}_timing.json"
    return (csv(out_dir / f"{name}.csv"), csv(out_dir / f"{name}_tests.csv"),
            json.loads(timing.read_text()) if timing.is_file() else None)


def _cell(values: pd.Series) -> str:
    """Mean ± sample std over seeds; one seed has no spread to show."""
    if len(values) < 2:
        return f"{values.mean():.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def _p(value: float) -> str:
    text = "<0.001" if value < 0.001 else f"{value:.3f}"
    return f"**{text}**" if value < ALPHA else text


def _grid(rows: pd.DataFrame | None, quick: bool) -> list[tuple[str, str]]:
    """The dataset x backbone cells a table should show: the issue's 4 x 3 (quick: what was run)."""
    present = [] if rows is None else sorted({(d, b) for d, b in zip(rows["dataset"], rows["backbone"], strict=True)})
    if quick:
        return present
    return [(d, b) for d in DATASETS for b in BACKBONES] + [c for c in present if c[0] not in DATASETS]


def results_table(name: str, rows: pd.DataFrame | None, protocol: str, quick: bool) -> list[str]:
    """Mean ± std over seeds per dataset x backbone x method, with the paper's figures beside them (sampled)."""
    header = ["dataset", "backbone", "method", "seeds", *(m.upper() for m in SHOWN)]
    if protocol == "sampled":
        header.append("published (paper) " + " / ".join(m.upper() for m in SHOWN))
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for dataset, backbone in _grid(rows, quick):
        mine = None if rows is None else rows[(rows["dataset"] == dataset) & (rows["backbone"] == backbone)
                                             & (rows["protocol"] == protocol)]
        if mine is None or mine.empty:
            lines.append(f"| {dataset} | {backbone} | {NOT_RUN} |" + " |" * (len(header) - 3))
            continue
        for method in TABLES[name].methods:
            group = mine[mine["method"] == method]
            cells = [_cell(group[m]) for m in SHOWN] if not group.empty else [NOT_RUN] + [""] * (len(SHOWN) - 1)
            paper = published(name, dataset, method) if protocol == "sampled" else None
            extra = [" / ".join(f"{paper[m]:.4f}" for m in SHOWN) if paper else ""] if protocol == "sampled" else []
            lines.append(f"| {dataset} | {backbone} | {METHODS[method].label} | {group['seed'].nunique()} | "
                         + " | ".join(cells + extra) + " |")
    return lines


def published_table(name: str) -> list[str]:
    """The paper's own figures for the table's methods, per dataset (sampled protocol, no backbone named)."""
    lines = ["| dataset | method | " + " | ".join(m.upper() for m in SHOWN) + " |", "|---" * (2 + len(SHOWN)) + "|"]
    for dataset in DATASETS:
        for method in TABLES[name].methods:
            paper = published(name, dataset, method)
            if paper:
                lines.append(f"| {dataset} | {METHODS[method].label} | " + " | ".join(f"{paper[m]:.4f}" for m in SHOWN)
                             + " |")
    return lines


def _seeds(row: pd.Series) -> str:
    """How many seeds a test pooled, and which when the row says (rows written before it do not)."""
    pooled = row.get("pooled_seeds")
    return f"{row['seeds']} ({pooled})" if isinstance(pooled, str) else str(row["seeds"])


def tests_table(tests: pd.DataFrame, protocol: str) -> list[str]:
    """Per dataset x backbone: each tested method's difference from its comparator with both p-values."""
    lines = ["| dataset | backbone | method | versus | seeds | users | Δ NDCG@10 | p bootstrap | p t-test "
             "| Δ HR@10 | p bootstrap | p t-test |", "|---" * 12 + "|"]
    chosen = tests[tests["protocol"] == protocol]
    if chosen.empty:
        return [NOT_RUN + "."]
    pooled = ["pooled_seeds"] if "pooled_seeds" in chosen else []  # one line per pooled seed set a CSV kept
    for (dataset, backbone, method, versus, *_), group in chosen.groupby(["dataset", "backbone", "method", "versus",
                                                                          *pooled], sort=False, dropna=False):
        by_metric = {row["metric"]: row for _, row in group.iterrows()}
        first = next(iter(by_metric.values()))
        other = first["versus_method"] if versus != "best-single" else f"best single ({first['versus_method']})"
        cells = []
        for metric in CHARTED:
            row = by_metric.get(metric)
            cells += ([f"{row['difference']:+.4f}", _p(row["p_bootstrap"]), _p(row["p_t_test"])] if row is not None
                      else ["", "", ""])
        lines.append(f"| {dataset} | {backbone} | {method} | {other} | {_seeds(first)} | {first['users']} | "
                     + " | ".join(cells) + " |")
    return lines


def widest(tests: pd.DataFrame) -> pd.DataFrame:
    """Per test, the row pooled over the most seeds (the last written on a tie): the one the verdicts read,
    where a CSV kept tests over different seed sets side by side (see merge_rows)."""
    order = tests.assign(_row=range(len(tests))).sort_values(["seeds", "_row"], kind="stable")
    return order.drop_duplicates(list(TEST_KEY), keep="last").sort_values("_row").drop(columns="_row")


def significant(row: pd.Series) -> bool:
    """Both tests below ALPHA."""
    return row["p_bootstrap"] < ALPHA and row["p_t_test"] < ALPHA


def wins_and_losses(tests: pd.DataFrame, protocol: str = "sampled", metric: str = "ndcg@10") -> list[str]:
    """Where each tested method is significantly above, below, or not distinguishable from each comparator."""
    tests = widest(tests)
    chosen = tests[(tests["protocol"] == protocol) & (tests["metric"] == metric)]
    lines = []
    for (method, versus), group in chosen.groupby(["method", "versus"], sort=False):
        verdict: dict[str, list[str]] = {"above": [], "below": [], "no significant difference": []}
        for _, row in group.iterrows():
            where = f"{row['dataset']}/{row['backbone']}"
            key = "no significant difference" if not significant(row) else "above" if row["difference"] > 0 else "below"
            verdict[key].append(where)
        parts = [f"{key} on {', '.join(cells)}" for key, cells in verdict.items() if cells]
        lines.append(f"- **{method}** vs {versus} ({protocol} {metric.upper()}): " + "; ".join(parts) + ".")
    return lines


def target_check(tests: pd.DataFrame) -> list[str]:
    """The issue's target: CKI (static + dynamic) above A, B(G), averaging and the ensemble, sampled, p < 0.05."""
    versus = ("model-a", "model-bg", "average", "ensemble")
    lines = ["| dataset | backbone | metric | " + " | ".join(f"> {v}" for v in versus) + " | met |",
             "|---" * (len(versus) + 4) + "|"]
    tests = widest(tests)
    chosen = tests[(tests["protocol"] == "sampled") & (tests["method"] == "cki")]
    for (dataset, backbone, metric), group in chosen.groupby(["dataset", "backbone", "metric"], sort=False):
        rows = {row["versus"]: row for _, row in group.iterrows()}
        marks, met = [], True
        for other in versus:
            row = rows.get(other)
            ok = row is not None and row["difference"] > 0 and significant(row)
            met &= ok
            marks.append(NOT_RUN if row is None else f"{'yes' if ok else 'no'} ({row['difference']:+.4f})")
        verdict = "yes" if met else "no"
        lines.append(f"| {dataset} | {backbone} | {metric.upper()} | " + " | ".join(marks) + f" | {verdict} |")
    return lines


def timing_table(timings: dict[str, dict | None]) -> list[str]:
    """Hours per table from its itemised cells, and apart from them the totals an earlier sitting recorded
    before cells were itemised (they may include cells recomputed since, so the two are not added up)."""
    lines = ["| table | pairs complete (sampled / full) | base runs | fusion, selection and evaluation | total "
             "| earlier sittings, not itemised |", "|---" * 6 + "|"]
    for name, timing in timings.items():
        if timing is None:
            lines.append(f"| {name} | {NOT_RUN} | | | | |")
            continue
        hours = [f"{timing[k] / 3600:.2f} h" for k in ("base_runs_seconds", "methods_seconds", "total_seconds")]
        earlier = timing.get("earlier_not_itemised")
        before = (f"{(earlier['base_runs_seconds'] + earlier['methods_seconds']) / 3600:.2f} h "
                  f"({earlier['pairs_complete']} pairs)" if earlier else "")
        done = f"{timing['pairs_complete']} / {timing.get('pairs_complete_full', '-')} of {timing['pairs_requested']}"
        lines.append(f"| {name} | {done} | " + " | ".join(hours) + f" | {before} |")
    return lines


def code_table(rows: pd.DataFrame) -> list[str]:
    """Which dynrec commit(s) trained each cell's base runs (the `trained_with` column) and the epochs validation
    selected for A and B, lowest to highest over seeds; rows written before these columns existed, or by runs
    older than code_version, say unrecorded: numbers from different code or budgets stay apart."""
    code = rows["trained_with"] if "trained_with" in rows else pd.Series("unrecorded", index=rows.index)
    code = code.fillna("unrecorded").astype(str)
    lines = ["| dataset | backbone | base runs trained with (dynrec commit) | selected epoch, A | selected epoch, B |",
             "|---|---|---|---|---|"]
    for (dataset, backbone), group in code.groupby([rows["dataset"], rows["backbone"]]):
        names = sorted({name for value in group for name in value.split("+")})
        cell = rows.loc[group.index]
        epochs = [_epoch_range(cell, column) for column in ("a_best_epoch", "b_best_epoch")]
        lines.append(f"| {dataset} | {backbone} | {', '.join(names)} | {epochs[0]} | {epochs[1]} |")
    return lines


def _epoch_range(cell: pd.DataFrame, column: str) -> str:
    """'119-186' over every row of the cell: its seeds, and both protocols where a pair was retrained for one of them
    ('unrecorded' where no row has it, '+ unrecorded' where some seed lacks it)."""
    if column not in cell or "seed" not in cell:
        return "unrecorded"
    known = cell[column].dropna().astype(int)
    if known.empty:
        return "unrecorded"
    text = f"{known.min()}" if known.min() == known.max() else f"{known.min()}-{known.max()}"
    return text + (" + unrecorded" if not cell.groupby("seed")[column].count().all() else "")


def bar_chart(name: str, rows: pd.DataFrame, path: Path) -> None:
    """Grouped bars per dataset (sampled protocol, test): one group per backbone, mean ± std over seeds, and a
    hatched group with the paper's published figures where it has them."""
    table = TABLES[name]
    shown = [m for m in table.methods if m not in ("magnitude", "task-arithmetic", "ties", "dare")]
    rows = rows[rows["protocol"] == "sampled"]
    datasets = list(dict.fromkeys(rows["dataset"]))
    fig, axes = plt.subplots(len(CHARTED), len(datasets), figsize=(max(6.5, 4.5 * len(datasets)), 3.2 * len(CHARTED)),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    width = 0.8 / len(shown)
    for column, dataset in enumerate(datasets):
        mine = rows[rows["dataset"] == dataset]
        groups = list(dict.fromkeys(mine["backbone"]))
        has_paper = any(published(name, dataset, m) for m in shown)
        for row_index, metric in enumerate(CHARTED):
            ax = axes[row_index][column]
            for k, method in enumerate(shown):
                stats = [mine[(mine["backbone"] == g) & (mine["method"] == method)][metric] for g in groups]
                means = [s.mean() if len(s) else np.nan for s in stats]
                stds = [s.std(ddof=1) if len(s) > 1 else 0.0 for s in stats]
                x = np.arange(len(groups)) + (k - (len(shown) - 1) / 2) * width
                ax.bar(x, means, width, yerr=stds, color=colours(k), label=METHODS[method].label, capsize=2)
                paper = published(name, dataset, method)
                if paper:
                    ax.bar(len(groups) + (k - (len(shown) - 1) / 2) * width, paper[metric], width, color=colours(k),
                           hatch="//", edgecolor="black", linewidth=0.5)
            ax.set_xticks(range(len(groups) + has_paper), [*groups, "paper"][: len(groups) + has_paper])
            ax.set_title(f"{dataset}: {metric.upper()}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    columns = min(len(shown), 2 * len(datasets))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    fig.suptitle(f"{table.title.split(' (')[0]}\nsampled protocol, test; mean ± std over seeds; hatched: published",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.035 * -(-len(shown) // columns), 1, 1))  # room for the legend's rows
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _method_notes() -> list[str]:
    grids = [f"`{name}`: " + ", ".join(f"{k} in {list(v)}" for k, v in method.grid.items())
             for name, method in METHODS.items() if len(method.grid) and any(len(v) > 1 for v in method.grid.values())]
    return [
        "- **Base runs**: the DUET/CKI paper setting (last 10 items, BCE with 4 sampled negatives, embedding size 32, "
        "head MLP [32]), early stopping and checkpoint selection on validation (sampled NDCG@10; patience 20 epochs "
        "within 300; it came in with e5435cc for the Douban sets and 3925255 for the others, and cells whose base "
        "runs were trained with an older commit, listed under each table, had patience 5 within 100: too short, "
        "see the discussion). Model A: the static "
        f"run of seed s; model B (Tables 1 and 4): the static run of seed s + {B_SEED_OFFSET}, so no pair reuses "
        "another pair's model A; model B(G) (Table 3): the dynamic model trained on model A's frozen backbone "
        "(`model.dynamic`, `train.init_from` = A's run, `train.freeze_backbone`): its encoder, item embeddings and "
        "static head are exactly A's and only its generator learns. Model A is the static run of `dynrec experiment "
        "dynamic --setting paper` (same config, same cache); that grid's jointly trained dynamic twin is the "
        "static-vs-dynamic comparison, not Table 3's B(G).",
        "- **Fusion** in Tables 1 and 4 fuses A with B offline; what it does not splice comes from A; task "
        "arithmetic, TIES and DARE use model A as base (B's task vector is B - A). In Table 3 every fusion row merges "
        "A's static head W_A with the head B(G) generates for each request, online (the encoder is shared, so "
        "nothing else is merged; biases are the generated ones): averaging, magnitude selection, task arithmetic, "
        "TIES and DARE with W_A as base (task vector W_i - W_A; TIES trims each request's vector by its own "
        "threshold; DARE's seeded masks are shared by every request), CKI soft and hard, and CKI with f_L learned "
        "with B(G) frozen. The output ensemble averages the scores of A and B (or B(G)) and costs two models.",
        "- **Chosen on validation only** (the run's selection protocol and metric; the first in grid order on ties): "
        + "; ".join(grids) + f". Fixed: CKI's 10 bins, DARE's seed 0, learned f_L on `head` tensors for "
        f"{LEARN_EPOCHS} epochs (validation picks the epoch, 0 included). `tensors` is one of {list(TENSORS)} in "
        "Tables 1 and 4; Table 3 merges the head only, so it has no `tensors` option.",
        "- **Table 4** starts one epoch of model A's training from the fused checkpoint (CKI or averaging, as chosen "
        "for Table 1) or from model A itself; the epoch's weights are taken as they are.",
        "- **Protocols**: `sampled` (the paper's headline): the target among 99 items the user never interacted "
        "with, seeded, identical for every method; `full`: all items, the user's earlier items excluded except the "
        "target. Ties count against the target. Test is scored once per method.",
        f"- **Statistics**: mean ± sample standard deviation over seeds. Paired tests per dataset x backbone, pooled "
        f"over seeds (each user's difference averaged over the seeds, then tested over users): a bootstrap over "
        f"users ({RESAMPLES:,} resamples, seed 0, two-sided) and a paired t-test; bold: p < {ALPHA}. \"Best single\" "
        "is the single model with the higher test mean: the harder comparison for CKI. The per-user outcomes "
        "they read are committed in `results/per_user/` (each user's target rank, clipped at 10), so a test can be "
        "rebuilt, or pooled with a later seed, without the run caches.",
        f"- **Published figures**: {SOURCE}; the paper names no backbone per row, and its preprocessing differs.",
        "- **Data**: ML-1M with items of >= 5 interactions, Beauty 5-core; Douban Book and Music have no timestamps, "
        "so a user's sequence is the file's order.",
    ]


def compatibility_section(out_dir: Path, link: Path) -> list[str]:
    """Table 3's compatibility statistics, one row per cell and head layer, from the files that
    scripts/compatibility_maps.py writes to out_dir/table3_compatibility/ (nothing when there are none)."""
    files = sorted((out_dir / "table3_compatibility").glob("*.json"))
    if not files:
        return []
    lines = [
        "### A's static head against the heads B(G) generates, user by user", "",
        "Per user, `scripts/compatibility_maps.py` compares A's static head W_A with the head W_i that B(G) "
        "generates: their relative distance, the entropy gap E(W_i) - E(W_A), the soft map V(generated) averaged "
        "over the layer's positions and its standard deviation across them, and the share of positions hard "
        "splicing takes from W_i (median or mean, "
        "with the 5% and 95% quantiles over users). With two models the parameter-free f_L is sigmoid(|W_i - W_A|), "
        "which stays near 1/2 wherever the two weights differ by much less than 1, so it hardly tells positions "
        "apart; the split is then set by the global term, one number per user and layer from the entropy gap "
        "(f_G favours the higher-entropy tensor). A soft map that is nearly constant makes CKI soft a fixed blend "
        "close to parameter averaging, and a negative entropy gap makes CKI hard keep A's tensor.", "",
        "| cell | split | layer | users | distance / norm of W_A | entropy gap | soft V(generated) | its spread over "
        "positions | hard: share from W_i | file |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def spread(stat: dict, centre: str) -> str:
        q = stat["quantiles"]
        value = stat["mean"] if centre == "mean" else q["0.5"]
        return f"{value:.4f} [{q['0.05']:.4f}, {q['0.95']:.4f}]"

    for path in files:
        record = json.loads(path.read_text())
        cell = path.stem.rsplit("_", 1)[0]
        for layer, stats in record["layers"].items():
            lines.append(f"| {cell} | {record['split']} | {layer} | {record['users']} | "
                         f"{spread(stats['relative_distance'], 'median')} | {spread(stats['entropy_gap'], 'median')} | "
                         f"{spread(stats['soft_share'], 'mean')} | {spread(stats['soft_spread'], 'median')} | "
                         f"{stats['hard_share']['mean']:.4f} | "
                         f"[json]({link / 'table3_compatibility' / path.name}), "
                         f"[png]({link / 'table3_compatibility' / path.with_suffix('.png').name}) |")
    return [*lines, "", "Distance, entropy gap and spread: median [5%, 95%] over users; soft map: mean [5%, 95%]; "
            "hard: mean.", ""]


def render(out_dir: str | Path, report: str | Path) -> Path:
    """Write `report` (Markdown) and one PNG chart per table into out_dir from what out_dir holds."""
    out_dir, report = Path(out_dir), Path(report)
    loaded = {name: _read(out_dir, name) for name in TABLES}
    quick = any(rows is not None and (rows["budget"] == "quick").any() for rows, _, _ in loaded.values())
    link = Path(os.path.relpath(out_dir, report.parent))
    machine = next((t["machine"] for _, _, t in loaded.values() if t), None)
    text = ["# Reproducing the CKI paper's tables", ""]
    if quick:
        text += [QUICK_BANNER, ""]
    text += ["Produced by `dynrec reproduce all` (cached: an interrupted run resumes; `--cached-only` renders what "
             f"exists) into `{out_dir}/`; this page is rendered from those files alone by `dynrec reproduce report`. "
             "Cells without results say \"not run yet\"."
             + (" The discussion closes the page." if (out_dir / DISCUSSION).is_file() else ""),
             "", *_method_notes(), "", "## Time per table", "",
             *timing_table({name: t for name, (_, _, t) in loaded.items()}), "",
             "Seconds as recorded when each part was computed, summed over the cells each table itemises; base runs "
             "shared between tables count in each, and a pair's two runs add up even where they trained side by side "
             "(`--jobs`). Each cell keeps every method's selection and per-protocol seconds (`by_method`), so a "
             "call that reads back fewer methods or protocols leaves the others' as recorded; a cell recorded before "
             "methods were itemised keeps its old total as a floor. The last column holds "
             "what sittings before per-cell records "
             "logged as one total: it may include cells recomputed (and itemised) since, so it is not added in. "
             + (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
                f"{machine['torch_threads']} thread(s) for evaluation." if machine else "")]
    for name, (rows, tests, _) in loaded.items():
        text += ["", f"## {TABLES[name].title}", "", *([TABLE_NOTES[name], ""] if name in TABLE_NOTES else [])]
        if rows is not None:
            bar_chart(name, rows, out_dir / f"{name}_sampled.png")
            text += [f"![{name}]({link / f'{name}_sampled.png'})", ""]
        paper = published_table(name)
        if len(paper) > 2:  # a header and its rule: the paper has no such table
            text += ["### Published (the paper's own preprocessing and models)", "", *paper, ""]
        for protocol in ("sampled", "full"):
            text += [f"### {protocol} protocol, test" + (" (the paper's)" if protocol == "sampled" else ""), "",
                     *results_table(name, rows, protocol, quick), ""]
        if tests is not None:
            for protocol in ("sampled", "full"):
                text += [f"### Paired tests, {protocol} protocol", "", *tests_table(tests, protocol), ""]
            text += ["### Where the tested methods win and where not (computed, sampled NDCG@10)", "",
                     *wins_and_losses(tests), ""]
            if name == "table3":
                text += ["### The issue's target: CKI above A, B(G), averaging and ensemble, p < 0.05 (both tests)", "",
                         *target_check(tests), "", *compatibility_section(out_dir, link)]
        if rows is not None:
            text += ["", "### Code and training length", "", "The dynrec commit(s) that trained each cell's base "
                     "runs, and the epochs validation selected for models A and B, over its seeds. Unrecorded: the "
                     "row, or its runs, predate this record (`--cached-only` fills it in from cached runs).", "",
                     *code_table(rows)]
    if (out_dir / DISCUSSION).is_file():  # written by hand from the tables above, committed beside them
        text += ["", "## Discussion: where CKI wins, where it does not, and why", "",
                 (out_dir / DISCUSSION).read_text().strip()]
    atomic_write(report, lambda tmp: tmp.write_text("\n".join(text).rstrip() + "\n"))
    return report
