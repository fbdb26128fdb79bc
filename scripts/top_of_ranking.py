"""Where in the ranking do two models and their merges differ? Full-ranking top 10 against the whole order.

For each seed's cached pair (Table 1: two static runs; Table 3: A and B(G)), scores every test user's whole
catalogue with model A, model B and, where Table 4 wrote them, the pair's fused checkpoints (averaging, CKI
soft). Beside NDCG@10 and hits@10 it reports the per-user AUC over the whole catalogue (the target against
every unseen item), how popular the recommended top 10 is (training-count percentile), how many distinct items
the top-10 lists use, and the per-user rank correlation of the scores with training popularity. A
most-popular ranker is scored under both protocols for reference. Reads cached runs only; writes <out>.json.

    python scripts/top_of_ranking.py --dataset douban-music --backbone din --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dynrec.checkpoint import load_checkpoint, write_json
from dynrec.data.batching import history
from dynrec.data.preprocess import SequenceData
from dynrec.evaluate import evaluate, mask_seen, public, rank_metrics
from dynrec.experiments.tables import TABLES, Context, open_pair
from dynrec.machine import machine_info
from dynrec.serve.bundle import training_popularity

ROOT = Path(__file__).resolve().parent.parent
FUSED = ("average", "cki")
TOP = 10


class PopularityScorer:
    """Scores every item by its training count, whatever the history (the most-popular baseline)."""

    max_len = 1

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = torch.as_tensor(counts, dtype=torch.float32)

    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        return self.counts.repeat(len(seq), 1)

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.counts[candidates]


def rank_correlation(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman correlation of each row of scores with one reference vector (ranks, ties broken by order)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        r = x.sort(stable=True, dim=-1).indices.argsort(-1).double()
        return (r - r.mean(-1, keepdim=True)) / r.std(-1, keepdim=True)
    return (ranks(scores) * ranks(reference)[None]).mean(-1) * scores.shape[-1] / (scores.shape[-1] - 1)


@torch.inference_mode()
def profile(model: torch.nn.Module, data: SequenceData, counts: np.ndarray, batch: int) -> dict:
    """Full-ranking statistics of one model over every test user (unseen items only, the target kept)."""
    items = counts[1:]
    percentile = torch.as_tensor(np.searchsorted(np.sort(items), items) / (len(items) - 1))  # share less popular
    log_counts = torch.as_tensor(np.log1p(counts[1:]), dtype=torch.float64)
    collected, top_pop, corr, shown = [], [], [], []
    for lo in range(0, data.n_users, batch):
        users = np.arange(lo, min(lo + batch, data.n_users))
        seq = torch.as_tensor(history(data, "test", model.max_len, users))
        scores = model.score_all(seq).double()
        corr.append(rank_correlation(scores[:, 1:], log_counts))
        scores, target_score = mask_seen(scores, data, "test", users)
        scores = scores[:, 1:]
        ranks = (scores >= target_score).sum(1) - 1  # ties count against the target, as in dynrec.evaluate
        collected.append(rank_metrics(ranks, [TOP], torch.isfinite(scores).sum(1)))
        top = scores.topk(TOP, dim=1).indices
        top_pop.append(percentile[top].mean(1))
        shown.append(top.flatten())
    metrics = {name: torch.cat([c[name] for c in collected]) for name in (f"ndcg@{TOP}", f"hr@{TOP}", "uauc")}
    return {"ndcg@10": round(float(metrics["ndcg@10"].mean()), 6), "hits@10": int(metrics["hr@10"].sum()),
            "uauc": round(float(metrics["uauc"].mean()), 6),
            "top10_popularity_percentile": round(float(torch.cat(top_pop).mean()), 4),
            "distinct_items_in_top10": int(torch.cat(shown).unique().numel()),
            "score_popularity_spearman": round(float(torch.cat(corr).mean()), 4)}


def fused_dirs(root: Path, pair_name: str, pair_dirs: tuple[Path, Path]) -> dict[str, Path]:
    """The pair's cached fused checkpoints (written by Table 4's runs) whose inputs are the pair's two runs."""
    inputs = [str(d.resolve()) for d in pair_dirs]
    found = {}
    for method in FUSED:
        dirs = [d for d in sorted((root / "fused").glob(f"{pair_name}-{method}-*"))
                if [str((ROOT / m).resolve()) for m in json.loads((d / "fusion.json").read_text())["models"]] == inputs]
        if len(dirs) > 1:
            raise SystemExit(f"several fused {method} checkpoints for {pair_name}: {[d.name for d in dirs]}")
        if dirs:
            found[method] = dirs[0]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--table", default="table1", choices=("table1", "table1-shared-init", "table3"))
    parser.add_argument("--root", default=str(ROOT / "runs" / "experiments"))
    parser.add_argument("--out", default=None, help="output path without extension "
                        "(default docs/results/top_of_ranking/<table>-<dataset>-<backbone>)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    ctx = Context(root, cached_only=True)
    seeds = {}
    popular = None
    for seed in args.seeds:
        pair, _ = open_pair(TABLES[args.table], args.dataset, args.backbone, seed, ctx)
        if pair is None:
            raise SystemExit(f"no cached {args.table} pair for {args.dataset}/{args.backbone}/seed {seed}: run "
                             f"`dynrec reproduce {args.table} --datasets {args.dataset} --backbones {args.backbone} "
                             f"--seeds {seed}` first")
        counts = training_popularity(pair.data)
        if popular is None:
            metrics = public(evaluate(PopularityScorer(counts), pair.data, "test", ("full", "sampled"), (10,)))
            popular = {protocol: {k: v for k, v in values.items() if k in ("ndcg@10", "hr@10", "uauc")}
                       for protocol, values in metrics.items()}
        models = {"model-a": pair.a.eval(), "model-b": pair.b.eval()}
        fused = fused_dirs(root, pair.name, pair.dirs)
        models.update({method: load_checkpoint(d)[0].eval() for method, d in fused.items()})
        seeds[str(seed)] = {name: profile(model, pair.data, counts, args.batch) for name, model in models.items()}
        for name, stats in seeds[str(seed)].items():
            print(f"seed {seed} {name:8s} " + "  ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
    print(f"most popular: {popular}")
    out = Path(args.out) if args.out else (ROOT / "docs" / "results" / "top_of_ranking" /
                                           f"{args.table}-{args.dataset}-{args.backbone}")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/top_of_ranking.py", "--dataset", args.dataset, "--backbone", args.backbone,
                        "--seeds", *map(str, args.seeds), "--table", args.table])
    write_json(out.with_suffix(".json"), {
        "command": command, "users": pair.data.n_users, "most_popular": popular,
        "seeds": seeds, "machine": machine_info()})


if __name__ == "__main__":
    main()
