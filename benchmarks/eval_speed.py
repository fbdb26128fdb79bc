"""How long full-ranking evaluation of the ML-1M test set takes (6,040 users x 3,416 items, SASRec L = 200).

The timing covers everything `dynrec.evaluate.evaluate` does: building histories, the forward pass,
scoring all items, masking earlier items and computing the metrics. A checkpoint is used when given
(its weights do not change the cost); otherwise a freshly initialised SASRec of the ML-1M config.
`--hidden 64 128` times freshly initialised models of those hidden sizes side by side instead, in
interleaved rounds of one process, and reports each one's cost relative to the first.

    python benchmarks/eval_speed.py [--checkpoint runs/ml-1m-sasrec-seed0] [--repeats 5]
    python benchmarks/eval_speed.py --hidden 64 128 --out benchmarks/results/eval_speed_hidden.json
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
CONFIG = ROOT / "configs/ml-1m/sasrec.yaml"


def timings(model: torch.nn.Module, data, batch_size: int) -> tuple[float, dict]:
    """Seconds of one full-ranking evaluation of the test split, and its metrics."""
    tic = time.perf_counter()
    metrics = evaluate(model, data, "test", ["full"], batch_size=batch_size)
    return time.perf_counter() - tic, metrics


def summary(seconds: list[float], n_users: int) -> dict:
    median = statistics.median(seconds)
    return {"seconds": [round(s, 3) for s in seconds], "median_seconds": round(median, 3),
            "users_per_second": round(n_users / median)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained ML-1M run directory (optional)")
    parser.add_argument("--hidden", type=int, nargs="+", help="compare fresh models of these hidden sizes instead")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/eval_speed.json"))
    args = parser.parse_args()
    if args.checkpoint and args.hidden:
        parser.error("--checkpoint and --hidden exclude each other")
    if args.checkpoint:
        model, cfg, _ = load_checkpoint(args.checkpoint)
        data, models = data_for(cfg), {cfg.model.hidden_size: model}
    else:
        cfg = load_config(CONFIG)
        data, models = data_for(cfg), {}
        for hidden in args.hidden or [cfg.model.hidden_size]:
            torch.manual_seed(0)
            models[hidden] = build_model(load_config(CONFIG, [f"model.hidden_size={hidden}"]).model, data.n_items)
    seconds: dict[int, list[float]] = {hidden: [] for hidden in models}
    metrics = {hidden: timings(model, data, args.batch_size)[1] for hidden, model in models.items()}  # warm-up
    for _ in range(args.repeats):  # interleaved, so a drift of the machine touches every variant alike
        for hidden, model in models.items():
            seconds[hidden].append(timings(model, data, args.batch_size)[0])
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dataset": data.stats(),
        "model": cfg.model.name,
        "max_len": cfg.model.max_len,
        "checkpoint": args.checkpoint,
        "protocol": "full",
        "batch_size": args.batch_size,
    }
    if args.hidden:
        first = statistics.median(seconds[args.hidden[0]])
        result["hidden_sizes"] = {
            str(hidden): {**summary(s, data.n_users), "time_vs_first": round(statistics.median(s) / first, 2)}
            for hidden, s in seconds.items()
        }
    else:
        [(hidden, s)] = seconds.items()
        result.update(hidden_size=hidden, **summary(s, data.n_users))
        result["test_ndcg@10"] = metrics[hidden]["full"]["ndcg@10"]
    result["machine"] = machine_info()
    write_json(Path(args.out), result)
    for hidden, s in seconds.items():
        print(f"hidden {hidden}: full-ranking test evaluation, median {statistics.median(s):.3f} s "
              f"over {args.repeats} runs")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
