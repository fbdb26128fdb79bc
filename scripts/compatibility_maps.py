"""How compatible are a Table 3 pair's static head and the heads its generator makes, user by user?

For every user of one split (the history evaluation reads), model B(G) generates a head and online CKI
compares it with model A's static head, layer by layer: the relative distance ||W_i - W_A|| / ||W_A||, the
entropy gap E(W_i) - E(W_A), the soft map V(generated) averaged over the layer's positions and its spread
(standard deviation) across them, and whether hard splicing takes the generated tensor. Reads the cached
pair only (run `dynrec reproduce table3` first); writes quantiles and histograms to <out>.json and a figure
to <out>.png.

    python scripts/compatibility_maps.py --dataset ml-1m --backbone sasrec --seed 0 [--split valid]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from dynrec.checkpoint import atomic_write, write_json
from dynrec.data.batching import history
from dynrec.experiments.tables import TABLES, Context, open_pair
from dynrec.fusion.online import entropy_gaps, splice_per_sample
from dynrec.fusion.online_merge import dense
from dynrec.machine import machine_info
from dynrec.models.base import DotProductRecommender

ROOT = Path(__file__).resolve().parent.parent
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
STATS = ("relative_distance", "entropy_gap", "soft_share", "soft_spread", "hard_share")


def per_user(model: torch.nn.Module, seqs: torch.Tensor, batch: int) -> dict[str, list[np.ndarray]]:
    """Each statistic per head layer, one value per user (batched over users; one entropy pass per batch)."""
    dot_product = isinstance(model.backbone, DotProductRecommender)
    batches = []
    with torch.inference_mode():
        for chunk in torch.split(seqs, batch):
            generated = model.generate(chunk, model.backbone.last_features(chunk) if dot_product else None)
            pairs = [(static, dense(weight)) for (static, _), (weight, _) in
                     zip(model.backbone.head.static_weights(), generated, strict=True)]
            gaps = entropy_gaps(pairs)
            soft = [splice_per_sample(s, g, gap=gap)[1] for (s, g), gap in zip(pairs, gaps, strict=True)]
            hard = [splice_per_sample(s, g, hard=True, gap=gap)[1] for (s, g), gap in zip(pairs, gaps, strict=True)]
            batches.append({
                "relative_distance": [(g - s).flatten(1).norm(dim=1) / s.norm() for s, g in pairs],
                "entropy_gap": [gap.flatten() for gap in gaps],
                "soft_share": [m.flatten(1).mean(1) for m in soft],
                "soft_spread": [m.flatten(1).std(1) for m in soft],  # across the layer's positions
                "hard_share": [m.flatten(1).mean(1) for m in hard],
            })
    return {name: [torch.cat(parts).numpy() for parts in zip(*(b[name] for b in batches), strict=True)]
            for name in STATS}


def summary(values: np.ndarray) -> dict:
    """Mean, quantiles and a 20-bin histogram of one statistic."""
    counts, edges = np.histogram(values, bins=20)
    return {"mean": float(values.mean()), "quantiles": dict(zip(map(str, QUANTILES), np.quantile(values, QUANTILES)
                                                               .round(6).tolist(), strict=True)),
            "histogram": {"counts": counts.tolist(), "edges": edges.round(6).tolist()}}


def plot(stats: dict[str, list[np.ndarray]], title: str, path: Path) -> None:
    """Histograms of the relative distance and the soft share, one column per head layer."""
    layers = len(stats["soft_share"])
    fig, axes = plt.subplots(2, layers, figsize=(4 * layers, 6), squeeze=False)
    for index in range(layers):
        for row, (name, label) in enumerate((("relative_distance", "||W_i - W_A|| / ||W_A||"),
                                             ("soft_share", "mean soft V(generated)"))):
            ax = axes[row][index]
            ax.hist(stats[name][index], bins=40, color="tab:blue" if row == 0 else "tab:purple")
            ax.set_xlabel(label)
            ax.set_ylabel("users")
            ax.set_title(f"head layer {index}")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--root", default=str(ROOT / "runs" / "experiments"))
    parser.add_argument("--out", default=None, help="output path without extension "
                        "(default docs/results/table3_compatibility/<dataset>-<backbone>-s<seed>_<split>)")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pair, _ = open_pair(TABLES["table3"], args.dataset, args.backbone, args.seed, Context(Path(args.root),
                                                                                            cached_only=True))
    if pair is None:
        raise SystemExit(f"no cached Table 3 pair for {args.dataset}/{args.backbone}/seed {args.seed} under "
                         f"{args.root}: run `dynrec reproduce table3 --datasets {args.dataset} --backbones "
                         f"{args.backbone} --seeds {args.seed}` first")
    model = pair.b.eval()
    seqs = torch.as_tensor(history(pair.data, args.split, model.max_len))
    stats = per_user(model, seqs, args.batch)
    out = Path(args.out) if args.out else (ROOT / "docs" / "results" / "table3_compatibility" /
                                           f"{pair.name}_{args.split}")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/compatibility_maps.py", "--dataset", args.dataset, "--backbone",
                        args.backbone, "--seed", str(args.seed), "--split", args.split])
    write_json(out.with_suffix(".json"), {
        "command": command, "pair": [str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d) for d in pair.dirs],
        "split": args.split, "users": len(seqs),
        "layers": {f"layer{i}": {name: summary(stats[name][i]) for name in STATS}
                   for i in range(len(stats["soft_share"]))},
        "machine": machine_info(),
    })
    plot(stats, f"{pair.name}, {args.split}: A's static head vs the heads B(G) generates", out.with_suffix(".png"))
    for i in range(len(stats["soft_share"])):
        print(f"layer{i}: " + ", ".join(f"{name} mean {stats[name][i].mean():.4f}" for name in STATS))


if __name__ == "__main__":
    main()
