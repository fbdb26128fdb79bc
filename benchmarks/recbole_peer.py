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
the same process, on the same device and threads. An epoch is each library's own: RecBole trains on every
training prefix (~97k targets, 760 batches), dynrec's sequence mode on each user's last 50 training
targets in one pass per user (~39k targets, 8 batches); `ratio_seconds_per_training_target` normalises.

    python benchmarks/recbole_peer.py                 # the full benchmark (early stopping, <= 200 epochs)
    python benchmarks/recbole_peer.py --quick         # smoke test: one epoch each, writes to runs/

On a machine shared with other jobs, pass --threads 1: torch's default of one thread per core slows
both sides several-fold when another process holds a core.

Writes benchmarks/results/recbole_peer.json; scratch files (data, dynrec run) go to runs/recbole_peer/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from dynrec.checkpoint import load_checkpoint, write_json
from dynrec.config import load_config
from dynrec.data.batching import history, window_training_samples
from dynrec.data.preprocess import SequenceData, load_dataset
from dynrec.evaluate import evaluate, public, rank_metrics
from dynrec.machine import machine_info
from dynrec.train import log, train

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "runs" / "recbole_peer"
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


class TimedTrainer(Trainer):
    """RecBole's Trainer, timing each training pass and keeping the best weights in memory.

    Keeping the best state in memory replaces RecBole's pickled .pth checkpoint, which torch>=2.6 would
    not load back (weights_only) and which would land in a checkpoint folder of its own.
    """

    def __init__(self, config: Config, model: SASRec) -> None:
        super().__init__(config, model)
        self.epoch_seconds: list[float] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1

    def _train_epoch(
        self, train_data: TrainDataLoader, epoch_idx: int, loss_func: Callable | None = None,
        show_progress: bool = False,
    ) -> float:
        tic = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_seconds.append(time.perf_counter() - tic)
        self._last_loss = loss / len(train_data)
        return loss

    def _valid_epoch(self, valid_data: FullSortEvalDataLoader, show_progress: bool = False) -> tuple[float, dict]:
        score, result = super()._valid_epoch(valid_data, show_progress)
        log(f"recbole epoch={len(self.epoch_seconds)} loss={self._last_loss:.5f} "
            f"train_seconds={self.epoch_seconds[-1]:.3f} valid_full_ndcg@10={score:.6f}")
        return score, result

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: object) -> None:
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.best_epoch = epoch + 1


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


def recbole_config(args: argparse.Namespace, data_dir: Path) -> Config:
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
        "checkpoint_dir": str(RUN_DIR / "recbole" / "saved"),
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


def run_recbole(args: argparse.Namespace, data: SequenceData) -> dict:
    data_dir = RUN_DIR / "data" / TOKEN
    rows = write_benchmark_files(data, data_dir, MAX_LEN)
    config = recbole_config(args, data_dir)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    loaders = dict(zip(SPLITS, data_preparation(config, dataset), strict=True))
    to_recbole = check_split(data, loaders, MAX_LEN)
    log(f"recbole: split identical to dynrec's ({rows['train']} training rows, "
        f"{rows['valid']} validation and {rows['test']} test users)")
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, loaders["train"]._dataset).to(config["device"])
    workdir = RUN_DIR / "recbole"
    workdir.mkdir(parents=True, exist_ok=True)
    with working_directory(workdir):  # the Trainer writes TensorBoard logs to ./log_tensorboard
        trainer = TimedTrainer(config, model)
        trainer.fit(loaders["train"], loaders["valid"], verbose=False, saved=True, show_progress=False)
        model.load_state_dict(trainer.best_state)
        own = trainer.evaluate(loaders["test"], load_best_model=False)
    metrics = test_metrics(RecBoleScorer(model, to_recbole, MAX_LEN), data)
    seconds = trainer.epoch_seconds
    return {
        **metrics,
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "epochs": len(seconds),
        "best_epoch": trainer.best_epoch,
        "train_seconds": round(sum(seconds), 2),
        "training_targets_per_epoch": rows["train"],
        "batches_per_epoch": len(loaders["train"]),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "recbole_own_test": {k.lower(): round(float(v), 6) for k, v in own.items()},
        "adapter_without_exclusion": unexcluded_test_metrics(RecBoleScorer(model, to_recbole, MAX_LEN), data),
        "version": recbole.__version__,
    }


# --------------------------------------------------------------------------- dynrec side


def run_dynrec(args: argparse.Namespace, data: SequenceData) -> dict:
    out_dir = RUN_DIR / "dynrec"
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run, never a resume
    cfg = load_config(DYNREC_CONFIG, [
        f"model.max_len={MAX_LEN}", f"train.epochs={args.epochs}", f"train.patience={args.patience}",
        f"train.seed={args.seed}", f"train.device={args.device}", "eval.protocols=[full]", f"out_dir={out_dir}",
    ])
    result = train(cfg, data=data, resume=False, progress=False)
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
        "training_targets_per_epoch": int(np.minimum(data.split_end("train") - data.offsets[:-1] - 1, MAX_LEN).sum()),
        "batches_per_epoch": -(-data.n_users // cfg.train.batch_size),
        "n_parameters": result["n_parameters"],
        "config": str(DYNREC_CONFIG.relative_to(ROOT)),
    }


# --------------------------------------------------------------------------- both


def test_metrics(scorer: object, data: SequenceData) -> dict[str, float]:
    """Test NDCG@10 and HR@10 by dynrec's full-ranking evaluation, the same call for both models."""
    full = public(evaluate(scorer, data, "test", ["full"], KS))["full"]
    return {"ndcg@10": full["ndcg@10"], "hr@10": full["hr@10"]}


def unexcluded_test_metrics(scorer: RecBoleScorer, data: SequenceData) -> dict[str, float]:
    """Test metrics counted as RecBole counts them for sequential models (earlier items are NOT excluded),
    through the adapter: equal to RecBole's own numbers when the adapter reproduces RecBole's scores."""
    scores = torch.cat([scorer.score_all(torch.from_numpy(history(data, "test", scorer.max_len, users)))
                        for users in np.array_split(np.arange(data.n_users), -(-data.n_users // 512))])
    target = torch.from_numpy(data.targets("test"))[:, None]
    ranks = (scores >= scores.gather(1, target)).sum(1) - 1
    metrics = rank_metrics(ranks, KS, torch.full_like(ranks, data.n_items))
    return {name: round(float(metrics[name].mean()), 6) for name in ("ndcg@10", "hr@10")}


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
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    if args.patience < 1 or args.epochs < 1:
        parser.error("--epochs and --patience must be at least 1")
    out = Path(args.out) if args.out else (RUN_DIR / "quick.json" if args.quick
                                           else ROOT / "benchmarks/results/recbole_peer.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")  # pandas/torch deprecations
    command = shlex.join(["python", *sys.argv])
    data = load_dataset("ml-100k")
    dynrec_side = run_dynrec(args, data)
    log(f"dynrec: test ndcg@10={dynrec_side['ndcg@10']} in {dynrec_side['epochs']} epochs, "
        f"{dynrec_side['seconds_per_epoch']} s/epoch")
    recbole_side = run_recbole(args, data)
    log(f"recbole: test ndcg@10={recbole_side['ndcg@10']} (its own evaluator: "
        f"{recbole_side['recbole_own_test'].get('ndcg@10')}, the adapter without exclusion: "
        f"{recbole_side['adapter_without_exclusion']['ndcg@10']}) in {recbole_side['epochs']} epochs, "
        f"{recbole_side['seconds_per_epoch']} s/epoch")
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
        "machine": machine_info(),
    }
    write_json(out, result)
    log(f"wrote {out}: seconds/epoch ratio {result['ratio_seconds_per_epoch']}, "
        f"ndcg@10 delta (dynrec - recbole) {result['ndcg_delta']:+.6f}")


if __name__ == "__main__":
    main()
