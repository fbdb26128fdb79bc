"""A most-popular list (training counts, the same for every user) under both protocols, beside Table 3's model A.

The floor any sequential model should clear: on each paper dataset's test split it ranks items by how often
they occur in the training part of the sequences, evaluated by dynrec.evaluate like every model. Writes
<out>.json and a markdown table that puts each backbone's model A (Table 3, mean over the seeds in
docs/results/table3.csv) beside it.

    python scripts/most_popular.py [--datasets ml-1m beauty douban-book douban-music]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from dynrec.checkpoint import atomic_write, write_json
from dynrec.evaluate import evaluate, public
from dynrec.experiments.dynamic import twin_config
from dynrec.machine import machine_info
from dynrec.serve.bundle import training_popularity
from dynrec.train import data_for
from scripts.top_of_ranking import PopularityScorer

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("ml-1m", "beauty", "douban-book", "douban-music")
BACKBONES = ("gru4rec", "sasrec", "din")
METRICS = ("ndcg@10", "hr@10", "uauc")


def model_a_means(table: Path) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(dataset, backbone, protocol) -> (mean NDCG@10 of Table 3's model A, seeds) from the committed CSV."""
    values = defaultdict(list)
    with table.open() as f:
        for row in csv.DictReader(f):
            if row["method"] == "model-a":
                values[(row["dataset"], row["backbone"], row["protocol"])].append(float(row["ndcg@10"]))
    return {key: (sum(v) / len(v), len(v)) for key, v in values.items()}


def markdown(results: dict, models: dict, command: str) -> str:
    """One row per dataset: the most-popular list, then each backbone's model A, under each protocol."""
    lines = ["# A most-popular list against Table 3's model A (NDCG@10, test split)", "",
             f"`{command}`; model A: mean over the seeds in docs/results/table3.csv (seed count in brackets).", "",
             "| dataset | protocol | most popular | " + " | ".join(f"{b} A" for b in BACKBONES) + " |",
             "|---|---|---:|" + "---:|" * len(BACKBONES)]
    for dataset, protocols in results.items():
        for protocol, metrics in protocols.items():
            cells = []
            for backbone in BACKBONES:
                mean, seeds = models.get((dataset, backbone, protocol), (None, 0))
                cells.append("not run" if mean is None else f"{mean:.4f} ({seeds})")
            lines.append(f"| {dataset} | {protocol} | {metrics['ndcg@10']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "most_popular"),
                        help="output path without extension")
    args = parser.parse_args()
    results, stats = {}, {}
    for dataset in args.datasets:
        data = data_for(twin_config(dataset, "sasrec", 0, "paper", "static")[0])
        metrics = public(evaluate(PopularityScorer(training_popularity(data)), data, "test", ("full", "sampled")))
        results[dataset] = {p: {k: v for k, v in m.items() if k in METRICS} for p, m in metrics.items()}
        stats[dataset] = {"users": data.n_users, "items": data.n_items}
        print(dataset, results[dataset], flush=True)
    command = " ".join(["python scripts/most_popular.py", "--datasets", *args.datasets])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), {"command": command, "datasets": stats, "most_popular": results,
                                          "machine": machine_info()})
    text = markdown(results, model_a_means(ROOT / "docs" / "results" / "table3.csv"), command)
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
