"""The fusion baselines run online (Table 3): each request's generated head merged with the static head.

For every sample i and head layer, the two models are the static W0 (in, out) and the generated W_i
(in, out); the merge is the offline baseline of dynrec.fusion.baselines on that pair, batched over samples
as (B, in, out) tensors (the static one expanded, no loop over samples). Task arithmetic, TIES and DARE take
the static head as base, so the one task vector is W_i - W0. TIES trims each sample's task vector by its
own threshold; DARE draws one seeded mask per layer (the seed of offline DARE for `head.weight.<i>`),
shared by every request, so a request's scores do not depend on its batch.
"""

from __future__ import annotations

import torch

from dynrec.errors import FusionError
from dynrec.fusion import baselines
from dynrec.fusion.offline import METHODS, tensor_seed
from dynrec.fusion.online_merge import OnlineMerge, Pairs
from dynrec.models.dynamic import DynamicRecommender

BASELINES = ("average", "magnitude", "task-arithmetic", "ties", "dare")


def merge_per_sample(
    method: str, static: torch.Tensor, generated: torch.Tensor, layer: int = 0, **options
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Baseline `method` of a static (in, out) and per-sample (B, in, out) weights -> merged (B, in, out) and,
    for magnitude, the map of where the generated weight was kept (B, in, out); None for the others."""
    pair = [static.expand_as(generated), generated]
    if method == "average":
        return baselines.average(pair), None
    if method == "magnitude":
        merged, chosen = baselines.magnitude(pair)
        return merged, chosen[1]
    if method == "task-arithmetic":
        return baselines.task_arithmetic(pair, static, **options), None
    if method == "ties":
        return baselines.ties(pair, static, **options, batch_dims=1), None
    if method == "dare":
        seed = tensor_seed(options.pop("seed", 0), f"head.weight.{layer}")
        return baselines.dare(pair, static, **options, seed=seed, batch_dims=1), None
    raise FusionError(f"unknown online baseline {method!r} (expected one of {', '.join(BASELINES)})")


class OnlineBaseline(OnlineMerge):
    """A dynamic model whose generated head weights are merged with its static head by a fusion baseline
    (`method` in BASELINES, with that baseline's options but `base`: the static head is the base)."""

    def __init__(self, model: DynamicRecommender, method: str, **options) -> None:
        super().__init__(model)
        if method not in BASELINES:
            raise FusionError(f"unknown online baseline {method!r} (expected one of {', '.join(BASELINES)})")
        allowed = [name for name in METHODS[method].options if name != "base"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise FusionError(f"online baseline {method!r} has no option {unknown[0]!r} "
                              f"(its options: {', '.join(allowed) or 'none'})")
        self.method, self.options = method, options

    def merge_weights(self, pairs: Pairs, reuse: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        merged = [merge_per_sample(self.method, static, generated, layer, **self.options)
                  for layer, (static, generated) in enumerate(pairs)]
        return [weight for weight, _ in merged], [share for _, share in merged if share is not None]
