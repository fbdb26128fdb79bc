"""Learning f_L and f_G on training data while the models' own weights stay fixed (as the official code).

Offline (`train_compatibility`): the fused model's parameters are a differentiable function of the learned
compatibility (soft splicing); the loss is the architecture's own training loss run on those parameters
through `torch.func.functional_call`, so the n input state dicts are only read. Online (`train_online`):
the OnlineCKI layer's f_L/f_G learn with the dynamic model frozen. In both, validation (the run config's
selection protocol and metric) picks the epoch; epoch 0, the parameter-free start, competes too. The
histogram entropy has zero gradient, so learning flows through f_L, and through f_G's two parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from dynrec.config import RunConfig
from dynrec.data.batching import uniform_negatives
from dynrec.data.preprocess import SequenceData
from dynrec.evaluate import evaluate
from dynrec.fusion.compatibility import BINS, LearnedCompatibility, assess, tensor_entropy
from dynrec.fusion.offline import StateDict, check_state_dicts, spliced_names
from dynrec.fusion.online import OnlineCKI
from dynrec.fusion.splice import soft_splice
from dynrec.models.base import Recommender
from dynrec.train import log, training_batches, training_tensors, trim_padding

StepLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class _TrainingLoss(nn.Module):
    """Makes a model's training_loss its forward, so functional_call can run it with substituted weights."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, seq, targets, loss, negatives):
        return self.model.training_loss(seq, targets, loss, negatives)


class SplicedParameters:
    """The soft-spliced state dict of n fixed models as a differentiable function of a LearnedCompatibility."""

    def __init__(self, state_dicts: Sequence[StateDict], names: list[str], bins: int = BINS) -> None:
        self.names = names
        self.weights = {name: [state[name].float() for state in state_dicts] for name in names}
        self.entropies = {name: [tensor_entropy(w, bins) for w in self.weights[name]] for name in names}
        self.fixed = {name: t for name, t in state_dicts[0].items() if name not in names}  # from the first model

    def __call__(self, compatibility: LearnedCompatibility) -> dict[str, torch.Tensor]:
        spliced = {}
        for name in self.names:
            maps = assess(self.weights[name], self.entropies[name], *compatibility.functions(name))
            spliced[name] = soft_splice(self.weights[name], maps)
        return {**self.fixed, **spliced}


def _fit(
    parameters: list[nn.Parameter],
    step_loss: StepLoss,
    validate: Callable[[], float],
    module: nn.Module,
    data: SequenceData,
    cfg: RunConfig,
    epochs: int,
    lr: float,
    progress: bool,
) -> dict:
    """Adam on `parameters` for `epochs` epochs of the training data; keeps the module's best state on
    validation (epoch 0 included) and loads it back. Seeded by cfg.train.seed, dropout included, so a rerun
    learns the same weights. Returns the history."""
    t = cfg.train
    with torch.random.fork_rng():  # dropout draws from the global RNG: seed it, restore the caller's after
        torch.manual_seed(t.seed)
        optimizer = torch.optim.Adam(parameters, lr=lr)
        generator = torch.Generator().manual_seed(t.seed)
        inputs, targets = training_tensors(cfg, data)
        best = {"epoch": 0, "valid": validate(), "state": copy.deepcopy(module.state_dict())}
        history = [{"epoch": 0, "valid": best["valid"]}]
        for epoch in range(1, epochs + 1):
            total, steps = 0.0, 0
            for index in training_batches(inputs, t.batch_size, generator):
                seq, target = trim_padding(inputs[index], targets[index])
                negatives = None
                if t.loss == "bce":
                    negatives = uniform_negatives(data.n_items, (*target.shape, t.num_negatives), generator)
                loss = step_loss(seq, target, negatives)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(parameters, t.grad_clip)
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            record = {"epoch": epoch, "loss": round(total / max(steps, 1), 6), "valid": validate()}
            history.append(record)
            if progress:
                log(" ".join(f"{k}={v}" for k, v in record.items()))
            if record["valid"] > best["valid"]:
                best = {"epoch": epoch, "valid": record["valid"], "state": copy.deepcopy(module.state_dict())}
        module.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "best_valid": best["valid"],
            "metric": f"{t.select_protocol} {t.select_metric}", "history": history}


def _valid_score(scorer: Recommender, data: SequenceData, cfg: RunConfig) -> float:
    e, t = cfg.eval, cfg.train
    metrics = evaluate(scorer, data, "valid", [t.select_protocol], e.ks, e.batch_size, e.sampled_negatives,
                       e.sample_seed)
    return float(metrics[t.select_protocol][t.select_metric])


def train_compatibility(
    model: Recommender,
    state_dicts: Sequence[StateDict],
    data: SequenceData,
    cfg: RunConfig,
    tensors: str = "head",
    epochs: int = 5,
    lr: float = 1e-2,
    bins: int = BINS,
    progress: bool = False,
) -> tuple[LearnedCompatibility, dict]:
    """Learn f_L/f_G for fusing `state_dicts` (all of `model`'s architecture) with the soft CKI splice.

    Uses cfg.train's mode, loss, batch size, negatives, seed and selection metric. Returns the learned
    compatibility at the best validation epoch (pass it to fuse(..., compatibility=...)) and the history.
    """
    check_state_dicts(state_dicts)
    names = spliced_names(state_dicts[0], tensors)
    compatibility = LearnedCompatibility({n: state_dicts[0][n].shape for n in names}, len(state_dicts))
    spliced = SplicedParameters(state_dicts, names, bins)
    wrapper = _TrainingLoss(model).train()
    scorer = copy.deepcopy(model)

    def step_loss(seq, target, negatives):
        params = {f"model.{name}": t for name, t in spliced(compatibility).items()}
        return functional_call(wrapper, params, (seq, target, cfg.train.loss, negatives))

    def validate() -> float:
        with torch.no_grad():
            scorer.load_state_dict(spliced(compatibility))
        return _valid_score(scorer, data, cfg)

    history = _fit(list(compatibility.parameters()), step_loss, validate, compatibility, data, cfg, epochs, lr,
                   progress)
    return compatibility, history


def train_online(
    online: OnlineCKI, data: SequenceData, cfg: RunConfig, epochs: int = 5, lr: float = 1e-2, progress: bool = False
) -> dict:
    """Learn an OnlineCKI's f_L/f_G (it needs learned=True) with its dynamic model frozen; returns the history."""
    if online.compatibility is None:
        raise ValueError("this OnlineCKI has no learned compatibility; build it with learned=True")
    frozen = [(p, p.requires_grad) for p in online.model.parameters()]
    online.model.requires_grad_(False)
    online.train()
    try:
        return _fit(list(online.compatibility.parameters()),
                    lambda seq, target, negatives: online.training_loss(seq, target, cfg.train.loss, negatives),
                    lambda: _valid_score(online, data, cfg), online.compatibility, data, cfg, epochs, lr, progress)
    finally:
        for parameter, flag in frozen:
            parameter.requires_grad_(flag)
