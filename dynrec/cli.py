"""Command line: `dynrec train | evaluate | fuse | export | serve | demo | experiment | reproduce | data`."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from dynrec import api
from dynrec.errors import ConfigError, DynrecError
from dynrec.experiments.dynamic import ALL_VARIANTS, DEFAULT_VARIANTS
from dynrec.fusion.offline import METHODS

REPLACE_ROWS_HELP = ("write rows whose committed ones other code trained (a retrain); by default those stay and the "
                     "log names them, so a stale run left in --root cannot replace a committed result")


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

    p = sub.add_parser("fuse", help="fuse two or more same-shaped checkpoints (CKI or a baseline) into one")
    p.add_argument("--models", nargs="+", required=True, metavar="PATH",
                   help="dynrec checkpoint dirs, .safetensors files or weights-only torch state dicts (A first)")
    p.add_argument("--method", required=True, help=" | ".join(METHODS))
    p.add_argument("--out", required=True, help="output directory (model A's config and id map for dynrec inputs)")
    p.add_argument("--tensors", default="head", choices=["head", "head+encoder", "all"],
                   help="which tensors are spliced; the others come from model A (default: head)")
    p.add_argument("--bins", type=int, help="histogram bins of CKI's entropy (default 10)")
    p.add_argument("--base", help="base model of task-arithmetic, ties and dare (default: the models' mean)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. density=0.3, drop=0.9, scale=0.5, seed=1 (repeatable)")
    p.add_argument("--learn-epochs", type=int, default=0,
                   help="CKI: first learn f_L/f_G for this many epochs on model A's training data (dynrec inputs)")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("export", help="write a checkpoint as a serving bundle (weights, config, id map, "
                                      "popularity, manifest of hashes)")
    p.add_argument("--checkpoint", required=True, help="a dynrec run directory (static or dynamic model)")
    p.add_argument("--out", required=True, help="bundle directory to create (written atomically)")
    p.add_argument("--cki", choices=["soft", "hard"], default="soft", help="how mode cki splices (default soft)")
    p.add_argument("--bins", type=int, default=10, help="histogram bins of CKI's entropy (default 10)")
    p.add_argument("--data-dir", help="where the run's dataset lives (for the popularity counts)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")

    p = sub.add_parser("serve", help="serve a bundle over HTTP: /recommend, /events, /healthz, /metrics, /docs")
    p.add_argument("--bundle", required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    p.add_argument("--max-batch", type=int, default=64, help="requests per forward pass (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a batch's first request waits for more (default 2)")
    p.add_argument("--queue-size", type=int, default=128,
                   help="requests waiting for the model before new ones get 503 (default 128)")
    p.add_argument("--db", default="events.sqlite", help="SQLite event store (default ./events.sqlite)")
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024, help="larger bodies get 413 (default 256 KiB)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the model (default 1; 0: torch's)")
    p.add_argument("--model-thread", action="store_true",
                   help="run the model in its own thread instead of on the event loop (slower here: GIL hand-offs)")

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
    p.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=list(DEFAULT_VARIANTS),
                   help="which runs this worker trains (finished runs of the others are still reported); "
                        "dynamic-lowrank: the joint twin with low-rank generated heads; "
                        "dynamic-on-a: the generator on the static twin's frozen backbone, once that twin exists; "
                        "dynamic-on-a-epoch0: the same, its start (epoch 0) among the epochs validation selects")
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--replace-rows", action="store_true", help=REPLACE_ROWS_HELP)

    p = sub.add_parser("reproduce", help="the CKI paper's Tables 1, 3, 4 (cached, resumable): CSVs, paired tests, "
                                         "charts and docs/results.md")
    p.add_argument("table", help="table1 | table1-shared-init | table3 | table4 | all | report (re-render the page "
                                 "from the CSVs only)")
    p.add_argument("--datasets", nargs="+", help="default: ml-1m beauty douban-book douban-music (quick: ml-100k)")
    p.add_argument("--backbones", nargs="+", help="default: din gru4rec sasrec")
    p.add_argument("--seeds", nargs="+", type=int, help="model A's seeds (default 0 1 2; quick: 0 1)")
    p.add_argument("--methods", nargs="+", help="only these rows of the tables (default: every row)")
    p.add_argument("--quick", action="store_true",
                   help="smoke budget (2 epochs, ml-100k's configs) under runs/quick: checks the pipeline, not results")
    p.add_argument("--protocols", nargs="+", choices=["full", "sampled"], help="test protocols (default: both)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for training and evaluation (not part of any cache key)")
    p.add_argument("--root", help="cached runs and evaluations (default runs/experiments; quick: runs/quick)")
    p.add_argument("--out-dir", help="CSVs, timings and charts (default docs/results; quick: runs/quick/results)")
    p.add_argument("--report", help="the Markdown page (default docs/results.md; quick: <out-dir>/results.md)")
    p.add_argument("--cached-only", action="store_true", help="train and evaluate nothing: report what exists")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes that train a pair's two static base runs at once (Tables 1 and 4; each at "
                        "--threads threads, or its share of the cores); 1: one after the other")
    p.add_argument("--replace-rows", action="store_true", help=REPLACE_ROWS_HELP)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("data", help="load a dataset and print its statistics")
    p.add_argument("dataset", help="registered name or file path")
    p.add_argument("--data-dir")
    return parser


def _shares_text(info: dict) -> str:
    """A fusion's shares of the spliced positions, in all and per part of the model ('' without maps)."""
    if info["share"] is None:
        return ""
    parts = [("", info["share"]), *((f"; {group}: ", shares) for group, shares in info["share_by_group"].items())]
    text = "".join(f"{label}{', '.join(f'{w:.3f}' for w in shares)}" for label, shares in parts)
    return f" (share of the spliced positions: {text})"


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
        elif args.command == "fuse":
            options = {}
            for item in args.options:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
                options[key] = yaml.safe_load(raw)
            if args.bins is not None:
                options["bins"] = args.bins
            info = api.fuse_checkpoints(args.models, args.method, args.out, args.tensors, options, args.base,
                                        args.learn_epochs, args.data_dir, progress=not args.no_progress)
            print(f"{info['method']}: {len(info['spliced'])} tensors of {info['n_models']} models{_shares_text(info)} "
                  f"-> {args.out}")
        elif args.command == "export":
            manifest = api.export(args.checkpoint, args.out, args.cki == "hard", args.bins, args.data_dir, args.force)
            print(f"{len(manifest['tensors'])} tensors, {len(manifest['files'])} files -> {args.out}")
        elif args.command == "serve":
            from dynrec.serve.app import ServeSettings, serve

            settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                     queue_size=args.queue_size, db=args.db, max_body_bytes=args.max_body_bytes,
                                     model_thread=args.model_thread)
            serve(args.bundle, args.host, args.port, args.threads, settings)
        elif args.command == "demo":
            print(api.results_table(api.demo(args.out_dir, progress=not args.no_progress)))
        elif args.command == "experiment":
            rows = api.experiment_dynamic(args.datasets, args.backbones, args.seeds, args.setting, args.root,
                                          args.threads, tuple(args.variants), args.out_dir, args.replace_rows)
            print(f"{len(rows)} rows -> {args.out_dir}/dynamic_{args.setting}.csv")
        elif args.command == "reproduce":
            timings = api.reproduce(args.table, args.datasets, args.backbones, args.seeds, args.methods, args.quick,
                                    args.protocols, args.threads, args.root, args.out_dir, args.report,
                                    args.cached_only, progress=not args.no_progress, jobs=args.jobs,
                                    replace_rows=args.replace_rows)
            for name, timing in timings.items():
                print(f"{name}: {timing['pairs_complete']}/{timing['pairs_requested']} pairs complete (sampled; "
                      f"{timing['pairs_complete_full']} with full ranking), "
                      f"{timing['total_seconds'] / 3600:.2f} h recorded ({timing['budget']} budget)")
        elif args.command == "data":
            from dynrec.data import load_dataset

            print(json.dumps(load_dataset(args.dataset, args.data_dir).stats(), indent=2))
    except DynrecError as error:
        print(f"dynrec: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
