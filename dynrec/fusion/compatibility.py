"""CKI's parameter compatibility assessment: how much each of n models' weights counts at each position.

Compatibility-aware Knowledge Integration (Lv et al., AAAI 2025, https://arxiv.org/abs/2501.07596). For the
weights W_1..W_n of one tensor:

    V_L(k) = sum_{l != k} f_L(|W_k - W_l|)            local uncertainty, per position
    E(W)   = -sum_t p_t log p_t                       entropy of W's histogram over u equal-width bins
    V_G(k) = sum_{l != k} f_G(E(W_k) - E(W_l))        global uncertainty, one number per tensor
    V(k)   = V_G(k) (1 - exp(-V_G(k) V_L(k)))         blend; then a softmax over k gives the splicing weights

f_G is the published 0.4/pi * arctan(500 dE) + 1/2 (signed difference, as the official code). The paper
and the official code only have a learned f_L, sigmoid(Linear(|dW|)) with a bias-free linear map; the
parameter-free default here is that map set to the identity, f_L(d) = sigmoid(d), which is also where the
learned form starts. Sums over l != k are taken in sorted order, so the result does not depend on the order
the models are given in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

BINS = 10  # u: histogram bins of the entropy (the paper's setting)
GLOBAL_SCALE = 0.4  # a in f_G(dE) = a/pi * arctan(c dE) + 1/2: V_G stays within 1/2 +- a/2
GLOBAL_SHARPNESS = 500.0  # c: how fast f_G saturates in the entropy difference

LocalFn = Callable[[int, torch.Tensor], torch.Tensor]  # (model k, |W_k - W_l|) -> f_L, per position
GlobalFn = Callable[[torch.Tensor], torch.Tensor]  # E(W_k) - E(W_l) -> f_G


def histogram_entropy(x: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """(..., N) -> (...): entropy of each row's histogram over `bins` equal-width bins from its min to its max.

    The maximum belongs to the last bin (the official code drops it); a constant row has entropy 0. The
    histogram is piecewise constant in x, so this has zero gradient: learning flows through f_L and f_G.
    Batched: one scatter-add of every row's bin counts, no loop over rows.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    flat = x.detach().reshape(-1, x.shape[-1])  # (R, N)
    n = flat.shape[1]
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)  # (R, 1); faster than aminmax on CPU
    scale = (bins / (hi - lo)).nan_to_num_(posinf=0.0)  # a constant row (bins / 0 = inf): all in bin 0
    # In place where possible: on CPU each fresh (R, N) temporary costs page faults as well as a pass.
    position = torch.sub(flat, lo).mul_(scale).clamp_(max=bins - 1)  # (R, N) in [0, bins - 1]: max joins the last bin
    index = position.to(torch.int64)  # truncation is floor here (position >= 0)
    ones = torch.ones((), dtype=torch.int32, device=x.device).expand(index.shape)
    # Counts by a per-row scatter along the last axis: faster here than one bincount over offset indices.
    counts = torch.zeros(len(flat), bins, dtype=torch.int32, device=x.device).scatter_add_(1, index, ones)
    p = counts.to(x.dtype) / n  # (R, bins)
    return -torch.xlogy(p, p).sum(1).view(x.shape[:-1])


def tensor_entropy(x: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """The histogram entropy of a whole tensor (all its elements as one row): a 0-d tensor."""
    return histogram_entropy(x.reshape(1, -1), bins)[0]


def fixed_local(distance: torch.Tensor) -> torch.Tensor:
    """Parameter-free f_L(|W_k - W_l|) = sigmoid(|W_k - W_l|): the learned form's map at its identity start."""
    return torch.sigmoid(distance)


def fixed_global(gap: torch.Tensor) -> torch.Tensor:
    """The published f_G(E_k - E_l) = 0.4/pi * arctan(500 (E_k - E_l)) + 1/2; note f_G(-x) = 1 - f_G(x)."""
    return GLOBAL_SCALE / math.pi * torch.atan(GLOBAL_SHARPNESS * gap) + 0.5


def blend(v_global: torch.Tensor, v_local: torch.Tensor) -> torch.Tensor:
    """V = V_G (1 - exp(-V_G V_L))."""
    return v_global * (1 - torch.exp(-v_global * v_local))


def sum_over_others(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of the n-1 terms l != k in sorted order: bit-identical whatever order the models came in."""
    if len(terms) <= 2:  # float addition of two terms is commutative
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return torch.stack(torch.broadcast_tensors(*terms)).sort(dim=0).values.sum(0)


def assess(
    weights: Sequence[torch.Tensor],
    entropies: Sequence[torch.Tensor],
    local: LocalFn | None = None,
    global_: GlobalFn | None = None,
) -> torch.Tensor:
    """Splicing weights V (n, ...) of n same-shaped (or broadcastable) weights; V sums to 1 over models.

    `entropies[k]` is E(W_k), shaped to broadcast against the weights (a 0-d tensor offline, (B, 1, 1) for
    per-sample weights). `local` and `global_` default to the parameter-free forms.
    """
    n = len(weights)
    if n < 2:
        raise ValueError(f"compatibility needs at least 2 models, got {n}")
    local = local or (lambda k, distance: fixed_local(distance))
    global_ = global_ or fixed_global
    distance = {(k, j): (weights[k] - weights[j]).abs() for k in range(n) for j in range(k + 1, n)}  # pairs k < j
    scores = []
    for k in range(n):
        others = [j for j in range(n) if j != k]
        v_local = sum_over_others([local(k, distance[min(k, j), max(k, j)]) for j in others])
        v_global = sum_over_others([global_(entropies[k] - entropies[j]) for j in others])
        scores.append(blend(v_global, v_local))
    return torch.softmax(torch.stack(torch.broadcast_tensors(*scores)), dim=0)


class LearnedLocal(nn.Module):
    """Learned f_L for model k: sigmoid(|W_k - W_l| M_k^T), a bias-free linear map over the tensor's last axis.

    One map per model (the official code's two-model form is the special case M_B = -M_A, since it gives
    model B 1 - f_L); every map starts at the identity, i.e. at the parameter-free f_L. PyTorch's nn.Linear
    stores (out, in), so the official map mixes along `in`; dynrec's head stores (in, out), so here it
    mixes along `out`.
    """

    def __init__(self, n_models: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(size).repeat(n_models, 1, 1))  # (n, size, size)

    def forward(self, k: int, distance: torch.Tensor) -> torch.Tensor:
        flat = distance.reshape(-1, self.weight.shape[-1])  # a 0-d or 1-d tensor becomes rows of its last axis
        return torch.sigmoid(flat @ self.weight[k].T).reshape(distance.shape)


class LearnedGlobal(nn.Module):
    """Learned monotone f_G(dE) = a/pi * arctan(c dE) + 1/2 with 0 < a < 1/2 and c > 0, starting at the
    published a = 0.4, c = 500. Keeps f_G(-x) = 1 - f_G(x)."""

    def __init__(self) -> None:
        super().__init__()
        ratio = 2 * GLOBAL_SCALE  # a = sigmoid(raw) / 2
        self.raw_scale = nn.Parameter(torch.tensor(math.log(ratio / (1 - ratio))))
        self.raw_sharpness = nn.Parameter(torch.tensor(math.log(GLOBAL_SHARPNESS)))

    def forward(self, gap: torch.Tensor) -> torch.Tensor:
        scale = 0.5 * torch.sigmoid(self.raw_scale)
        return scale / math.pi * torch.atan(self.raw_sharpness.exp() * gap) + 0.5


class LearnedCompatibility(nn.Module):
    """Learned f_L and f_G for named tensors of n models, trained with the models' own weights held fixed
    (see dynrec.fusion.learned). Before training it reproduces the parameter-free assessment exactly."""

    def __init__(self, shapes: Mapping[str, Sequence[int]], n_models: int) -> None:
        super().__init__()
        self.names = list(shapes)
        self.n_models = n_models
        self.local = nn.ModuleList(LearnedLocal(n_models, shape[-1] if len(shape) else 1) for shape in shapes.values())
        self.global_ = nn.ModuleList(LearnedGlobal() for _ in shapes)

    def functions(self, name: str) -> tuple[LocalFn, GlobalFn]:
        """The (f_L, f_G) pair of one tensor, as `assess` takes them."""
        if name not in self.names:
            raise KeyError(f"no learned compatibility for tensor {name!r} (have {', '.join(self.names)})")
        index = self.names.index(name)
        return self.local[index], self.global_[index]
