"""The training loop: losses, validation-based early stopping, atomic checkpoints, exact resume.

Selection uses the validation target only; the test target is scored once, with the selected weights.
Resuming restores model, optimizer, data order and dropout RNG, so an interrupted run ends where an
uninterrupted one would.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dynrec.checkpoint import (
    STATE,
    TEST_OUTCOMES,
    WEIGHTS,
    load_state,
    load_weights,
    run_lock,
    save_checkpoint,
    save_state,
    write_arrays,
    write_json,
)
from dynrec.config import RunConfig, TrainConfig, config_from_dict
from dynrec.data.batching import sequence_training_rows, uniform_negatives, window_training_samples
from dynrec.data.preprocess import SequenceData, load_dataset
from dynrec.errors import CheckpointError, ConfigError
from dynrec.evaluate import PROTOCOLS, evaluate
from dynrec.machine import machine_info
from dynrec.models import DynamicRecommender, Recommender, build_model
from dynrec.models.base import training_positions

RESULT = "result.json"
# train keys that may differ on resume: a stopped run given more decays continues as if it had had them all along
RESUMABLE_CHANGES = {"epochs", "patience", "lr_decays", "device", "threads"}
PROTOCOL_NOTES = {
    "full": "rank all items; the user's earlier items are excluded except the target; ties count against the target",
    "sampled": "target + 99 items the user never interacted with, uniform, seed fixed per dataset; ties count against",
}


def log(message: str) -> None:
    """One progress line, flushed at once so a log file written in the background is current."""
    tqdm.write(message)
    sys.stdout.flush()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_for(cfg: RunConfig) -> SequenceData:
    """Load the dataset a run config names, with its filters."""
    d = cfg.data
    return load_dataset(d.dataset, d.data_dir, d.format, d.rating_threshold, d.min_user_count,
                        d.min_item_count, d.iterative_kcore)


def training_tensors(cfg: RunConfig, data: SequenceData) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): sequence mode gives (U, L) and (U, L); window mode (S, L) and (S,)."""
    if cfg.train.mode == "sequence":
        if cfg.model.name == "din":
            raise ConfigError("train.mode: DIN scores one target per history; use mode: window")
        rows = torch.from_numpy(sequence_training_rows(data, cfg.model.max_len, cfg.train.cover))
        return rows[:, :-1], rows[:, 1:]
    if cfg.train.mode == "window":
        hist, target = window_training_samples(data, cfg.model.max_len)
        return torch.from_numpy(hist), torch.from_numpy(target)
    raise ConfigError(f"train.mode: unknown mode {cfg.train.mode!r} (expected sequence or window)")


def _check_config(cfg: RunConfig) -> None:
    t = cfg.train
    if t.batching not in ("length", "random"):
        raise ConfigError(f"train.batching: unknown batching {t.batching!r} (expected length or random)")
    if t.loss_scale not in ("batch", "uniform"):
        raise ConfigError(f"train.loss_scale: unknown scale {t.loss_scale!r} (expected batch or uniform)")
    if t.cover not in ("last", "all"):
        raise ConfigError(f"train.cover: unknown cover {t.cover!r} (expected last or all)")
    if t.loss not in ("ce", "bce"):
        raise ConfigError(f"train.loss: unknown loss {t.loss!r} (expected ce or bce)")
    if t.select_protocol not in PROTOCOLS:
        raise ConfigError(f"train.select_protocol: {t.select_protocol!r} is not one of {PROTOCOLS}")
    for protocol in cfg.eval.protocols:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"eval.protocols: {protocol!r} is not one of {PROTOCOLS}")
    if t.lr_decays < 0 or not 0 < t.lr_decay_factor < 1:
        raise ConfigError(f"train.lr_decays={t.lr_decays}, train.lr_decay_factor={t.lr_decay_factor}: expected "
                          "a count >= 0 and a factor in (0, 1)")
    metric, _, k = t.select_metric.partition("@")
    if metric not in ("ndcg", "hr", "mrr") or not k.isdigit() or int(k) not in cfg.eval.ks:
        raise ConfigError(f"train.select_metric: {t.select_metric!r} must be ndcg|hr|mrr@K with K in eval.ks")


def initial_model(cfg: RunConfig, n_items: int) -> Recommender:
    """The model at its random initialisation, drawn with `train.init_seed` when set (the global RNGs are then
    reseeded with `train.seed` for what follows), else from the RNG state `train.seed` left."""
    t = cfg.train
    if t.init_seed is None:
        return build_model(cfg.model, n_items)
    seed_everything(t.init_seed)
    model = build_model(cfg.model, n_items)
    seed_everything(t.seed)
    return model


def _initialise(model: Recommender, cfg: RunConfig) -> list[torch.nn.Parameter]:
    """Load `train.init_from` into the backbone and freeze it when asked; returns the parameters to train."""
    t = cfg.train
    backbone = model.backbone if isinstance(model, DynamicRecommender) else model
    if t.init_from:
        load_weights(backbone, Path(t.init_from) / WEIGHTS)
    if t.freeze_backbone:
        if not (t.init_from and isinstance(model, DynamicRecommender)):
            raise ConfigError("train.freeze_backbone: needs model.dynamic: true and train.init_from (a static run)")
        backbone.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _resume_state(run_dir: Path, cfg: RunConfig) -> dict | None:
    path = run_dir / STATE
    if not path.is_file():
        return None
    state = load_state(path)
    saved = config_from_dict(state["config"], str(path)).to_dict()  # keys added since then take their defaults
    current = cfg.to_dict()
    for section, values in current.items():
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            old = saved[section] if key is None else saved.get(section, {}).get(key)
            if old != value and not (section == "train" and key in RESUMABLE_CHANGES) and section != "out_dir":
                raise CheckpointError(
                    f"{path}: cannot resume, {section}.{key} was {old!r} and is now {value!r}; "
                    "use another out_dir or --fresh"
                )
    return state


def _changed_arithmetic(before: dict, now: dict) -> str | None:
    """Say when a resumed run continues at another thread count or on another CPU: its weights are reproducible
    bit for bit only on one machine at one thread count, so it will part from an uninterrupted run."""
    changes = [f"{key} {before[key]!r} -> {now[key]!r}" for key in ("torch_threads", "cpu_id", "cpu_capability")
               if key in before and before[key] != now.get(key)]
    if not changes:
        return None
    return f"continues with {', '.join(changes)}: from here it differs from a run trained without a break"


def train(
    cfg: RunConfig, data: SequenceData | None = None, resume: bool = True, progress: bool = True
) -> dict:
    """Train, select on validation, evaluate on test; write checkpoint and result.json into the run dir, which
    one process at a time may train in (another gets a CheckpointError)."""
    _check_config(cfg)
    with run_lock(cfg.run_dir()):
        return _train(cfg, data, resume, progress)


def _validate(model: torch.nn.Module, data: SequenceData, cfg: RunConfig) -> float:
    """The selection score on validation (its protocol and metric)."""
    t = cfg.train
    valid = evaluate(model, data, "valid", [t.select_protocol], cfg.eval.ks, cfg.eval.batch_size,
                     cfg.eval.sampled_negatives, cfg.eval.sample_seed)
    return valid[t.select_protocol][t.select_metric]


def _select_start(model: torch.nn.Module, data: SequenceData, cfg: RunConfig, state: dict) -> None:
    """Validate the starting weights as epoch 0 and keep them as the best so far (train.select_start), so the
    epochs that follow are selected only where they beat the start; the next state saved records it."""
    t = cfg.train
    rng = torch.get_rng_state()  # the epochs that follow draw what they would have drawn without this check
    score = _validate(model, data, cfg)
    torch.set_rng_state(rng)
    state.update(best=score, best_epoch=0)
    save_checkpoint(cfg.run_dir(), model, cfg, data)
    record = {"epoch": 0, f"valid_{t.select_protocol}_{t.select_metric}": score}
    state["history"].append(record)
    log(" ".join(f"{k}={v}" for k, v in record.items()))


def _trains_on(state: dict, t: TrainConfig) -> bool:
    """Whether another epoch is due: below the epoch bound, and not stalled past patience with no decay left."""
    return state["epoch"] < t.epochs and (state["bad_checks"] < t.patience or len(state["decays"]) < t.lr_decays)


def _decay(model: torch.nn.Module, trainable: list, cfg: RunConfig, state: dict) -> torch.optim.Optimizer:
    """Restart a stalled run from its best weights at the next lower learning rate, with a fresh optimizer."""
    t = cfg.train
    load_weights(model, cfg.run_dir() / WEIGHTS)
    lr = t.lr * t.lr_decay_factor ** (len(state["decays"]) + 1)
    state["decays"].append({"after_epoch": state["epoch"], "from_best_epoch": state["best_epoch"], "lr": lr})
    state["bad_checks"] = 0
    log(f"validation stalled: epoch {state['epoch']} restarts from epoch {state['best_epoch']} at lr {lr:g}")
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=t.weight_decay)


def _train(cfg: RunConfig, data: SequenceData | None, resume: bool, progress: bool) -> dict:
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    device = resolve_device(t.device)
    data = data if data is not None else data_for(cfg)
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    model = initial_model(cfg, data.n_items).to(device)
    trainable = _initialise(model, cfg)
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    generator = torch.Generator().manual_seed(t.seed)
    inputs, targets = training_tensors(cfg, data)
    state = _resume_state(run_dir, cfg) if resume else None
    if state is None:
        state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "bad_checks": 0, "history": [], "train_seconds": 0.0}
    else:
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
        generator.set_state(state.pop("generator"))
        torch.set_rng_state(state.pop("torch_rng"))
        log(f"resuming {run_dir} at epoch {state['epoch']} (best {t.select_metric} {state['best']:.4f})")
    # who trained which epochs (results may differ by build and machine); a state saved before sessions were
    # recorded has its earlier epochs' code unrecorded
    sessions = state.setdefault("sessions", [{"from_epoch": 0, "machine": {}}] if state["epoch"] else [])
    state.setdefault("decays", [])  # a state saved before lr_decays existed has had none
    if _trains_on(state, t):  # this call trains: name it
        sessions.append({"from_epoch": state["epoch"], "machine": machine_info()})
        if len(sessions) > 1 and (note := _changed_arithmetic(sessions[-2]["machine"], sessions[-1]["machine"])):
            log(f"note: {run_dir} {note}")
    started = time.perf_counter()
    if t.select_start and state["epoch"] == 0:  # a fresh run: a resumed state is saved after an epoch
        _select_start(model, data, cfg, state)
    while _trains_on(state, t):
        if state["bad_checks"] >= t.patience:
            optimizer = _decay(model, trainable, cfg, state)
        epoch = state["epoch"]
        tic = time.perf_counter()
        loss = _train_epoch(model, optimizer, inputs, targets, cfg, generator, device, epoch, progress)
        record = {"epoch": epoch + 1, "loss": round(loss, 5), "train_seconds": round(time.perf_counter() - tic, 3)}
        state["train_seconds"] += record["train_seconds"]
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            score = _validate(model, data, cfg)
            record[f"valid_{t.select_protocol}_{t.select_metric}"] = score
            if score > state["best"]:
                state.update(best=score, best_epoch=epoch + 1, bad_checks=0)
                save_checkpoint(run_dir, model, cfg, data)
            else:
                state["bad_checks"] += 1
        state["history"].append(record)
        state["epoch"] = epoch + 1
        log(" ".join(f"{k}={v}" for k, v in record.items()))
        save_state(run_dir / STATE, {
            **state, "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        })
    if not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(f"{run_dir}: no validation check ran, so no model was selected (epochs={t.epochs})")
    load_weights(model, run_dir / WEIGHTS)
    result = {
        "dataset": data.stats(),
        "model": cfg.model.name,
        "seed": t.seed,
        "config": cfg.to_dict(),
        "protocols": {p: PROTOCOL_NOTES[p] for p in cfg.eval.protocols},
        "selection": {"split": "valid", "protocol": t.select_protocol, "metric": t.select_metric,
                      "best_epoch": state["best_epoch"], "best_value": state["best"]},
        "epochs": state["epoch"],
        "training_rows": len(inputs),  # per epoch: users or windows (sequence mode), samples (window mode)
        "training_targets": int(training_positions(inputs, targets).sum()),  # per epoch
        "train_seconds": round(state["train_seconds"], 2),
        "seconds_per_epoch": round(state["train_seconds"] / max(state["epoch"], 1), 3),
        "wall_seconds_this_session": round(time.perf_counter() - started, 2),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "history": state["history"],
        "lr_decays": state["decays"],
        "machine": machine_info(),
        "sessions": state["sessions"],
    }
    report, test_outcomes = evaluation_report(model, data, cfg)
    result.update(report)
    write_arrays(run_dir / TEST_OUTCOMES, test_outcomes)  # before result.json, which marks the run complete
    write_json(run_dir / RESULT, result)
    return result


def evaluation_report(model: Recommender, data: SequenceData, cfg: RunConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """Validation and test metrics under every configured protocol, with the time evaluation took, and the
    per-user test metrics ("<protocol>/<metric>"), kept so that paired tests need not score the run again."""
    report: dict = {}
    outcomes: dict[str, np.ndarray] = {}
    for split in ("valid", "test"):
        tic = time.perf_counter()
        metrics = evaluate(model, data, split, cfg.eval.protocols, cfg.eval.ks, cfg.eval.batch_size,
                           cfg.eval.sampled_negatives, cfg.eval.sample_seed)
        per_user = metrics.pop("_per_user")
        if split == "test":
            outcomes = {f"{p}/{name}": values for p, arrays in per_user.items() for name, values in arrays.items()}
        report[split] = metrics
        report[f"{split}_eval_seconds"] = round(time.perf_counter() - tic, 3)
    return report, outcomes


def training_batches(
    inputs: torch.Tensor, batch_size: int, generator: torch.Generator, by_length: bool = True
) -> list[torch.Tensor]:
    """Shuffled batches of rows with similar history lengths, so little compute is spent on padding, or
    (by_length False) of rows drawn at random. Rows are ordered by length with random tie-breaking (or by
    the random key alone), cut into batches, and the batches shuffled."""
    lengths = (inputs > 0).sum(1).double()
    jitter = torch.rand(len(inputs), generator=generator, dtype=torch.float64)
    order = torch.argsort(lengths + jitter if by_length else jitter)
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def loss_scale(seq: torch.Tensor, target: torch.Tensor, per_batch: float, mode: str) -> float:
    """Factor on a batch's mean loss: 1 (batch), or its count of targets over the epoch's average (uniform),
    so that the average step optimises the mean over all targets however the batches group them."""
    return float(training_positions(seq, target).sum()) / per_batch if mode == "uniform" else 1.0


def trim_padding(seq: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop leading columns that are padding in every row (exact: models align positions to the end)."""
    longest = int((seq > 0).sum(1).max())
    if targets.dim() == 2:
        return seq[:, -longest:], targets[:, -longest:]
    return seq[:, -longest:], targets


def _train_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: RunConfig,
    generator: torch.Generator,
    device: torch.device,
    epoch: int,
    progress: bool,
) -> float:
    t = cfg.train
    model.train()
    batches = training_batches(inputs, t.batch_size, generator, by_length=t.batching == "length")
    per_batch = float(training_positions(inputs, targets).sum()) / len(batches)  # average targets per batch
    total, steps = 0.0, 0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    for index in bar:
        seq, target = trim_padding(inputs[index].to(device), targets[index].to(device))
        negatives = None
        if t.loss == "bce":
            negatives = uniform_negatives(model.n_items, (*target.shape, t.num_negatives), generator, device)
        loss = model.training_loss(seq, target, t.loss, negatives)
        scale = loss_scale(seq, target, per_batch, t.loss_scale)
        optimizer.zero_grad(set_to_none=True)
        (loss * scale).backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        total += loss.item()
        steps += 1
        bar.set_postfix(loss=f"{total / steps:.4f}")
    return total / max(steps, 1)
