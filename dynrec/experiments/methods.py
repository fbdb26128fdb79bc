"""The methods of the paper's Tables 1, 3 and 4, each built as a scorer from a pair of trained models.

Model A is a static run. Tables 1 and 4: model B is the static run of another seed; a fusion method fuses A
with B offline, the tensors it does not splice coming from A (task arithmetic, TIES and DARE take A as
base: B's task vector is B - A). Table 3: model B(G) is the dynamic model trained on A's frozen backbone
(docs/dynamic.md, mode 3), so A's static head and every generated head read the same encoder output; its
fusion rows merge the static head with the head generated for each request, online (OnlineBaseline,
OnlineCKI; the static head is the base), and nothing else is merged. Options in a method's grid are chosen
on validation (tables.py); the others are the published defaults (CKI: 10 bins; DARE: seed 0).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dynrec.checkpoint import load_checkpoint, load_tensors
from dynrec.config import RunConfig
from dynrec.data.preprocess import SequenceData
from dynrec.errors import FusionError
from dynrec.experiments.cache import payload_key
from dynrec.experiments.runner import run_cached
from dynrec.fusion import METHODS as FUSIONS
from dynrec.fusion import FusionResult, OnlineBaseline, OnlineCKI, OutputEnsemble, fuse
from dynrec.fusion.files import is_dynrec_checkpoint, write_fused
from dynrec.fusion.learned import train_compatibility, train_online
from dynrec.models import DynamicRecommender, Recommender

TENSORS = ("head", "head+encoder", "all")  # which tensors a fusion splices: chosen on validation
LEARN_EPOCHS = 3  # epochs of learning f_L (validation picks the best of epochs 0..3)


@dataclass
class Pair:
    """Two trained models of one dataset, backbone and seed, with what building a method needs."""

    a: Recommender
    b: Recommender  # static (Tables 1, 4) or dynamic on A's frozen backbone (Table 3)
    dirs: tuple[Path, Path]  # their run directories
    keys: tuple[str, str]  # their config keys (runner.config_key)
    cfg: RunConfig  # model A's run config: training setting, evaluation settings, selection metric
    data: SequenceData
    root: Path  # where runs derived from the pair are cached (Table 4's extra epoch)
    name: str  # <dataset>-<backbone>-s<seed>, for file names
    progress: bool = False
    trained_with: str = ""  # the dynrec commit(s) that trained A and B (machine.trained_with)
    best_epochs: tuple[int | None, int | None] = (None, None)  # the epochs validation selected for A and B

    @property
    def online(self) -> bool:
        """Whether B is dynamic (Table 3): fusion then merges heads per request instead of checkpoints."""
        return isinstance(self.b, DynamicRecommender)


Built = tuple[Recommender, dict]  # the scorer and JSON-ready details of how it was made


@dataclass(frozen=True)
class Method:
    """One row of a table: how to build its scorer, and which of its options validation chooses."""

    label: str  # how the report names it
    build: Callable[[Pair, dict], Built]
    grid: dict[str, tuple] = field(default_factory=dict)  # option -> candidates; every combination is tried
    models: str = "ab"  # which trained models it reads: "a", "b" or "ab" (part of its cache key)
    options_of: str | None = None  # take the options this other method chose on validation
    is_run: bool = False  # the scorer is the `models` run as trained: its run's own test evaluation is reused

    def grid_for(self, pair: Pair) -> dict[str, tuple]:
        """The options validation chooses among for `pair`: an online merge (Table 3) merges the head only, so
        `tensors` is not among them."""
        return {key: values for key, values in self.grid.items() if not (pair.online and key == "tensors")}


def check_frozen_on(a: Recommender, b: DynamicRecommender) -> None:
    """Raise FusionError unless B(G)'s backbone (encoder, item embeddings, static head) is exactly model A:
    the online merges of Table 3 assume one encoder under both heads."""
    mine = b.backbone.state_dict()
    for name, tensor in a.state_dict().items():
        if name not in mine or not torch.equal(mine[name], tensor):
            raise FusionError(f"model B(G)'s backbone differs from model A at tensor {name!r}: Table 3 merges heads "
                              "online and needs B(G) trained on A's frozen backbone (train.init_from=<A's run>, "
                              "train.freeze_backbone=true)")


def state_of(model: Recommender) -> dict:
    """A model's state dict, detached."""
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def with_weights(model: Recommender, state: dict) -> Recommender:
    """A copy of `model` (in eval mode) holding `state`; the model itself is not changed."""
    result = copy.deepcopy(model).eval()
    load_tensors(result, state, "fused weights")
    return result


def fused(pair: Pair, method: str, options: dict) -> FusionResult:
    """Fuse static A with static B offline by `method`; `options` holds `tensors` and the method's own options."""
    states = [state_of(pair.a), state_of(pair.b)]
    method_options = {key: value for key, value in options.items() if key != "tensors"}
    if "base" in FUSIONS[method].options:
        method_options["base"] = states[0]
    return fuse(states, method, options["tensors"], labels=["model A", "model B"], **method_options)


def _offline_details(result: FusionResult) -> dict:
    """What a table row keeps of an offline fusion: the tensors spliced and, where the method has maps (CKI,
    magnitude pruning), each model's share of the spliced positions, in all and per part of the model."""
    return {key: result.info[key] for key in ("spliced", "share", "share_by_group")}


def _model(which: str) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        return (pair.a if which == "a" else pair.b), {}

    return build


def _ensemble(pair: Pair, options: dict) -> Built:
    return OutputEnsemble([pair.a, pair.b]), {"cost": "two models' weights and inference"}


def _fusion(method: str) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        if pair.online:
            return OnlineBaseline(pair.b, method, **options).eval(), {"online": True}
        result = fused(pair, method, options)
        return with_weights(pair.b, result.state_dict), _offline_details(result)

    return build


def _cki(hard: bool) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        if pair.online:
            return OnlineCKI(pair.b, hard=hard).eval(), {"online": True}
        result = fused(pair, "cki-hard" if hard else "cki", options)
        return with_weights(pair.b, result.state_dict), {**_offline_details(result), "online": False}

    return build


def _cki_learned(pair: Pair, options: dict) -> Built:
    """Static pair: f_L/f_G learned for the offline splice of A and B. Dynamic pair: f_L/f_G of the online
    splice learned with B(G) frozen."""
    if pair.online:
        online = OnlineCKI(pair.b, learned=True)
        history = train_online(online, pair.data, pair.cfg, options["epochs"], progress=pair.progress)
        return online.eval(), {"online": True, "learning": history}
    states = [state_of(pair.a), state_of(pair.b)]
    compatibility, history = train_compatibility(copy.deepcopy(pair.a), states, pair.data, pair.cfg,
                                                 options["tensors"], options["epochs"], progress=pair.progress)
    result = fuse(states, "cki", options["tensors"], compatibility=compatibility)
    return with_weights(pair.b, result.state_dict), {**_offline_details(result), "online": False, "learning": history}


def fused_checkpoint(pair: Pair, method: str, options: dict) -> Path:
    """The pair fused by `method` as a checkpoint directory (written once, then reused)."""
    out = pair.root / "fused" / f"{pair.name}-{method}-{payload_key({'runs': pair.keys, 'options': options})}"
    if not is_dynrec_checkpoint(out):
        write_fused(out, fused(pair, method, options), list(pair.dirs))
    return out


def _plus_epoch(start: str) -> Callable[[Pair, dict], Built]:
    """One more epoch of model A's training, starting from model A or from the pair fused by `start`; the
    epoch's weights are taken as they are (nothing is selected, on test or otherwise)."""

    def build(pair: Pair, options: dict) -> Built:
        init = pair.dirs[0] if start == "model-a" else fused_checkpoint(pair, start, options)
        cfg = copy.deepcopy(pair.cfg)
        cfg.train.init_from, cfg.train.epochs, cfg.train.patience = str(init), 1, 1
        cfg.eval.protocols = [cfg.train.select_protocol]  # the run's own report; the table scores test itself
        run_cached(cfg, pair.root, f"plus1-{start}", pair.progress)
        return load_checkpoint(cfg.out_dir)[0], {"init_from": str(init), "run": cfg.out_dir}

    return build


METHODS: dict[str, Method] = {
    "model-a": Method("Model A (static)", _model("a"), models="a", is_run=True),
    "model-b": Method("Model B (static, seed + 100)", _model("b"), models="b", is_run=True),
    "model-bg": Method("Model B(G) (dynamic)", _model("b"), models="b", is_run=True),
    "magnitude": Method("magnitude pruning", _fusion("magnitude"), {"tensors": TENSORS}),
    "ensemble": Method("output ensemble (2x cost)", _ensemble),
    "average": Method("parameter averaging", _fusion("average"), {"tensors": TENSORS}),
    "task-arithmetic": Method("task arithmetic", _fusion("task-arithmetic"),
                              {"tensors": TENSORS, "scale": (0.25, 0.5, 0.75, 1.0)}),
    "ties": Method("TIES", _fusion("ties"), {"tensors": TENSORS, "density": (0.2, 0.5), "scale": (0.5, 1.0)}),
    "dare": Method("DARE", _fusion("dare"), {"tensors": TENSORS, "drop": (0.5, 0.9), "scale": (0.5, 1.0)}),
    "cki": Method("CKI soft", _cki(hard=False), {"tensors": TENSORS}),
    "cki-hard": Method("CKI hard", _cki(hard=True), {"tensors": TENSORS}),
    "cki-learned": Method("CKI, learned f_L", _cki_learned, {"tensors": ("head",), "epochs": (LEARN_EPOCHS,)}),
    "cki+epoch": Method("CKI + 1 epoch", _plus_epoch("cki"), options_of="cki"),
    "average+epoch": Method("averaging + 1 epoch", _plus_epoch("average"), options_of="average"),
    "model-a+epoch": Method("Model A + 1 epoch", _plus_epoch("model-a"), models="a"),
}
