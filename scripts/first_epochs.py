"""Train the first epochs of one paper-grid run and print its curve and a digest of its weights.

Two checkouts, thread counts or machines that give the same digest train the same run bit for bit; where
they differ, the curve shows from which epoch. Run it with PYTHONPATH pointing at the checkout to test
(an older build too: it only needs twin_config and train, which every build since the grid has):

    PYTHONPATH=. python scripts/first_epochs.py beauty sasrec --epochs 2 --threads 1 --out result.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from dynrec.checkpoint import write_json
from dynrec.experiments.dynamic import twin_config
from dynrec.machine import machine_info
from dynrec.serve.bundle import tensor_sha256
from dynrec.train import train


def weights_digest(path: Path) -> str:
    """sha256 over each tensor's name and tensor_sha256, in name order."""
    lines = (f"{name} {tensor_sha256(tensor)}\n" for name, tensor in sorted(load_file(path).items()))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("backbone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the record here (JSON)")
    args = parser.parse_args()
    cfg, _ = twin_config(args.dataset, args.backbone, args.seed, "paper", "static", args.threads)
    cfg.train.epochs = args.epochs
    with tempfile.TemporaryDirectory() as work:
        cfg.out_dir = work
        result = train(cfg, progress=False)
        digest = weights_digest(Path(work) / "model.safetensors")
    record = {"command": " ".join(sys.argv), "dataset": args.dataset, "backbone": args.backbone, "seed": args.seed,
              "threads": args.threads, "history": result["history"], "weights_sha256": digest,
              "machine": machine_info()}
    print(json.dumps(record, indent=2))
    if args.out:
        write_json(Path(args.out), record)  # temp file, then rename


if __name__ == "__main__":
    main()
