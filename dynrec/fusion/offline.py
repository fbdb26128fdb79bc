"""Offline fusion of n >= 2 same-shaped state dicts into one: CKI (soft or hard) and the baselines.

`fuse(state_dicts, method, tensors, **options)` checks the inputs, picks the tensors to splice, runs the
method tensor by tensor and returns the fused state dict together with the per-position maps (how much
each model counted where) and a JSON-ready summary. Tensors that are not spliced, and tensors that are not
floating point, come from the first model. Works on any PyTorch state dicts: dynrec's or RecBole's.

Which tensors (`tensors=`):
    head          the head MLP's weight matrices (`...head.weight.<i>`), as the official CKI code splices;
                  the head's biases come from the first model
    head+encoder  everything except the item embedding table and a DUET generator's tensors
    all           every floating-point tensor
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from dynrec.errors import FusionError
from dynrec.fusion import baselines
from dynrec.fusion.compatibility import BINS, LearnedCompatibility, assess, tensor_entropy
from dynrec.fusion.splice import splice

StateDict = Mapping[str, torch.Tensor]
SELECTIONS = ("head", "head+encoder", "all")
HEAD_WEIGHT = re.compile(r"(^|\.)head\.weight\.\d+$")
ITEM_TABLE = re.compile(r"(^|\.)(item_emb|item_embedding)\.weight$")
GENERATOR = re.compile(r"(^|\.)generator\.")
GROUPS = ("head", "rest", "item_table", "generator")  # the parts of a model shares are reported for


@dataclass
class FusionResult:
    """A fused state dict, the maps V (n, *shape) of every spliced tensor that has them, and a summary."""

    state_dict: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One fusion method: a per-tensor function (weights, name, **options) -> (W, maps or None, summary)."""

    run: Callable[..., tuple[torch.Tensor, torch.Tensor | None, dict]]
    options: dict  # option name -> default
    summary: str


def _cki(hard: bool):
    def run(weights, name, bins=BINS, compatibility: LearnedCompatibility | None = None):
        entropies = [tensor_entropy(w, bins) for w in weights]
        local, global_ = compatibility.functions(name) if compatibility is not None else (None, None)
        with torch.no_grad():
            maps = assess(weights, entropies, local, global_)
        fused, used = splice(weights, maps, hard)
        return fused, used, {"entropy": [round(float(e), 6) for e in entropies]}

    return run


def _average(weights, name):
    return baselines.average(weights), None, {}


def _magnitude(weights, name):
    return *baselines.magnitude(weights), {}


def _task_arithmetic(weights, name, base=None, scale=1.0):
    return baselines.task_arithmetic(weights, base, scale), None, {}


def _ties(weights, name, base=None, density=0.2, scale=1.0):
    return baselines.ties(weights, base, density, scale), None, {}


def tensor_seed(seed: int, name: str) -> int:
    """DARE's seed for tensor `name`: each tensor its own stream, the same wherever that tensor is merged."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def _dare(weights, name, base=None, drop=0.9, scale=1.0, seed=0):
    return baselines.dare(weights, base, drop, scale, tensor_seed(seed, name)), None, {}


METHODS: dict[str, Method] = {
    "cki": Method(_cki(hard=False), {"bins": BINS, "compatibility": None},
                  "CKI soft splicing: W = sum_k V(k) W_k (parameter-free, or learned f_L/f_G via compatibility=)"),
    "cki-hard": Method(_cki(hard=True), {"bins": BINS, "compatibility": None},
                       "CKI hard splicing: each position from the model with the largest V(k)"),
    "average": Method(_average, {}, "parameter averaging"),
    "magnitude": Method(_magnitude, {}, "per position, the weight with the largest magnitude"),
    "task-arithmetic": Method(_task_arithmetic, {"base": None, "scale": 1.0}, "base + scale * sum of task vectors"),
    "ties": Method(_ties, {"base": None, "density": 0.2, "scale": 1.0}, "TIES: trim, elect sign, disjoint mean"),
    "dare": Method(_dare, {"base": None, "drop": 0.9, "scale": 1.0, "seed": 0},
                   "DARE: drop and rescale task vectors (seeded), then task arithmetic"),
}


def selected(name: str, tensors: str) -> bool:
    """Whether tensor `name` is spliced under the selection `tensors` (head | head+encoder | all)."""
    if tensors == "head":
        return bool(HEAD_WEIGHT.search(name))
    if tensors == "head+encoder":
        return not (ITEM_TABLE.search(name) or GENERATOR.search(name))
    if tensors == "all":
        return True
    raise FusionError(f"unknown tensor selection {tensors!r} (expected one of {', '.join(SELECTIONS)})")


def group_of(name: str) -> str:
    """The part of the model tensor `name` belongs to, for reporting shares: head (the head's weight
    matrices), item_table, generator, or rest (encoder, position embeddings, head biases)."""
    if HEAD_WEIGHT.search(name):
        return "head"
    if ITEM_TABLE.search(name):
        return "item_table"
    return "generator" if GENERATOR.search(name) else "rest"


def spliced_names(state: StateDict, tensors: str) -> list[str]:
    """The floating-point tensors of `state` that the selection `tensors` splices, in state-dict order."""
    names = [name for name, t in state.items() if t.is_floating_point() and selected(name, tensors)]
    if not names:
        hint = " (a dynrec head's 'head.weight.<i>'); use 'all' for other models" if tensors == "head" else ""
        raise FusionError(f"no tensor matches tensors={tensors!r}{hint}")
    return names


def check_state_dicts(state_dicts: Sequence[StateDict], labels: Sequence[str] | None = None) -> list[str]:
    """Raise FusionError unless there are >= 2 models with the same tensor names and shapes and finite
    floating-point values; returns the names in the first model's order."""
    labels = list(labels) if labels is not None else [f"model {k}" for k in range(len(state_dicts))]
    if len(state_dicts) < 2:
        raise FusionError(f"fusion needs at least 2 models, got {len(state_dicts)}")
    first = state_dicts[0]
    for label, other in zip(labels[1:], state_dicts[1:], strict=True):
        for name, tensor in first.items():
            if name not in other:
                raise FusionError(f"tensor {name!r} of {labels[0]} is missing from {label}")
            if other[name].shape != tensor.shape:
                raise FusionError(f"tensor {name!r} has shape {tuple(tensor.shape)} in {labels[0]} "
                                  f"but {tuple(other[name].shape)} in {label}")
        extra = [name for name in other if name not in first]
        if extra:
            raise FusionError(f"tensor {extra[0]!r} of {label} is missing from {labels[0]}")
    for label, state in zip(labels, state_dicts, strict=True):
        for name, tensor in state.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad = tensor[~torch.isfinite(tensor)].flatten()[0].item()
                raise FusionError(f"tensor {name!r} of {label} holds a non-finite value ({bad}); "
                                  "weights must be finite")
    return list(first)


def _shares(weight_sums: torch.Tensor) -> list[float]:
    """Each model's share of the spliced positions: its map summed over them, over all models' sums (hard
    splicing: the fraction of positions taken from it)."""
    return [round(float(total), 6) for total in weight_sums / weight_sums.sum()]


def fuse(
    state_dicts: Sequence[StateDict],
    method: str = "cki",
    tensors: str = "head",
    labels: Sequence[str] | None = None,
    **options,
) -> FusionResult:
    """Fuse n >= 2 same-shaped state dicts with `method` (see METHODS) over the selected tensors.

    `base` (for task-arithmetic, ties, dare) is a state dict like the others. The fused tensors keep the
    first model's dtypes; they are computed in float32 or wider.
    """
    if method not in METHODS:
        raise FusionError(f"unknown fusion method {method!r} (expected one of {', '.join(METHODS)}; the output "
                          "ensemble is not a single checkpoint: use dynrec.fusion.OutputEnsemble)")
    spec = METHODS[method]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise FusionError(f"method {method!r} has no option {unknown[0]!r} "
                          f"(its options: {', '.join(spec.options) or 'none'})")
    names = check_state_dicts(state_dicts, labels)
    base = options.get("base")
    if base is not None:
        check_state_dicts([state_dicts[0], base], [labels[0] if labels else "model 0", "the base model"])
    spliced = spliced_names(state_dicts[0], tensors)
    learned = options.get("compatibility")
    if learned is not None and (learned.names != spliced or learned.n_models != len(state_dicts)):
        raise FusionError(f"the learned compatibility covers {learned.n_models} models and tensors "
                          f"{learned.names}, but this fusion has {len(state_dicts)} models and tensors {spliced}")
    fused = {name: tensor.clone() for name, tensor in state_dicts[0].items()}
    maps: dict[str, torch.Tensor] = {}
    per_tensor: dict[str, dict] = {}
    weight_sums: dict[str, torch.Tensor] = {}  # per group, each model's map summed over its positions
    for name in spliced:
        dtype = torch.promote_types(state_dicts[0][name].dtype, torch.float32)
        weights = [state[name].to(dtype) for state in state_dicts]
        kwargs = {**options, "base": base[name].to(dtype)} if base is not None else options
        tensor, tensor_maps, summary = spec.run(weights, name, **kwargs)
        fused[name] = tensor.detach().to(state_dicts[0][name].dtype)
        if tensor_maps is not None:
            maps[name] = tensor_maps.detach()
            summary["mean_weight"] = [round(float(m.float().mean()), 6) for m in tensor_maps]
            positions = tensor_maps.detach().double().expand(len(weights), *tensor.shape)
            group = weight_sums.setdefault(group_of(name), torch.zeros(len(weights), dtype=torch.float64))
            group += positions.flatten(1).sum(1)
        per_tensor[name] = summary
    shown = {k: v for k, v in options.items() if k not in ("base", "compatibility")}
    info = {
        "method": method, "summary": spec.summary, "tensors": tensors, "n_models": len(state_dicts),
        "models": list(labels) if labels else None, "options": shown,
        "spliced": spliced, "from_first_model": [n for n in names if n not in spliced], "per_tensor": per_tensor,
        "share": _shares(sum(weight_sums.values())) if maps else None,
        "share_by_group": {group: _shares(weight_sums[group]) for group in GROUPS if group in weight_sums}
        if maps else None,
    }
    if "base" in spec.options:
        info["base"] = "given" if base is not None else "mean of the models"
    if "compatibility" in spec.options:
        info["learned"] = learned is not None
    return FusionResult(fused, maps, info)
