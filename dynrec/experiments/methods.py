"""The methods of the paper's Tables 1, 3 and 4, each built as a scorer from a pair of trained models.

Model A is a static run; model B is a static run of another seed (Tables 1 and 4) or the dynamic run B(G)
of A's seed (Table 3). Fusion methods fuse A with B's backbone (a static model is its own backbone), the
tensors they do not splice coming from A. With B(G) the fused backbone goes under B(G)'s generator, so every
fused model of Table 3 stays dynamic, and CKI then also splices the (fused) static head with the head
generated for each request (online CKI). Task arithmetic, TIES and DARE take model A as their base: B's
task vector is B - A. Options in a method's grid are chosen on validation (tables.py); the others are the
published defaults (CKI: 10 bins; DARE: seed 0).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dynrec.checkpoint import load_checkpoint, load_tensors
from dynrec.config import RunConfig
from dynrec.data.preprocess import SequenceData
from dynrec.experiments.cache import payload_key
from dynrec.experiments.runner import run_cached
from dynrec.fusion import METHODS as FUSIONS
from dynrec.fusion import FusionResult, OnlineCKI, OutputEnsemble, fuse
from dynrec.fusion.files import is_dynrec_checkpoint, write_fused
from dynrec.fusion.learned import train_compatibility, train_online
from dynrec.models import DynamicRecommender, Recommender

TENSORS = ("head", "head+encoder", "all")  # which tensors a fusion splices: chosen on validation
LEARN_EPOCHS = 3  # epochs of learning f_L (validation picks the best of epochs 0..3)


@dataclass
class Pair:
    """Two trained models of one dataset, backbone and seed, with what building a method needs."""

    a: Recommender
    b: Recommender  # static (Tables 1, 4) or dynamic (Table 3)
    dirs: tuple[Path, Path]  # their run directories
    keys: tuple[str, str]  # their config keys (runner.config_key)
    cfg: RunConfig  # model A's run config: training setting, evaluation settings, selection metric
    data: SequenceData
    root: Path  # where runs derived from the pair are cached (Table 4's extra epoch)
    name: str  # <dataset>-<backbone>-s<seed>, for file names
    progress: bool = False


Built = tuple[Recommender, dict]  # the scorer and JSON-ready details of how it was made


@dataclass(frozen=True)
class Method:
    """One row of a table: how to build its scorer, and which of its options validation chooses."""

    label: str  # how the report names it
    build: Callable[[Pair, dict], Built]
    grid: dict[str, tuple] = field(default_factory=dict)  # option -> candidates; every combination is tried
    models: str = "ab"  # which trained models it reads: "a", "b" or "ab" (part of its cache key)
    options_of: str | None = None  # take the options this other method chose on validation


def backbone_state(model: Recommender) -> dict:
    """The state dict of a model's backbone: a dynamic model's wrapped backbone, a static model itself."""
    backbone = model.backbone if isinstance(model, DynamicRecommender) else model
    return {name: tensor.detach() for name, tensor in backbone.state_dict().items()}


def with_backbone(model: Recommender, state: dict) -> Recommender:
    """A copy of `model` (in eval mode) whose backbone holds `state`; the model itself is not changed."""
    result = copy.deepcopy(model).eval()
    load_tensors(result.backbone if isinstance(result, DynamicRecommender) else result, state, "fused weights")
    return result


def fused(pair: Pair, method: str, options: dict) -> FusionResult:
    """Fuse A with B's backbone by `method`; `options` holds `tensors` and the method's own options."""
    states = [backbone_state(pair.a), backbone_state(pair.b)]
    method_options = {key: value for key, value in options.items() if key != "tensors"}
    if "base" in FUSIONS[method].options:
        method_options["base"] = states[0]
    return fuse(states, method, options["tensors"], labels=["model A", "model B"], **method_options)


def _model(which: str) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        return (pair.a if which == "a" else pair.b), {}

    return build


def _ensemble(pair: Pair, options: dict) -> Built:
    return OutputEnsemble([pair.a, pair.b]), {"cost": "two models' weights and inference"}


def _fusion(method: str) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        result = fused(pair, method, options)
        return with_backbone(pair.b, result.state_dict), {"spliced": result.info["spliced"]}

    return build


def _cki(hard: bool) -> Callable[[Pair, dict], Built]:
    def build(pair: Pair, options: dict) -> Built:
        result = fused(pair, "cki-hard" if hard else "cki", options)
        model = with_backbone(pair.b, result.state_dict)
        online = isinstance(model, DynamicRecommender)
        details = {"spliced": result.info["spliced"], "online": online}
        return (OnlineCKI(model, hard=hard).eval() if online else model), details

    return build


def _cki_learned(pair: Pair, options: dict) -> Built:
    """Static pair: f_L/f_G learned for the offline splice. Dynamic pair: the backbones spliced by the
    parameter-free CKI, then f_L/f_G of the online splice learned with the dynamic model frozen."""
    tensors, epochs = options["tensors"], options["epochs"]
    if isinstance(pair.b, DynamicRecommender):
        online = OnlineCKI(with_backbone(pair.b, fused(pair, "cki", {"tensors": tensors}).state_dict), learned=True)
        history = train_online(online, pair.data, pair.cfg, epochs, progress=pair.progress)
        return online.eval(), {"online": True, "learning": history}
    states = [backbone_state(pair.a), backbone_state(pair.b)]
    compatibility, history = train_compatibility(copy.deepcopy(pair.a), states, pair.data, pair.cfg, tensors, epochs,
                                                 progress=pair.progress)
    result = fuse(states, "cki", tensors, compatibility=compatibility)
    return with_backbone(pair.b, result.state_dict), {"online": False, "learning": history}


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
    "model-a": Method("Model A (static)", _model("a"), models="a"),
    "model-b": Method("Model B (static, seed + 100)", _model("b"), models="b"),
    "model-bg": Method("Model B(G) (dynamic)", _model("b"), models="b"),
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
