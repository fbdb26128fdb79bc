"""Render docs/results/*.json and benchmarks/results/*.json into the README's results section.

Every figure in the README comes from a committed result file through this script; rerun it after a
result lands:  python scripts/render_results.py
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"
FOUNDATION = [  # (file, what the issue asks of it)
    ("ml-1m_sasrec_full.json", "full"),
    ("ml-1m_gru4rec_full.json", "full"),
    ("beauty_sasrec_full.json", "full"),
    ("ml-1m_din_sampled.json", "sampled"),
]
EXTRA_SEEDS = "{stem}_seed*.json"  # further seeds of a row (same config, another train.seed): listed under it


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _hidden(result: dict) -> int:
    return result["config"]["model"]["hidden_size"]


def _row(name: str, result: dict, protocol: str) -> str:
    test = result["test"][protocol]
    return (
        f"| {result['dataset']['name']} | {result['model']} | {_hidden(result)} | {result['seed']} | {protocol} | "
        f"{test['ndcg@10']:.4f} | "
        f"{test['hr@10']:.4f} | {test['ndcg@5']:.4f} | {test['hr@5']:.4f} | "
        f"{result['epochs']} ({result['selection']['best_epoch']}) | {result['seconds_per_epoch']:.1f} "
        f"({result['machine']['torch_threads']} thr) | "
        f"{result['train_seconds'] / 60:.0f} min | [json](docs/results/{name}) |"
    )


def _over_seeds(results: list[dict], protocol: str) -> str:
    """One line: each test metric's mean and sample standard deviation over the seeds of a row."""
    first = results[0]
    seeds = ", ".join(str(r["seed"]) for r in results)
    parts = []
    for metric in ("ndcg@10", "hr@10"):
        values = [r["test"][protocol][metric] for r in results]
        parts.append(f"{metric.upper()} {statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}")
    name = f"{first['dataset']['name']} {first['model']} hidden {_hidden(first)}"
    return f"{name} ({protocol}) over seeds {seeds}: {', '.join(parts)}."


def foundation_table() -> list[str]:
    """The foundation runs, one row per seed (extra seeds from `<stem>_seed<s>.json`), then means over seeds."""
    lines = [
        "| dataset | model | hidden | seed | protocol | NDCG@10 | HR@10 | NDCG@5 | HR@5 | epochs (best) | s/epoch "
        "| train time | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    means = []
    for name, protocol in FOUNDATION:
        result = _load(ROOT / "docs/results" / name)
        if result is None:
            dataset, model, _ = name.removesuffix(".json").split("_")
            lines.append(f"| {dataset} | {model} | | | {protocol} | not run yet | | | | | | | |")
            continue
        lines.append(_row(name, result, protocol))
        results = [result]
        extras = {path.name: _load(path) for path in (ROOT / "docs/results").glob(
            EXTRA_SEEDS.format(stem=name.removesuffix(".json")))}
        for extra, loaded in sorted(extras.items(), key=lambda item: item[1]["seed"]):  # seed 10 after seed 2
            results.append(loaded)
            lines.append(_row(extra, loaded, protocol))
        if len(results) > 1:
            means.append(_over_seeds(results, protocol))
    return lines + ([""] + [f"Mean +- sample standard deviation: {m}" for m in means] if means else [])


def benchmark_lines() -> list[str]:
    lines = []
    peer = _load(ROOT / "benchmarks/results/recbole_peer.json")
    if peer is not None:
        r, d, p = peer["recbole"], peer["dynrec"], peer["ndcg_delta_p_value"]
        lines += [
            "",
            "RecBole peer (ml-100k, same leave-one-out split, same sizes, both scored by dynrec's full ranking; "
            "[json](benchmarks/results/recbole_peer.json)):",
            "",
            "| | NDCG@10 | HR@10 | s/epoch | epochs |",
            "|---|---|---|---|---|",
            f"| RecBole 1.2.1 SASRec | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['seconds_per_epoch']:.1f} | "
            f"{r['epochs']} |",
            f"| dynrec SASRec | {d['ndcg@10']:.4f} | {d['hr@10']:.4f} | {d['seconds_per_epoch']:.2f} | {d['epochs']} |",
            "",
            f"RecBole's seconds per epoch / dynrec's: **{peer['ratio_seconds_per_epoch']:.1f}x**. NDCG@10, dynrec - "
            f"RecBole: **{peer['ndcg_delta']:+.4f}** (dynrec {'at or above' if peer['ndcg_delta'] >= 0 else 'below'} "
            f"RecBole; paired over {p['users']:,} test users, bootstrap p = {p['paired_bootstrap']:.2f}, "
            f"t-test p = {p['paired_t_test']:.2f}). Both train on every training target once per epoch "
            f"({d['training_targets_per_epoch']:,}): RecBole as one row per prefix ({r['batches_per_epoch']} "
            f"batches), dynrec as {d['training_rows_per_epoch']:,} windows of up to "
            f"{peer['shared_settings']['max_len']} targets ({d['batches_per_epoch']} batches, drawn at random: chosen "
            "on validation among four variants of dynrec's side, "
            "[tuning record](benchmarks/results/recbole_peer_tuning.md); RecBole's other settings are its defaults, "
            "not tuned). The difference is within noise on 943 users; seconds per epoch come from different "
            "sittings of a shared VM (dynrec's with three other jobs running), so the ratio is approximate.",
        ]
    speed = _load(ROOT / "benchmarks/results/eval_speed.json")
    if speed is not None:
        lines += [
            "",
            f"Full-ranking evaluation of the ML-1M test set ({speed['dataset']['users']:,} users x "
            f"{speed['dataset']['items']:,} items, SASRec L = {speed['max_len']}): median "
            f"**{speed['median_seconds']} s** ([json](benchmarks/results/eval_speed.json)).",
        ]
    sizes = _load(ROOT / "benchmarks/results/eval_speed_hidden.json")
    if sizes is not None:
        timed = sizes["hidden_sizes"]
        lines[-1] += (
            " Fresh models timed side by side in one run (`" + sizes["command"] + "`; [json](benchmarks/results/"
            "eval_speed_hidden.json)): " + ", ".join(
                f"hidden {hidden} {row['median_seconds']} s ({row['time_vs_first']}x)" for hidden, row in timed.items()
            ) + "."
        )
    din = _load(ROOT / "benchmarks/results/din_attention.json")
    if din is not None:
        lines += [
            "",
            f"DIN full ranking ({din['setting']['items']:,} items, window {din['setting']['window']}): "
            f"{din['users_per_second']['many']} users/s with the folded attention inference uses against "
            f"{din['users_per_second']['summed']} with the summed one, **{din['speedup_many_over_summed']}x**; "
            "scoring evaluation's 512 users in blocks instead of all at once, "
            f"**{din['blocks_512_users']['full']['speedup_blocks_over_one_block']}x** per user-item in full ranking "
            f"and **{din['blocks_512_users']['sampled']['speedup_blocks_over_one_block']}x** in the sampled protocol "
            f"(same run, `{din['command']}`; [json](benchmarks/results/din_attention.json)).",
        ]
    machine = next((r["machine"] for r in map(_load, sorted((ROOT / "docs/results").glob("*.json"))) if r), None)
    if machine is not None:
        lines += ["", f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, no GPU."]
    return lines


def main() -> None:
    readme = ROOT / "README.md"
    block = "\n".join([START, *foundation_table(), *benchmark_lines(), END])
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {START} ... {END} block to fill")
    readme.write_text(pattern.sub(lambda _: block, text))


if __name__ == "__main__":
    main()
