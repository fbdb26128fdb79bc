"""RecBole's SASRec against dynrec's SASRec: same data, same split, same sizes, one evaluation, one run.

Both sides train on dynrec's ml-100k leave-one-out split (last item test, second-to-last validation, the
rest training). RecBole reads that exact split from benchmark atomic files written here
(`<dataset>.train/.valid/.test.inter`, one row per prediction with an `item_id_list` history of at most
50 items, i.e. what RecBole's own augmentation would build), and the script checks, user by user, that
RecBole's validation and test rows hold dynrec's targets and histories. Both models have hidden size 64,
2 blocks, 1 head, a 64-wide feed-forward layer, dropout 0.2, histories of 50 items, softmax cross-entropy
over all items, batches of 128, learning rate 1e-3, gradient norm clipped at 5, and stop early on
validation full-ranking NDCG@10 with the same patience. Each side's selected weights are then scored by
dynrec's own `evaluate` (full ranking; earlier items excluded except the target; ties count against the
target). RecBole's own test numbers are kept as a cross-check: its sequential full ranking does not
exclude earlier items, so they are lower; `adapter_without_exclusion` counts that way through the adapter
and should equal them. Seconds per epoch time the training pass only (no validation) on both sides, in
the same process, on the same device and threads. Both train on every training target once per epoch
(97,171): RecBole as one row per training prefix (760 batches of 128 prefixes), dynrec's sequence mode
with `train.cover=all` as consecutive windows of 50 targets scored in one pass each (2,412 windows, 19
batches of 128 windows); `ratio_seconds_per_training_target` normalises what is left. dynrec draws its
batches at random, chosen on validation among four variants of its side (benchmarks/results/
recbole_peer_tuning.md, with the commands); RecBole's settings beyond the shared ones are its defaults,
not tuned.

    python benchmarks/recbole_peer.py                 # the full benchmark (early stopping, <= 200 epochs)
    python benchmarks/recbole_peer.py --quick         # smoke test: one epoch each, writes to runs/

On a machine shared with other jobs, pass --threads 1: torch's default of one thread per core slows
both sides several-fold when another process holds a core.

The full benchmark takes hours, so it resumes: rerun the same command after an interruption (kill -9
included) and it continues where it stopped. dynrec trains first (minutes) and resumes through its own
run dir; RecBole saves its whole training state (model, optimizer, early-stopping counters, best weights,
epoch times, validation history, every RNG the training draws from) atomically after every epoch and
continues from the next one, so the result equals an uninterrupted run's except for the timings. Saved
state belongs to one output file and one set of settings (seed, epoch cap, patience, device, library
versions, a hash of the benchmark files); a rerun with other settings is refused and names the setting
that differs (--threads may change). --fresh discards the saved state; --quick always starts afresh.

Writes benchmarks/results/recbole_peer.json; scratch files (data, dynrec run, RecBole state) go to
runs/recbole_peer/ (the full run's state to runs/recbole_peer/full/, --quick's to runs/recbole_peer/quick/).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import early_stopping, init_seed

from dynrec.checkpoint import load_checkpoint, load_state, save_state, write_json
from dynrec.config import load_config
from dynrec.data.batching import history, window_training_samples
from dynrec.data.preprocess import SequenceData, load_dataset
from dynrec.evaluate import evaluate, public, rank_metrics
from dynrec.experiments.stats import paired_bootstrap, paired_t_test
from dynrec.machine import machine_info
from dynrec.models.base import training_positions
from dynrec.train import log, train, training_tensors

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "runs" / "recbole_peer"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "recbole_peer.json"
QUICK_OUT = RUN_DIR / "quick.json"
PER_USER = "_per_user_ndcg@10"  # a side's per-user test NDCG@10, for the paired tests; not written out
SETTINGS = "settings.json"  # in a state dir: the settings its saved state was made with
RECBOLE_STATE = "recbole_state.pt"  # in a state dir: RecBole's training state after its last finished epoch
DYNREC_CONFIG = ROOT / "configs" / "ml-100k" / "sasrec.yaml"
TOKEN = "ml100k-loo"  # RecBole's dataset name for the benchmark files
SPLITS = ("train", "valid", "test")
MAX_LEN = 50
KS = [10]


# --------------------------------------------------------------------------- the shared split


def _rows(data: SequenceData, split: str, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, left-padded histories, targets) of every prediction RecBole makes on a split.

    train: one row per training item with at least one item before it (RecBole's prefix augmentation);
    valid/test: one row per user, exactly the history and target dynrec evaluates.
    """
    if split == "train":
        hist, target = window_training_samples(data, max_len)
        starts, ends = data.offsets[:-1], data.split_end("train")
        users = np.repeat(np.arange(data.n_users), np.maximum(ends - starts - 1, 0))
        return users, hist, target
    return np.arange(data.n_users), history(data, split, max_len), data.targets(split)


def write_benchmark_files(data: SequenceData, directory: Path, max_len: int) -> dict[str, int]:
    """Write `<TOKEN>.<split>.inter` atomic files with dynrec's ids as tokens; returns rows per split."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        users, hist, target = _rows(data, split, max_len)
        lines = ["user_id:token\titem_id:token\titem_id_list:token_seq"]
        for user, items, item in zip(users, hist, target, strict=True):
            lines.append(f"{user}\t{item}\t{' '.join(map(str, items[items > 0].tolist()))}")
        path = directory / f"{TOKEN}.{split}.inter"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
        counts[split] = len(users)
    return counts


def benchmark_files_hash(directory: Path) -> str:
    """sha256 over the benchmark files RecBole reads (names and contents), for the resume check."""
    digest = hashlib.sha256()
    for split in SPLITS:
        path = directory / f"{TOKEN}.{split}.inter"
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_split(data: SequenceData, loaders: dict, max_len: int) -> np.ndarray:
    """Check RecBole's rows equal dynrec's, row for row; return dynrec item id -> RecBole item id."""
    dataset = loaders["train"]._dataset
    tokens = dataset.field2id_token["item_id"]  # RecBole id -> token (our ids as strings); 0 is [PAD]
    if dataset.field2id_token["item_id_list"] is not tokens:
        raise AssertionError("RecBole remapped item_id_list apart from item_id (alias_of_item_id missing)")
    to_dynrec = np.array([0] + [int(t) for t in tokens[1:]], dtype=np.int64)
    if sorted(to_dynrec[1:].tolist()) != list(range(1, data.n_items + 1)):
        raise AssertionError(f"RecBole knows {len(to_dynrec) - 1} items, dynrec {data.n_items}")
    to_recbole = np.empty_like(to_dynrec)
    to_recbole[to_dynrec] = np.arange(len(to_dynrec))
    user_tokens = dataset.field2id_token["user_id"]
    for split in SPLITS:
        inter = loaders[split]._dataset.inter_feat
        users = np.array([int(user_tokens[u]) for u in inter["user_id"].numpy()])
        targets = to_dynrec[inter["item_id"].numpy()]
        seqs = to_dynrec[inter["item_id_list"].numpy()]  # right-padded
        lengths = inter["item_length"].numpy()
        want_users, want_hist, want_targets = _rows(data, split, max_len)
        if len(users) != len(want_users) or (users != want_users).any() or (targets != want_targets).any():
            raise AssertionError(f"{split}: RecBole's users or targets differ from dynrec's")
        if (lengths != (want_hist > 0).sum(1)).any():
            raise AssertionError(f"{split}: RecBole's history lengths differ from dynrec's")
        for row in range(len(users)):
            if (seqs[row, : lengths[row]] != want_hist[row, want_hist.shape[1] - lengths[row] :]).any():
                raise AssertionError(f"{split}: row {row} (user {users[row]}): RecBole's history differs")
    return to_recbole


# --------------------------------------------------------------------------- RecBole side


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """contextlib.chdir, which needs Python 3.11."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class ResumeRefused(SystemExit):
    """Saved state that does not belong to this command; exits with the message, naming the setting."""


def check_settings(recorded: dict, current: dict, path: Path) -> None:
    for key in sorted(set(recorded) | set(current)):
        if recorded.get(key) != current.get(key):
            raise ResumeRefused(
                f"{path}: cannot resume: {key} was {recorded.get(key)!r} and is now {current.get(key)!r}. "
                f"Rerun with the same settings to continue, or pass --fresh to discard the saved state "
                f"in {path.parent}."
            )


def rng_state(loader_generator: torch.Generator, device: str) -> dict:
    """Every RNG RecBole's training draws from, as tensors, lists and numbers (loadable with weights_only):
    torch's (dropout), the training loader's generator (shuffling), numpy's and Python's, CUDA's on cuda."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "train_loader": loader_generator.get_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if device == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["train_loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class RecBoleScorer:
    """dynrec's Scorer protocol over a RecBole sequential model: left-padded dynrec histories in,
    (B, n_items + 1) scores in dynrec's item order out, column 0 (padding) = -inf."""

    def __init__(self, model: SASRec, to_recbole: np.ndarray, max_len: int) -> None:
        self.model = model
        self.max_len = max_len
        self.to_recbole = torch.from_numpy(to_recbole)  # dynrec id -> RecBole id, 0 -> 0

    @torch.no_grad()
    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        seq = seq[:, -self.max_len :].cpu()
        L = seq.shape[1]
        lengths = (seq > 0).sum(1)  # histories are contiguous and end at the last column
        source = (L - lengths)[:, None] + torch.arange(L)[None, :]  # right-padding: item j of the history first
        keep = torch.arange(L)[None, :] < lengths[:, None]
        right = torch.where(keep, seq.gather(1, source.clamp(max=L - 1)), 0)
        device = next(self.model.parameters()).device
        inter = Interaction({self.model.ITEM_SEQ: self.to_recbole[right], self.model.ITEM_SEQ_LEN: lengths})
        scores = self.model.full_sort_predict(inter.to(device)).cpu()  # (B, RecBole items)
        scores = scores[:, self.to_recbole]  # columns in dynrec's item order
        scores[:, 0] = float("-inf")
        return scores

    def score_candidates(self, seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.score_all(seq).gather(1, candidates.cpu())


def recbole_config(args: argparse.Namespace, data_dir: Path, workdir: Path) -> Config:
    settings = {
        # data: the benchmark files, dynrec's split as is
        "data_path": str(data_dir.parent),
        "benchmark_filename": list(SPLITS),
        "load_col": {"inter": ["user_id", "item_id", "item_id_list"]},
        "alias_of_item_id": ["item_id_list"],  # lists and targets share one id map
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": None,
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        # model: dynrec's configs/ml-100k/sasrec.yaml sizes
        "hidden_size": 64,
        "inner_size": 64,  # dynrec's feed-forward is d -> d -> d
        "n_layers": 2,
        "n_heads": 1,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "hidden_act": "gelu",
        "loss_type": "CE",
        "train_neg_sample_args": None,
        # training
        "epochs": args.epochs,
        "train_batch_size": 128,
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "clip_grad_norm": {"max_norm": 5.0},
        "eval_step": 1,
        "stopping_step": args.patience - 1,  # RecBole stops after stopping_step + 1 checks without improvement
        "seed": args.seed,
        "reproducibility": True,
        # evaluation: full ranking, selected on validation NDCG@10
        "eval_args": {"split": None, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": KS,
        "valid_metric": "NDCG@10",
        "eval_batch_size": 4096,
        "metric_decimal_place": 6,
        # machinery
        "use_gpu": args.device == "cuda",
        "gpu_id": "0" if args.device == "cuda" else "",
        "checkpoint_dir": str(workdir / "saved"),  # created by the Trainer, left empty
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
    }
    argv, cuda_visible = sys.argv, os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = sys.argv[:1]  # RecBole's Config would read our --epochs etc. as its own settings
    try:
        return Config(model="SASRec", dataset=TOKEN, config_dict=settings)
    finally:
        sys.argv = argv
        if cuda_visible is None:  # Config sets CUDA_VISIBLE_DEVICES = gpu_id for the whole process
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible


def fit_recbole(trainer: Trainer, loaders: dict, args: argparse.Namespace, settings: dict,
                state_path: Path) -> dict:
    """RecBole's Trainer.fit, epoch by epoch, saving the whole training state after each epoch and resuming
    from it. Validation every epoch and RecBole's own early_stopping rule, as fit applies them: a score at
    least as high as the best so far (ties included) becomes the best and resets the count; training stops
    after `patience` checks in a row without one (stopping_step = patience - 1). Returns the progress dict
    (best weights under "best_model")."""
    model, train_data = trainer.model, loaders["train"]
    trainer.eval_collector.data_collect(train_data)  # as fit does first
    if state_path.is_file():
        state = load_state(state_path)  # torch.load(weights_only=True): tensors, lists, dicts, numbers only
        check_settings(state["settings"], settings, state_path)
        model.load_state_dict(state.pop("model"))
        trainer.optimizer.load_state_dict(state.pop("optimizer"))
        set_rng_state(state.pop("rng"), train_data.generator)
        done = "finished, evaluating" if state["stopped"] or state["epoch"] >= args.epochs else "resuming"
        log(f"recbole: {done} {state_path} after epoch {state['epoch']} (best valid ndcg@10 "
            f"{state['best_score']:.6f} at epoch {state['best_epoch']}, {state['cur_step']} checks without one)")
    else:
        state = {"settings": settings, "epoch": 0, "best_score": -math.inf, "best_epoch": -1, "cur_step": 0,
                 "stopped": False, "best_model": None, "epoch_seconds": [], "history": []}
    checked = False
    while not state["stopped"] and state["epoch"] < args.epochs:
        epoch_idx = state["epoch"]
        tic = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch_idx, show_progress=False)
        seconds = time.perf_counter() - tic  # the training pass only, as before
        score, result = trainer._valid_epoch(loaders["valid"], show_progress=False)
        score = float(score)  # plain numbers only in the state (weights_only loading)
        state["best_score"], state["cur_step"], state["stopped"], improved = early_stopping(
            score, state["best_score"], state["cur_step"], max_step=trainer.stopping_step,
            bigger=trainer.valid_metric_bigger)
        if improved:
            state["best_model"], state["best_epoch"] = clone_state(model), epoch_idx + 1
        record = {"epoch": epoch_idx + 1, "loss": round(loss / len(train_data), 5), "train_seconds": round(seconds, 3),
                  **{f"valid_{k}": round(float(v), 6) for k, v in result.items()}}
        state["epoch"] = epoch_idx + 1
        state["epoch_seconds"].append(seconds)
        state["history"].append(record)
        save_state(state_path, {**state, "model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                                "rng": rng_state(train_data.generator, args.device)})
        if not checked:  # fail now, not hours later, if the state cannot be loaded back without unpickling
            if load_state(state_path)["epoch"] != state["epoch"]:
                raise AssertionError(f"{state_path}: the saved state does not load back")
            checked = True
        log(f"recbole epoch={record['epoch']} loss={record['loss']:.5f} train_seconds={seconds:.3f} "
            f"valid_ndcg@10={score:.6f} best_epoch={state['best_epoch']} checks_without_best={state['cur_step']}"
            + (" stop" if state["stopped"] else ""))
    if state["best_model"] is None:
        raise AssertionError(f"{state_path}: no validation check ran, so no model was selected")
    return state


def run_recbole(args: argparse.Namespace, data: SequenceData, rows: dict[str, int], state_dir: Path,
                settings: dict) -> dict:
    data_dir = RUN_DIR / "data" / TOKEN
    config = recbole_config(args, data_dir, state_dir / "recbole")
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    loaders = dict(zip(SPLITS, data_preparation(config, dataset), strict=True))
    to_recbole = check_split(data, loaders, MAX_LEN)
    log(f"recbole: split identical to dynrec's ({rows['train']} training rows, "
        f"{rows['valid']} validation and {rows['test']} test users)")
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, loaders["train"]._dataset).to(config["device"])
    workdir = state_dir / "recbole"
    workdir.mkdir(parents=True, exist_ok=True)
    with working_directory(workdir):  # the Trainer writes TensorBoard logs to ./log_tensorboard
        # The best weights stay in the state file, not in RecBole's pickled .pth checkpoints (fit is not called,
        # so none is written): torch>=2.6 would not load those back with weights_only.
        trainer = Trainer(config, model)
        state = fit_recbole(trainer, loaders, args, settings, state_dir / RECBOLE_STATE)
        model.load_state_dict(state["best_model"])
        own = trainer.evaluate(loaders["test"], load_best_model=False)
    metrics = test_metrics(RecBoleScorer(model, to_recbole, MAX_LEN), data)
    seconds = state["epoch_seconds"]
    return {
        **metrics,
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "epochs": len(seconds),
        "best_epoch": state["best_epoch"],
        "train_seconds": round(sum(seconds), 2),
        "training_targets_per_epoch": rows["train"],
        "batches_per_epoch": len(loaders["train"]),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "recbole_own_test": {k.lower(): round(float(v), 6) for k, v in own.items()},
        "adapter_without_exclusion": unexcluded_test_metrics(RecBoleScorer(model, to_recbole, MAX_LEN), data),
        "version": recbole.__version__,
        "history": state["history"],
    }


# --------------------------------------------------------------------------- dynrec side


def run_dynrec(args: argparse.Namespace, data: SequenceData, state_dir: Path) -> dict:
    """dynrec's training resumes from its run dir (a finished run is only re-evaluated, not retrained); the
    settings check in main() has already made sure the run dir belongs to these settings."""
    out_dir = state_dir / "dynrec"
    cfg = load_config(DYNREC_CONFIG, [
        f"model.max_len={MAX_LEN}", f"train.epochs={args.epochs}", f"train.patience={args.patience}",
        f"train.seed={args.seed}", f"train.device={args.device}", "eval.protocols=[full]", f"out_dir={out_dir}",
        "train.cover=all",  # every training target once per epoch, as RecBole's one row per prefix
        "train.batching=random",  # chosen on validation: benchmarks/results/recbole_peer_tuning.md
    ])
    inputs, targets = training_tensors(cfg, data)
    result = train(cfg, data=data, resume=True, progress=False)
    model, _, _ = load_checkpoint(out_dir, device=args.device)
    metrics = test_metrics(model, data)
    if abs(metrics["ndcg@10"] - result["test"]["full"]["ndcg@10"]) > 1e-6:
        raise AssertionError("dynrec's reloaded checkpoint scores differently from the trained model")
    return {
        **metrics,
        "seconds_per_epoch": result["seconds_per_epoch"],
        "epochs": result["epochs"],
        "best_epoch": result["selection"]["best_epoch"],
        "train_seconds": result["train_seconds"],
        "training_targets_per_epoch": int(training_positions(inputs, targets).sum()),
        "training_rows_per_epoch": len(inputs),
        "batches_per_epoch": -(-len(inputs) // cfg.train.batch_size),
        "n_parameters": result["n_parameters"],
        "config": str(DYNREC_CONFIG.relative_to(ROOT)),
    }


# --------------------------------------------------------------------------- both


def test_metrics(scorer: object, data: SequenceData) -> dict:
    """Test NDCG@10 and HR@10 by dynrec's full-ranking evaluation, the same call for both models, and (under
    PER_USER, taken out before the JSON is written) each user's NDCG@10 for the paired tests."""
    results = evaluate(scorer, data, "test", ["full"], KS)
    full = public(results)["full"]
    return {"ndcg@10": full["ndcg@10"], "hr@10": full["hr@10"], PER_USER: results["_per_user"]["full"]["ndcg@10"]}


def unexcluded_test_metrics(scorer: RecBoleScorer, data: SequenceData) -> dict[str, float]:
    """Test metrics counted as RecBole counts them for sequential models (earlier items are NOT excluded),
    through the adapter: equal to RecBole's own numbers when the adapter reproduces RecBole's scores."""
    scores = torch.cat([scorer.score_all(torch.from_numpy(history(data, "test", scorer.max_len, users)))
                        for users in np.array_split(np.arange(data.n_users), -(-data.n_users // 512))])
    target = torch.from_numpy(data.targets("test"))[:, None]
    ranks = (scores >= scores.gather(1, target)).sum(1) - 1
    metrics = rank_metrics(ranks, KS, torch.full_like(ranks, data.n_items))
    return {name: round(float(metrics[name].mean()), 6) for name in ("ndcg@10", "hr@10")}


def prepare_state_dir(args: argparse.Namespace, out: Path, settings: dict) -> Path:
    """The folder holding this output's resumable state: runs/recbole_peer/full for the default output,
    runs/recbole_peer/quick for --quick's, runs/recbole_peer/<full|quick>-<hash of the path> for any other.

    Its settings.json is written before anything else, so a folder without one holds nothing resumable and
    is cleared; one with other settings is refused (ResumeRefused names the setting) unless --fresh."""
    mode = "quick" if args.quick else "full"
    default = QUICK_OUT if args.quick else DEFAULT_OUT
    resolved = out.resolve()
    tag = mode if resolved == default.resolve() else f"{mode}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"
    state_dir = RUN_DIR / tag
    path = state_dir / SETTINGS
    if args.fresh or args.quick or not path.is_file():  # --quick is a smoke test of the code as it is now
        if state_dir.exists():
            log(f"state: discarding {state_dir}")
        shutil.rmtree(state_dir, ignore_errors=True)
        write_json(path, settings)
    else:
        check_settings(json.loads(path.read_text()), settings, path)
    return state_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap for both sides")
    parser.add_argument("--patience", type=int, default=20, help="validation checks without improvement")
    parser.add_argument("--quick", action="store_true", help="one epoch each, output under runs/ (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--out", default=None, help="default benchmarks/results/recbole_peer.json "
                        "(runs/recbole_peer/quick.json with --quick)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard this output's saved state (dynrec run and RecBole epochs) and start over")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    if args.patience < 1 or args.epochs < 1:
        parser.error("--epochs and --patience must be at least 1")
    out = Path(args.out) if args.out else (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")  # pandas/torch deprecations
    command = shlex.join(["python", *sys.argv])
    data = load_dataset("ml-100k")
    data_dir = RUN_DIR / "data" / TOKEN
    rows = write_benchmark_files(data, data_dir, MAX_LEN)
    settings = {  # what saved state must have been made with to be resumed; not --threads
        "seed": args.seed, "epochs": args.epochs, "patience": args.patience, "device": args.device,
        "quick": args.quick, "out": str(out.resolve()), "benchmark_files_sha256": benchmark_files_hash(data_dir),
        "recbole": str(recbole.__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
    }
    state_dir = prepare_state_dir(args, out, settings)
    log(f"state: {state_dir}")
    dynrec_side = run_dynrec(args, data, state_dir)
    log(f"dynrec: test ndcg@10={dynrec_side['ndcg@10']} in {dynrec_side['epochs']} epochs, "
        f"{dynrec_side['seconds_per_epoch']} s/epoch")
    recbole_side = run_recbole(args, data, rows, state_dir, settings)
    log(f"recbole: test ndcg@10={recbole_side['ndcg@10']} (its own evaluator: "
        f"{recbole_side['recbole_own_test'].get('ndcg@10')}, the adapter without exclusion: "
        f"{recbole_side['adapter_without_exclusion']['ndcg@10']}) in {recbole_side['epochs']} epochs, "
        f"{recbole_side['seconds_per_epoch']} s/epoch")
    differences = dynrec_side.pop(PER_USER) - recbole_side.pop(PER_USER)
    result = {
        "command": command,
        "dataset": data.stats(),
        "split": "dynrec's leave-one-out by time: last item test, second-to-last validation, the rest training; "
                 "RecBole reads it from benchmark files (one row per training prefix, histories <= 50 items), "
                 "checked row for row",
        "protocol": "full ranking; earlier items excluded except target; ties count against the target; "
                    "both models scored by dynrec.evaluate",
        "shared_settings": {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "ffn_size": 64, "dropout": 0.2,
                            "max_len": MAX_LEN, "loss": "softmax CE over all items", "batch_size": 128,
                            "training_targets": "every training target once per epoch",
                            "dynrec_batches": "random (chosen on validation)",
                            "lr": 1e-3, "grad_clip": 5.0, "epochs_cap": args.epochs, "patience": args.patience,
                            "select": "valid full ndcg@10", "seed": args.seed, "device": args.device},
        "quick": args.quick,
        "recbole": recbole_side,
        "dynrec": dynrec_side,
        "ratio_seconds_per_epoch": round(recbole_side["seconds_per_epoch"] / dynrec_side["seconds_per_epoch"], 2),
        "ratio_seconds_per_training_target": round(
            recbole_side["train_seconds"] / recbole_side["epochs"] / recbole_side["training_targets_per_epoch"]
            / (dynrec_side["train_seconds"] / dynrec_side["epochs"] / dynrec_side["training_targets_per_epoch"]), 2),
        "ndcg_delta": round(dynrec_side["ndcg@10"] - recbole_side["ndcg@10"], 6),
        "ndcg_delta_p_value": {"paired_bootstrap": round(paired_bootstrap(differences), 4),
                               "paired_t_test": round(paired_t_test(differences), 4),
                               "users": len(differences)},
        "machine": machine_info(),
    }
    write_json(out, result)
    log(f"wrote {out}: seconds/epoch ratio {result['ratio_seconds_per_epoch']}, "
        f"ndcg@10 delta (dynrec - recbole) {result['ndcg_delta']:+.6f}")


if __name__ == "__main__":
    main()
