"""What the generator costs: training step time and inference latency, dynamic vs static, side by side.

Every variant of a backbone is timed in the same process, interleaved round by round (static, then each
dynamic form, then static again, ...), and medians are compared, so a busy neighbour process moves all
variants alike. Shapes follow the DUET/CKI paper setting on ML-1M: 3,416 items, a window of 10 items,
embedding size 32, BCE with 4 negatives, training batch 1024; inference scores all items for a batch of
1 and of 256 requests.

    python benchmarks/dynamic_cost.py [--rounds 15] [--out benchmarks/results/dynamic_cost.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dynrec.checkpoint import write_json
from dynrec.config import ModelConfig
from dynrec.machine import machine_info
from dynrec.models import build_model

ROOT = Path(__file__).resolve().parent.parent
N_ITEMS, WINDOW, D, TRAIN_BATCH, NEGATIVES = 3416, 10, 32, 1024, 4
VARIANTS = {  # name -> model config overrides
    "static": {},
    "dynamic_gru_full": {"dynamic": True, "generator_source": "gru", "generator_form": "full"},
    "dynamic_gru_lowrank": {"dynamic": True, "generator_source": "gru", "generator_form": "lowrank"},
    "dynamic_backbone_full": {"dynamic": True, "generator_source": "backbone", "generator_form": "full"},
    "dynamic_backbone_lowrank": {"dynamic": True, "generator_source": "backbone", "generator_form": "lowrank"},
}


def _config(backbone: str, overrides: dict) -> ModelConfig:
    return ModelConfig(name=backbone, hidden_size=D, max_len=WINDOW, dropout=0.1, head_hidden=[D],
                       attention_hidden=[64, 32], code_size=32, generator_window=WINDOW, **overrides)


def _inputs(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N_ITEMS + 1, (batch, WINDOW), generator=g)


def _timer(fn: Callable[[], object]) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def measure(backbone: str, rounds: int) -> dict:
    """Median seconds per training step and per inference call for every variant of one backbone."""
    models, optimizers = {}, {}
    for name, overrides in VARIANTS.items():
        if backbone == "din" and "backbone" in name:
            continue  # DIN has no candidate-free state to generate from
        torch.manual_seed(0)
        models[name] = build_model(_config(backbone, overrides), N_ITEMS)
        optimizers[name] = torch.optim.Adam(models[name].parameters(), lr=1e-3)
    seq, targets = _inputs(TRAIN_BATCH), _inputs(TRAIN_BATCH, 1)[:, 0]
    negatives = _inputs(TRAIN_BATCH, 2)[:, :NEGATIVES]
    requests = {1: _inputs(1, 3), 256: _inputs(256, 4)}

    def step(name: str) -> None:
        model = models[name].train()
        loss = model.training_loss(seq, targets, "bce", negatives)
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()

    def infer(name: str, batch: int) -> None:
        model = models[name].eval()
        with torch.inference_mode():
            model.score_all(requests[batch])

    times: dict[str, dict[str, list[float]]] = {n: {"train_step": [], "infer_b1": [], "infer_b256": []} for n in models}
    for index in range(rounds + 2):  # two warm-up rounds
        for name in models:
            t_step = _timer(lambda n=name: step(n))
            t_1 = min(_timer(lambda n=name: infer(n, 1)) for _ in range(5))
            t_256 = _timer(lambda n=name: infer(n, 256))
            if index >= 2:
                times[name]["train_step"].append(t_step)
                times[name]["infer_b1"].append(t_1)
                times[name]["infer_b256"].append(t_256)
    report = {}
    for name, series in times.items():
        medians = {key: statistics.median(values) for key, values in series.items()}
        report[name] = {f"{key}_ms": round(1000 * value, 3) for key, value in medians.items()}
        report[name]["n_parameters"] = sum(p.numel() for p in models[name].parameters())
    for name in report:
        if name != "static":
            report[name]["overhead_vs_static"] = {
                key: round(report[name][f"{key}_ms"] / report["static"][f"{key}_ms"] - 1, 3)
                for key in ("train_step", "infer_b1", "infer_b256")
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "gru4rec", "din"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/dynamic_cost.json"))
    args = parser.parse_args()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {"items": N_ITEMS, "window": WINDOW, "hidden_size": D, "train_batch": TRAIN_BATCH,
                    "negatives": NEGATIVES, "loss": "bce", "inference": "score all items"},
        "target": "the generator adds at most 25% to training step time and to inference latency",
        "backbones": {backbone: measure(backbone, args.rounds) for backbone in args.backbones},
        "machine": machine_info(),
    }
    write_json(Path(args.out), result)
    for backbone, report in result["backbones"].items():
        for name, values in report.items():
            extra = values.get("overhead_vs_static", "")
            print(f"{backbone:8s} {name:26s} step {values['train_step_ms']:8.2f} ms  b1 {values['infer_b1_ms']:7.2f} "
                  f"ms  b256 {values['infer_b256_ms']:8.2f} ms  {extra}")


if __name__ == "__main__":
    main()
