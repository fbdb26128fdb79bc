"""How long full-ranking evaluation of the ML-1M test set takes (6,040 users x 3,416 items, SASRec L = 200).

The timing covers everything `dynrec.evaluate.evaluate` does: building histories, the forward pass,
scoring all items, masking earlier items and computing the metrics. A checkpoint is used when given
(its weights do not change the cost); otherwise a freshly initialised SASRec of the ML-1M config.

    python benchmarks/eval_speed.py [--checkpoint runs/ml-1m-sasrec] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from dynrec.checkpoint import load_checkpoint, write_json
from dynrec.config import load_config
from dynrec.evaluate import evaluate
from dynrec.machine import machine_info
from dynrec.models import build_model
from dynrec.train import data_for

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained ML-1M run directory (optional)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/eval_speed.json"))
    args = parser.parse_args()
    if args.checkpoint:
        model, cfg, _ = load_checkpoint(args.checkpoint)
    else:
        cfg = load_config(ROOT / "configs/ml-1m/sasrec.yaml")
        model = None
    data = data_for(cfg)
    model = model if model is not None else build_model(cfg.model, data.n_items)
    evaluate(model, data, "test", ["full"], batch_size=args.batch_size)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        metrics = evaluate(model, data, "test", ["full"], batch_size=args.batch_size)
        seconds.append(time.perf_counter() - tic)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dataset": data.stats(),
        "model": cfg.model.name,
        "max_len": cfg.model.max_len,
        "checkpoint": args.checkpoint,
        "protocol": "full",
        "batch_size": args.batch_size,
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 3),
        "users_per_second": round(data.n_users / statistics.median(seconds)),
        "test_ndcg@10": metrics["full"]["ndcg@10"],
        "machine": machine_info(),
    }
    write_json(Path(args.out), result)
    print(f"full-ranking test evaluation: median {result['median_seconds']} s over {args.repeats} runs "
          f"({result['users_per_second']} users/s)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
