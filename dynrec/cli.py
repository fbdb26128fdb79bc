"""Command line: `dynrec train | evaluate | demo | experiment | data`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynrec import api
from dynrec.errors import DynrecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config; writes checkpoint and result.json")
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--data-dir", help="directory holding the registered datasets (default: $DYNREC_DATA)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its dataset")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--protocol", dest="protocols", action="append", choices=["full", "sampled"])
    p.add_argument("--data-dir")
    p.add_argument("--out", help="write the metrics JSON here")

    p = sub.add_parser("demo", help="the main job: SASRec and GRU4Rec on ml-100k, with a results table")
    p.add_argument("--out-dir", default="runs/demo")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("experiment", help="run (or resume) a cached grid of runs and write docs/results/")
    p.add_argument("name", choices=["dynamic"], help="dynamic: static vs dynamic twins")
    p.add_argument("--datasets", nargs="+", default=["ml-1m", "beauty", "douban-book", "douban-music"])
    p.add_argument("--backbones", nargs="+", default=["sasrec", "gru4rec", "din"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--setting", choices=["paper", "full"], default="paper",
                   help="paper: window 10, BCE, d=32 (sampled protocol); full: the configs' full-CE setting")
    p.add_argument("--root", default="runs/experiments", help="where the cached runs live")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (1 when two workers share 2 cores; not part of the cache key)")
    p.add_argument("--out-dir", default="docs/results")

    p = sub.add_parser("data", help="load a dataset and print its statistics")
    p.add_argument("dataset", help="registered name or file path")
    p.add_argument("--data-dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            overrides = args.overrides + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
            result = api.train(args.config, overrides, resume=not args.fresh, progress=not args.no_progress)
            print(api.results_table([result]))
        elif args.command == "evaluate":
            result = api.evaluate_checkpoint(args.checkpoint, args.split, args.protocols, args.data_dir, args.out)
            print(json.dumps(result["metrics"], indent=2))
        elif args.command == "demo":
            print(api.results_table(api.demo(args.out_dir, progress=not args.no_progress)))
        elif args.command == "experiment":
            from dynrec.experiments import dynamic

            rows = dynamic.static_vs_dynamic(args.datasets, args.backbones, args.seeds, args.setting, Path(args.root),
                                             threads=args.threads)
            dynamic.write_outputs(rows, args.setting, Path(args.out_dir))
            print(f"{len(rows)} rows -> {args.out_dir}/dynamic_{args.setting}.csv")
        elif args.command == "data":
            from dynrec.data import load_dataset

            print(json.dumps(load_dataset(args.dataset, args.data_dir).stats(), indent=2))
    except DynrecError as error:
        print(f"dynrec: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
