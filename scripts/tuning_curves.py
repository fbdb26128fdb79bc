"""Collect validation curves of several runs (finished or still training) into one JSON and a Markdown table,
so a tuning decision cites committed numbers:

    python scripts/tuning_curves.py --out docs/results/ml-1m_sasrec_tuning \
        LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Reads each run's result.json when it exists, else its trainer state (the history so far); a run whose
directory is gone (run caches need not outlive a sitting) is kept as OUT.json last recorded it. A finished
run's committed result JSON (e.g. docs/results/ml-1m_sasrec_full_seed1.json) may stand in for its run directory. Writes
OUT.json (label, run dir, config, history, test metrics when finished) and OUT.md (validation metric by epoch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynrec.checkpoint import STATE, atomic_write, load_state, write_json
from dynrec.train import RESULT

EPOCHS = (1, 3, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200, 250, 300)


def result_path(run_dir: Path) -> Path:
    """Where a run's result JSON is: the run directory's result.json, or `run_dir` itself if it is a JSON file."""
    return run_dir if run_dir.suffix == ".json" else run_dir / RESULT


def read_run(label: str, run_dir: Path) -> dict:
    """A run's label, config, validation history and (when finished) test metrics; `run_dir` may also be a
    finished run's result JSON."""
    result_file = result_path(run_dir)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        return {"label": label, "run_dir": str(run_dir), "finished": True, "config": result["config"],
                "history": result["history"], "selection": result["selection"], "test": result["test"],
                "machine": result["machine"]}
    state = load_state(run_dir / STATE)
    return {"label": label, "run_dir": str(run_dir), "finished": False, "config": state["config"],
            "history": state["history"]}


def collect(pairs: list[tuple[str, Path]], recorded: list[dict]) -> list[dict]:
    """Each (label, run dir) read from its directory, or from `recorded` (the previous OUT.json's runs) when
    the directory has neither a result nor a trainer state."""
    earlier = {(r["label"], r["run_dir"]): r for r in recorded}
    runs = []
    for label, run_dir in pairs:
        if result_path(run_dir).is_file() or (run_dir / STATE).is_file():
            runs.append(read_run(label, run_dir))
        elif (label, str(run_dir)) in earlier:
            runs.append(earlier[label, str(run_dir)])
        else:
            raise SystemExit(f"{run_dir}: no {RESULT} or {STATE}, and the output JSON has no run {label!r} there")
    return runs


def markdown(runs: list[dict]) -> str:
    """Validation metric at fixed epochs, one column per run; then best epoch and test metrics if finished."""
    key = next(k for k in runs[0]["history"][0] if k.startswith("valid_"))
    lines = [f"Validation `{key}` by epoch (`-`: not reached).", "",
             "| epoch | " + " | ".join(r["label"] for r in runs) + " |",
             "| --- | " + " | ".join("---" for _ in runs) + " |"]
    for epoch in EPOCHS:
        cells = []
        for run in runs:
            values = [h.get(key) for h in run["history"] if h["epoch"] == epoch]
            cells.append(f"{values[0]:.4f}" if values and values[0] is not None else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    tested = [(protocol, metric) for protocol in ("full", "sampled") for metric in ("ndcg@10", "hr@10")
              if any(metric in run.get("test", {}).get(protocol, {}) for run in runs)] or [("full", "ndcg@10")]
    lines += ["", "| run | epochs so far | best valid (epoch) | "
              + " | ".join(f"test {protocol} {metric.upper()}" for protocol, metric in tested) + " |",
              "| --- | --- | --- |" + " --- |" * len(tested)]
    for run in runs:
        scored = [(h[key], h["epoch"]) for h in run["history"] if h.get(key) is not None]
        best, at = max(scored)
        test = run.get("test", {})
        cells = [f"{test[p][m]:.4f}" if m in test.get(p, {}) else "not finished" for p, m in tested]
        lines.append(f"| {run['label']} | {len(run['history'])} | {best:.4f} ({at}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--note", default="", help="Markdown paragraph placed under the header")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR|RESULT_JSON")
    args = parser.parse_args()
    out = Path(args.out)
    recorded = json.loads(out.with_suffix(".json").read_text())["runs"] if out.with_suffix(".json").is_file() else []
    runs = collect([(label, Path(path)) for label, _, path in (r.partition("=") for r in args.runs)], recorded)
    write_json(out.with_suffix(".json"), {"runs": runs})
    command = " ".join(["python scripts/tuning_curves.py", "--out", args.out, *(["--note ..."] if args.note else []),
                        *(f'"{r}"' for r in args.runs)])
    machines = {json.dumps(r["machine"], sort_keys=True) for r in runs if "machine" in r}
    header = f"Written by `{command}`; unfinished runs show their history so far. Machine: {', '.join(machines)}."
    table = header + "\n\n" + (args.note + "\n\n" if args.note else "") + markdown(runs)
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(table))
    print(table)


if __name__ == "__main__":
    main()
