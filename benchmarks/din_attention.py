"""What DIN's full ranking costs with either route through its target attention, side by side in one run.

DIN scores every item against every history position through a small MLP, so its full-ranking evaluation is
the dearest of the three backbones. `TargetAttention.scores` sums the first layer's three parts as (B, C, L, a)
tensors; `scores_many` (what inference uses from MANY_CANDIDATES candidates on) folds them into one batched
matmul against per-position matrices. Both score the same users against the whole catalogue in score_all's
chunks (the paper setting: d = 32, window 10, attention [80, 40]), interleaved round by round; the speedup
is the median over rounds of the per-round ratio. `score_all_seconds` is the whole call (inference route)
for scale: the attention is most of it.
Blocks: evaluation's batch of 512 users scored over a 2,048-item catalogue (full) and against 100 candidates
each (sampled), all users in one block against blocks of BLOCK_VALUES (16 users per 512-item chunk, 81
users at 100 candidates), per user-item, interleaved the same way.

    python benchmarks/din_attention.py [--items 12101] [--users 64] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from dynrec.checkpoint import write_json
from dynrec.config import ModelConfig
from dynrec.machine import machine_info
from dynrec.models import build_model, din

ROOT = Path(__file__).resolve().parent.parent
WINDOW, D, CHUNK = 10, 32, 512  # CHUNK: DIN.score_all's items per call


def user_blocks(rounds: int, users: int = 512, items: int = 2048, sampled: int = 100) -> dict:
    """Microseconds per user-item with every user in one block and in BLOCK_VALUES blocks: full ranking
    (score_all) and the sampled protocol's `sampled` candidates (score_candidates)."""
    model = build_model(ModelConfig(name="din", hidden_size=D, max_len=WINDOW, head_hidden=[D]), items).eval()
    g = torch.Generator().manual_seed(2)
    seq = torch.randint(1, items + 1, (users, WINDOW), generator=g)
    cand = torch.randint(1, items + 1, (users, sampled), generator=g)
    calls = {"full": (lambda: model.score_all(seq), items), "sampled": (lambda: model.score_candidates(seq, cand),
                                                                        sampled)}
    sizes = {"one_block": 10**15, "blocks": din.BLOCK_VALUES}
    report = {}
    with torch.inference_mode():
        for protocol, (call, per_user) in calls.items():
            micros: dict[str, list[float]] = {name: [] for name in sizes}
            for index in range(rounds):
                for name in (list(sizes) if index % 2 == 0 else list(sizes)[::-1]):
                    din.BLOCK_VALUES = sizes[name]
                    tic = time.perf_counter()
                    call()
                    micros[name].append(1e6 * (time.perf_counter() - tic) / (users * per_user))
            din.BLOCK_VALUES = sizes["blocks"]
            ratios = [one / blocked for one, blocked in zip(micros["one_block"], micros["blocks"], strict=True)]
            report[protocol] = {"us_per_user_item": {name: [round(m, 3) for m in values]
                                                     for name, values in micros.items()},
                                "speedup_blocks_over_one_block": round(statistics.median(ratios), 2)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12101, help="catalogue size (Beauty 5-core: 12,101)")
    parser.add_argument("--users", type=int, default=64, help="users scored per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the reproductions evaluate with 1)")
    parser.add_argument("--note", default="", help="the conditions of the run (e.g. other jobs on the machine)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/din_attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="din", hidden_size=D, max_len=WINDOW, head_hidden=[D]), args.items).eval()
    seq = torch.randint(1, args.items + 1, (args.users, WINDOW), generator=torch.Generator().manual_seed(1))
    hist = model.item_emb(seq)  # (B, L, d)
    items = torch.arange(1, args.items + 1)
    routes = {"summed": model.attention.scores, "many": model.attention.scores_many}
    seconds: dict[str, list[float]] = {name: [] for name in routes}
    largest = 0.0
    with torch.inference_mode():
        for index in range(args.rounds):
            for name in (list(routes) if index % 2 == 0 else list(routes)[::-1]):
                tic = time.perf_counter()
                for lo in range(0, args.items, CHUNK):
                    routes[name](hist, model.item_emb(items[lo : lo + CHUNK]).expand(len(seq), -1, -1))
                seconds[name].append(time.perf_counter() - tic)
        for lo in range(0, args.items, 4 * CHUNK):  # the two routes agree (a sample of chunks)
            cand = model.item_emb(items[lo : lo + CHUNK]).expand(len(seq), -1, -1)
            largest = max(largest, float((routes["summed"](hist, cand) - routes["many"](hist, cand)).abs().max()))
        tic = time.perf_counter()
        model.score_all(seq)
        whole = time.perf_counter() - tic
    blocks = user_blocks(args.rounds)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = [s / m for s, m in zip(seconds["summed"], seconds["many"], strict=True)]
    report = {
        "command": "python benchmarks/din_attention.py "
                   f"--items {args.items} --users {args.users} --rounds {args.rounds} --threads {args.threads}"
                   + (f' --note "{args.note}"' if args.note else ""),
        "setting": {"items": args.items, "users": args.users, "window": WINDOW, "hidden_size": D,
                    "attention_hidden": model.attention.rest[1].in_features, "threads": torch.get_num_threads()},
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "users_per_second": {name: round(args.users / m, 1) for name, m in median.items()},
        "speedup_many_over_summed": round(statistics.median(ratios), 2),
        "max_abs_attention_difference": largest,
        "score_all_seconds": round(whole, 3),
        "blocks_512_users": blocks,
        "note": args.note,
        "machine": machine_info(),
    }
    write_json(Path(args.out), report)
    print(report["users_per_second"], "speedup", report["speedup_many_over_summed"], "blocks", blocks,
          "max diff", report["max_abs_attention_difference"])


if __name__ == "__main__":
    main()
