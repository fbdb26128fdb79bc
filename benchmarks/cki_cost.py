"""What CKI costs: the online layer against the dynamic model it wraps, and offline fusion of two checkpoints.

Online: a dynamic SASRec in the DUET/CKI paper setting (3,416 items, window 10, hidden 32, head [32], GRU
generator, full form) and the same model wrapped in OnlineCKI (soft and hard), scoring all items for a
batch of 256 requests (throughput) and of 1 request (latency). Variants are timed in one process,
interleaved round by round in a rotating order, so a busy neighbour process moves them alike. A ratio is
the median over rounds of that round's ratio (each round times the dynamic model and both CKI variants
within a few milliseconds of each other, so drifts of the machine's speed cancel); `ratio_of_medians`
gives the ratio of the median times as well.
Offline: two ML-1M-sized SASRec checkpoints (3,417 x 64 item embeddings, 2 blocks, hidden 64, history 200,
head [64]; random weights, or the trained checkpoints given with --checkpoints) fused by every method, over
the head and over every tensor; only the fusion itself is timed (reading and writing files are not).
Breakdown: the online layer's parts at batch 256, and single elementwise passes over one layer's weights.

With --repeats R the online measurement runs R times under each of two allocator settings, alternating,
each time in a fresh process, and `online_repeats` keeps every repeat's ratios with their spread. Under
glibc's defaults the batch-256 ratio of one process can differ by 0.2 from the next one's: a freed 1 MB
temporary may go back to the kernel and fault its pages in again on the next request, as many times as the
allocator's adaptive thresholds decide. The second setting fixes those thresholds (FIXED_MALLOC, environment
variables read when a process starts), so temporaries are reused from the heap in every process alike.

    python benchmarks/cki_cost.py [--rounds 15] [--repeats 1] [--checkpoints A B] [--out ...cki_cost.json]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dynrec.checkpoint import write_json
from dynrec.config import ModelConfig
from dynrec.fusion import METHODS, OnlineCKI, fuse
from dynrec.fusion.files import read_state_dict
from dynrec.fusion.online import entropy_gaps, splice_per_sample
from dynrec.machine import machine_info
from dynrec.models import build_model

ROOT = Path(__file__).resolve().parent.parent
N_ITEMS, WINDOW, D = 3416, 10, 32
# glibc: serve allocations under 64 MiB from the heap and keep up to 256 MiB of freed memory, instead of the
# adaptive thresholds that may hand a request's temporaries back to the kernel after each call
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
ALLOCATORS = {"glibc_default": {}, "glibc_fixed_thresholds": FIXED_MALLOC}


def _timer(fn: Callable[[], object]) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def online(rounds: int) -> dict:
    """Median ms per score_all call at batch 256 and batch 1: dynamic vs OnlineCKI (soft, hard)."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="sasrec", hidden_size=D, max_len=WINDOW, head_hidden=[D], dynamic=True,
                      generator_source="gru", generator_form="full", generator_window=WINDOW, code_size=32)
    dynamic = build_model(cfg, N_ITEMS).eval()
    models = {"dynamic": dynamic, "online_cki_soft": OnlineCKI(dynamic).eval(),
              "online_cki_hard": OnlineCKI(dynamic, hard=True).eval()}
    g = torch.Generator().manual_seed(1)
    requests = {b: torch.randint(1, N_ITEMS + 1, (b, WINDOW), generator=g) for b in (1, 256)}
    times: dict[str, dict[int, list[float]]] = {name: {1: [], 256: []} for name in models}
    names = list(models)
    with torch.inference_mode():
        for index in range(rounds + 2):  # two warm-up rounds
            for name in names[index % 3 :] + names[: index % 3]:  # each variant first, second and third in turn
                model = models[name]
                t_256 = _timer(lambda m=model: m.score_all(requests[256]))
                t_1 = min(_timer(lambda m=model: m.score_all(requests[1])) for _ in range(5))
                if index >= 2:
                    times[name][256].append(t_256)
                    times[name][1].append(t_1)
    report = {}
    for name, series in times.items():
        b256, b1 = statistics.median(series[256]), statistics.median(series[1])
        report[name] = {"b256_ms": round(1000 * b256, 3), "b256_requests_per_s": round(256 / b256, 1),
                        "b1_ms": round(1000 * b1, 3)}
    base = times["dynamic"]
    for name in ("online_cki_soft", "online_cki_hard"):
        mine = times[name]
        report[name]["throughput_vs_dynamic"] = round(statistics.median(
            d / c for d, c in zip(base[256], mine[256], strict=True)), 3)
        report[name]["latency_vs_dynamic"] = round(statistics.median(
            c / d for d, c in zip(base[1], mine[1], strict=True)), 3)
        report[name]["ratio_of_medians"] = {
            "throughput": round(report["dynamic"]["b256_ms"] / report[name]["b256_ms"], 3),
            "latency": round(report[name]["b1_ms"] / report["dynamic"]["b1_ms"], 3)}
    return report


def in_fresh_process(fn: Callable[[int], dict], rounds: int, env: dict[str, str]) -> dict:
    """fn(rounds) in a new interpreter (spawned, with `env` added to its environment), so no repeat inherits
    another's heap and the allocator reads its settings afresh."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(fn, (rounds,))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def spread(repeats: list[dict]) -> dict:
    """Each CKI variant's ratios over the repeats (in the order soft throughput sorts them), with min and max."""
    report: dict = {"repeats": len(repeats)}
    for name in ("online_cki_soft", "online_cki_hard"):
        for ratio in ("throughput_vs_dynamic", "latency_vs_dynamic"):
            values = [r[name][ratio] for r in repeats]
            report[f"{name}_{ratio}"] = {"each": values, "min": min(values), "max": max(values)}
    return report


def breakdown(rounds: int) -> dict:
    """Median ms of the online layer's parts at batch 256 (the weights one request batch generates): the
    entropies of both head layers, the soft and the hard splice of both, and single elementwise passes over
    one layer's B x in x out values, which set the floor of the soft splice (4 transcendental passes)."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="sasrec", hidden_size=D, max_len=WINDOW, head_hidden=[D], dynamic=True,
                      generator_source="gru", generator_form="full", generator_window=WINDOW, code_size=32)
    model = build_model(cfg, N_ITEMS).eval()
    seq = torch.randint(1, N_ITEMS + 1, (256, WINDOW), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        generated = model.generate(seq, model.backbone.last_features(seq))
        pairs = [(static, weight) for (static, _), (weight, _) in
                 zip(model.backbone.head.static_weights(), generated, strict=True)]
        gaps = entropy_gaps(pairs)
        layer = pairs[0][1]
        bins = torch.randint(0, 10, (len(layer), layer[0].numel()))  # one row of bin indices per sample
        ones = torch.ones((), dtype=torch.int32).expand(bins.shape)
        parts: dict[str, Callable[[], object]] = {
            "generate_head_weights": lambda: model.generate(seq, model.backbone.last_features(seq)),
            "entropy_gaps_all_layers": lambda: entropy_gaps(pairs),
            "soft_splice_all_layers": lambda: [splice_per_sample(s, w, gap=g)
                                               for (s, w), g in zip(pairs, gaps, strict=True)],
            "hard_splice_all_layers": lambda: [splice_per_sample(s, w, hard=True, gap=g)
                                               for (s, w), g in zip(pairs, gaps, strict=True)],
            "one_exp_pass": lambda: torch.exp(layer),
            "one_sigmoid_pass": lambda: torch.sigmoid(layer),
            "one_mul_pass": lambda: layer * layer,
            "one_histogram_count_pass": lambda: torch.zeros(len(layer), 10, dtype=torch.int32).scatter_add_(
                1, bins, ones),
        }
        times: dict[str, list[float]] = {name: [] for name in parts}
        for index in range(rounds + 2):
            for name, fn in parts.items():
                if index >= 2:
                    times[name].append(_timer(fn))
                else:
                    fn()
    report = {"values_per_layer": layer.numel(), "layers": len(pairs)}
    report.update({f"{name}_ms": round(1000 * statistics.median(series), 3) for name, series in times.items()})
    return report


def offline(rounds: int, checkpoints: list[str] | None) -> dict:
    """Median seconds to fuse two ML-1M-sized SASRec state dicts, per method and tensor selection."""
    if checkpoints:
        states = [read_state_dict(path) for path in checkpoints]
    else:
        cfg = ModelConfig(name="sasrec", hidden_size=64, num_layers=2, max_len=200, head_hidden=[64])
        states = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            states.append(build_model(cfg, 3416).state_dict())
    report = {"models": checkpoints or "random", "tensors": len(states[0]),
              "parameters": sum(t.numel() for t in states[0].values())}
    for method in METHODS:
        for tensors in ("head", "all"):
            seconds = statistics.median(_timer(lambda m=method, t=tensors: fuse(states, m, t)) for _ in range(rounds))
            report[f"{method} --tensors {tensors}"] = round(seconds, 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--checkpoints", nargs="+", help="trained checkpoints to fuse offline (default: random)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/cki_cost.json"))
    parser.add_argument("--repeats", type=int, default=1, help="online measurements per allocator setting")
    args = parser.parse_args()
    measured: dict[str, list[dict]] = {name: [] for name in ALLOCATORS}
    for _ in range(args.repeats):  # alternating, so a drift of the machine reaches both settings alike
        for name, env in ALLOCATORS.items():
            measured[name].append(in_fresh_process(online, args.rounds, env))
    by_soft = {name: sorted(runs, key=lambda r: r["online_cki_soft"]["throughput_vs_dynamic"])
               for name, runs in measured.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": torch.get_num_threads(),
        "setting": {"items": N_ITEMS, "window": WINDOW, "hidden_size": D, "head_hidden": [D], "generator": "gru, full",
                    "inference": "score all items", "offline": "two SASRec, 3,417 x 64 embeddings, 2 blocks, L=200"},
        "target": "online CKI: >= 0.8x the dynamic model's throughput at batch 256, <= 1.3x its latency at batch 1; "
                  "offline fusion of two ML-1M-sized SASRec checkpoints <= 2 s",
        "allocators": {name: env or "glibc's adaptive mmap and trim thresholds" for name, env in ALLOCATORS.items()},
        # per allocator setting, the repeat with the median soft throughput ratio
        "online": {name: runs[len(runs) // 2] for name, runs in by_soft.items()},
        "online_repeats": {name: spread(runs) for name, runs in by_soft.items()},
        "online_breakdown_b256": breakdown(args.rounds),
        "offline_seconds": offline(max(3, args.rounds // 5), args.checkpoints),
        "machine": machine_info(),
    }
    write_json(Path(args.out), result)
    for allocator, report in result["online"].items():
        for name, values in report.items():
            print(f"{allocator} {name:16s} {values}")
    print("breakdown", result["online_breakdown_b256"])
    for name, value in result["offline_seconds"].items():
        print(f"offline {name:32s} {value}")


if __name__ == "__main__":
    main()
