"""Summarise how two runs trained side by side (`dynrec reproduce --jobs 2`) shared the machine.

Reads each run directory's result.json (one session each, started together) and writes, from the epochs
recorded there, the pair's wall time against the two runs' seconds added up, and the longer run's seconds per
epoch while both trained and after the shorter one stopped:

    python scripts/side_by_side.py runs/experiments/<run A> runs/experiments/<run B> --out summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

from dynrec.checkpoint import write_json
from dynrec.train import RESULT


def run_summary(run_dir: Path) -> dict:
    """The epochs, selection and seconds one run's result.json records; a resumed run is refused."""
    result = json.loads((run_dir / RESULT).read_text())
    if len(result["sessions"]) != 1:
        raise SystemExit(f"{run_dir}: trained over {len(result['sessions'])} sessions; expected one")
    return {"run": run_dir.name, "epochs": result["epochs"], "best_epoch": result["selection"]["best_epoch"],
            "train_seconds": result["train_seconds"], "wall_seconds": result["wall_seconds_this_session"],
            "epoch_seconds": [row["train_seconds"] for row in result["history"]],
            "machine": result["sessions"][0]["machine"]}


def side_by_side(first: Path, second: Path) -> dict:
    """Compare the pair's wall time (the longer run's) with its two runs' seconds added up."""
    runs = sorted((run_summary(first), run_summary(second)), key=lambda run: run["epochs"])
    shorter, longer = runs
    together, alone = longer["epoch_seconds"][:shorter["epochs"]], longer["epoch_seconds"][shorter["epochs"]:]
    wall = max(run["wall_seconds"] for run in runs)
    added = sum(run["wall_seconds"] for run in runs)
    return {
        "runs": [{k: v for k, v in run.items() if k != "epoch_seconds"} for run in runs],
        "pair_wall_seconds": round(wall, 1),
        "runs_added_seconds": round(added, 1),
        "added_over_wall": round(added / wall, 3),
        "longer_run_epoch_seconds_together": round(mean(together), 2),
        "longer_run_epoch_seconds_alone": round(mean(alone), 2) if alone else None,
        "epochs_alone": len(alone),
        "note": "wall and added seconds are each run's own session wall time (training and validation); the "
                "longer run's per-epoch training seconds before and after the shorter one stopped show what "
                "sharing the cores cost each epoch",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    summary = {**side_by_side(args.first, args.second), "command": " ".join(["python", *sys.argv])}
    write_json(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
