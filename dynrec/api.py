"""The Python API; each function is one CLI command (`dynrec train`, `evaluate`, `demo`, `fuse`, `export`,
`experiment dynamic`, `reproduce`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dynrec.checkpoint import load_checkpoint, write_json
from dynrec.config import RunConfig, load_config
from dynrec.errors import ConfigError, FusionError
from dynrec.evaluate import evaluate, public
from dynrec.fusion.compatibility import BINS
from dynrec.fusion.files import check_same_catalogue, is_dynrec_checkpoint, read_state_dict, write_fused
from dynrec.fusion.learned import train_compatibility
from dynrec.fusion.offline import METHODS, fuse
from dynrec.machine import machine_info
from dynrec.serve.bundle import export_bundle
from dynrec.train import PROTOCOL_NOTES, data_for
from dynrec.train import train as _train

ROOT = Path(__file__).resolve().parent.parent  # the repository (configs/ lives beside the package)
DEMO_CONFIGS = ("configs/ml-100k/sasrec.yaml", "configs/ml-100k/gru4rec.yaml")


def train(
    config: str | Path | RunConfig | None = None,
    overrides: list[str] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Train from a YAML path (or a RunConfig) plus `section.key=value` overrides; returns the result dict."""
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    return _train(cfg, resume=resume, progress=progress)


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "test",
    protocols: list[str] | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
) -> dict:
    """Score a saved checkpoint on its own dataset; optionally write the metrics JSON to `out`."""
    model, cfg, _ = load_checkpoint(checkpoint)
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    data = data_for(cfg)
    protocols = protocols or cfg.eval.protocols
    tic = time.perf_counter()
    metrics = public(evaluate(model, data, split, protocols, cfg.eval.ks, cfg.eval.batch_size,
                              cfg.eval.sampled_negatives, cfg.eval.sample_seed))
    result = {
        "checkpoint": str(checkpoint),
        "dataset": data.stats(),
        "model": cfg.model.name,
        "seed": cfg.train.seed,
        "split": split,
        "protocols": {p: PROTOCOL_NOTES[p] for p in protocols},
        "metrics": metrics,
        "seconds": round(time.perf_counter() - tic, 3),
        "machine": machine_info(),
    }
    if out is not None:
        write_json(Path(out), result)
    return result


def fuse_checkpoints(
    models: list[str | Path],
    method: str,
    out: str | Path,
    tensors: str = "head",
    options: dict | None = None,
    base: str | Path | None = None,
    learn_epochs: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Fuse two or more same-shaped checkpoints into `out` (`dynrec fuse`); returns the fusion summary.

    Inputs are dynrec checkpoint dirs (the output then has model A's config.json and idmap.json and loads
    with load_checkpoint), .safetensors files or weights-only torch files (e.g. RecBole state dicts; the
    output is then model.safetensors alone). With learn_epochs > 0 (CKI methods, dynrec inputs), f_L and
    f_G are first learned on model A's training data, validation picking the epoch.
    """
    paths = [Path(m) for m in models]
    state_dicts = [read_state_dict(p) for p in paths]
    if all(is_dynrec_checkpoint(p) for p in paths):
        check_same_catalogue(paths)
    options = dict(options or {})
    if base is not None:
        options["base"] = read_state_dict(base)
    learning = None
    if learn_epochs > 0:
        if method in METHODS and "compatibility" not in METHODS[method].options:
            raise FusionError(f"--learn-epochs learns CKI's f_L/f_G; method {method!r} has none (use cki or cki-hard)")
        if not is_dynrec_checkpoint(paths[0]):
            raise FusionError(f"{paths[0]}: learning f_L/f_G needs a dynrec checkpoint (its config names the data)")
        model, cfg, _ = load_checkpoint(paths[0])
        if data_dir is not None:
            cfg.data.data_dir = data_dir
        compatibility, learning = train_compatibility(model, state_dicts, data_for(cfg), cfg, tensors, learn_epochs,
                                                      bins=options.get("bins", BINS), progress=progress)
        options["compatibility"] = compatibility
    result = fuse(state_dicts, method, tensors, labels=[str(p) for p in paths], **options)
    if learning is not None:
        result.info["learning"] = learning
    write_fused(out, result, paths)
    return result.info


def export(
    checkpoint: str | Path,
    out: str | Path,
    hard: bool = False,
    bins: int = BINS,
    data_dir: str | None = None,
    force: bool = False,
) -> dict:
    """Write a checkpoint as a verified serving bundle (`dynrec export`); popularity counts come from the
    run's own dataset, loaded here. `hard`/`bins` set how mode cki splices. Returns the manifest."""
    _, cfg, _ = load_checkpoint(checkpoint)
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    return export_bundle(checkpoint, out, data_for(cfg), hard=hard, bins=bins, force=force)


def experiment_dynamic(
    datasets: list[str] | None = None,
    backbones: list[str] | None = None,
    seeds: list[int] | None = None,
    setting: str = "paper",
    root: str | Path = "runs/experiments",
    threads: int = 0,
    variants: tuple[str, ...] | None = None,
    out_dir: str | Path = "docs/results",
    replace_rows: bool = False,
) -> list[dict]:
    """Static vs dynamic runs over datasets x backbones x seeds (`dynrec experiment dynamic`): train what this
    worker's `variants` lack (cached, resumable), write dynamic_<setting>.csv and .md into out_dir, return
    the rows. Defaults: the four datasets, the three backbones, seeds 0 1 2, the variants static, dynamic
    and dynamic-on-a (dynamic-lowrank only when asked for). Committed rows of runs other code trained stay
    unless `replace_rows`."""
    from dynrec.experiments import dynamic
    from dynrec.experiments import tables as paper

    rows = dynamic.static_vs_dynamic(list(datasets or paper.DATASETS), list(backbones or paper.BACKBONES),
                                     list(seeds or paper.SEEDS), setting, Path(root), threads=threads,
                                     variants=tuple(variants or dynamic.DEFAULT_VARIANTS))
    dynamic.write_outputs(rows, setting, Path(out_dir), replace_rows)
    return rows


def reproduce(
    tables: str | list[str] = "all",
    datasets: list[str] | None = None,
    backbones: list[str] | None = None,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    quick: bool = False,
    protocols: list[str] | None = None,
    threads: int = 0,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    report: str | Path | None = None,
    cached_only: bool = False,
    progress: bool = True,
    jobs: int = 1,
    replace_rows: bool = False,
) -> dict[str, dict]:
    """The CKI paper's Tables 1, 3, 4 (`dynrec reproduce`): train what is missing (cached by config, so a
    reproduction resumes), evaluate every method, write <table>.csv, <table>_tests.csv, <table>_timing.json
    into out_dir and render `report`. `tables`: a name, a list, "all", or "report" (render only). `quick`: a
    smoke budget on ml-100k under runs/quick (not results). `jobs` > 1 trains a pair's two static base runs
    in that many processes at once. A cell whose committed rows other code trained keeps them unless
    `replace_rows`. Returns each table's timing."""
    from dynrec.experiments import report as rendering  # here: matplotlib and scipy load only when asked
    from dynrec.experiments import tables as paper

    if tables == "all":
        names = list(paper.TABLES)
    else:
        names = [] if tables == "report" else [tables] if isinstance(tables, str) else list(tables)
    protocols = tuple(protocols or paper.PROTOCOLS)
    paper.check_request(names, protocols, methods)
    if jobs < 1:
        raise ConfigError(f"reproduce --jobs: expected a positive number of processes, got {jobs}")
    out = Path(out_dir or ("runs/quick/results" if quick else "docs/results"))
    report = Path(report or (out / "results.md" if quick else "docs/results.md"))
    if threads:
        torch.set_num_threads(threads)
    ctx = paper.Context(Path(root or ("runs/quick" if quick else "runs/experiments")),
                        paper.QUICK if quick else paper.PAPER, protocols, threads, progress, cached_only,
                        jobs=jobs, replace_rows=replace_rows)
    datasets = list(datasets or (paper.QUICK_DATASETS if quick else paper.DATASETS))
    seeds = list(seeds or (paper.QUICK_SEEDS if quick else paper.SEEDS))
    backbones = list(backbones or paper.BACKBONES)
    timings = {name: paper.reproduce_table(name, datasets, backbones, seeds, ctx, out, methods) for name in names}
    rendering.render(out, report)
    return timings


def demo(out_dir: str | Path = "runs/demo", progress: bool = True) -> list[dict]:
    """The main job on the embedded ml-100k: train SASRec and GRU4Rec, evaluate both protocols on test."""
    results = []
    for config in DEMO_CONFIGS:
        name = Path(config).stem
        cfg = load_config(ROOT / config, ["train.epochs=100", "train.patience=10", f"out_dir={Path(out_dir) / name}"])
        results.append(_train(cfg, resume=True, progress=progress))
    return results


def results_table(results: list[dict], metrics: tuple[str, ...] = ("ndcg@10", "hr@10", "mrr@10")) -> str:
    """A small Markdown table of test metrics, one row per model and protocol."""
    header = ["model", "protocol", *metrics, "epochs", "s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for protocol, values in result["test"].items():
            cells = [result["model"], protocol, *(f"{values[m]:.4f}" for m in metrics),
                     str(result["epochs"]), f"{result['seconds_per_epoch']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
