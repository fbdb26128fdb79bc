"""Online baselines (Table 3): each batched merge equals the offline baseline run sample by sample on (static,
generated_i), TIES trims every sample by its own threshold, DARE's masks do not depend on the batch, and the
wrapper scores through the dynamic model with the merged head."""

from __future__ import annotations

import pytest
import torch

from dynrec.errors import FusionError
from dynrec.fusion import OnlineBaseline, baselines
from dynrec.fusion.offline import tensor_seed
from dynrec.fusion.online_baselines import merge_per_sample
from dynrec.models import build_model
from tests.conftest import tiny_model_config

N_ITEMS = 30


def _static_and_generated(batch: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A static (6, 5) head layer and per-sample layers whose deltas differ in scale from sample to sample."""
    g = torch.Generator().manual_seed(0)
    static = torch.randn(6, 5, generator=g)
    scales = torch.tensor([0.1, 1.0, 5.0, 0.5, 2.0])[:batch, None, None]
    generated = static + scales * torch.randn(batch, 6, 5, generator=g)  # (B, in, out)
    generated[3] = static  # one sample identical to the static weights: a zero task vector
    return static, generated


def _offline(method: str, static: torch.Tensor, sample: torch.Tensor, layer: int, options: dict):
    """The offline baseline on the two models (static, one sample's generated weights), base = the static one."""
    pair = [static, sample]
    if method == "average":
        return baselines.average(pair), None
    if method == "magnitude":
        merged, chosen = baselines.magnitude(pair)
        return merged, chosen[1]
    if method == "task-arithmetic":
        return baselines.task_arithmetic(pair, static, **options), None
    if method == "ties":
        return baselines.ties(pair, static, **options), None
    seed = tensor_seed(options["seed"], f"head.weight.{layer}")
    return baselines.dare(pair, static, options["drop"], options["scale"], seed), None


CASES = [
    ("average", {}),
    ("magnitude", {}),
    ("task-arithmetic", {"scale": 0.5}),
    ("ties", {"density": 0.2, "scale": 1.0}),
    ("ties", {"density": 0.5, "scale": 0.5}),
    ("dare", {"drop": 0.5, "scale": 1.0, "seed": 3}),
]


@pytest.mark.parametrize(("method", "options"), CASES)
@pytest.mark.parametrize("layer", [0, 1])
def test_each_batched_merge_equals_the_offline_baseline_sample_by_sample(method, options, layer):
    static, generated = _static_and_generated()
    merged, share = merge_per_sample(method, static, generated, layer, **options)
    assert merged.shape == generated.shape
    for i in range(len(generated)):
        expected, expected_share = _offline(method, static, generated[i], layer, options)
        assert torch.allclose(merged[i], expected, atol=1e-6), (method, i)
        if expected_share is not None:
            assert torch.equal(share[i], expected_share)
    assert (share is None) == (method != "magnitude")


def test_ties_trims_each_sample_by_its_own_threshold():
    static = torch.zeros(2, 2)
    generated = torch.stack([torch.tensor([[1.0, -2.0], [3.0, 4.0]]), torch.tensor([[10.0, 20.0], [-30.0, 40.0]])])
    per_sample, _ = merge_per_sample("ties", static, generated, density=0.5)
    # each sample keeps its own two largest entries
    assert torch.equal(per_sample, torch.tensor([[[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [-30.0, 40.0]]]))
    # one threshold over the whole batch (the 4 largest of 8 entries) would trim the first sample to zero
    batch_wide = baselines.ties([static.expand_as(generated), generated], static, density=0.5)
    assert torch.equal(batch_wide, torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[10.0, 20.0], [-30.0, 40.0]]]))
    assert not torch.equal(per_sample, batch_wide)


def test_dare_merges_a_request_the_same_way_in_any_batch():
    static, generated = _static_and_generated()
    alone, _ = merge_per_sample("dare", static, generated[1:2], drop=0.9, scale=1.0, seed=0)
    batched, _ = merge_per_sample("dare", static, generated, drop=0.9, scale=1.0, seed=0)
    assert torch.equal(alone[0], batched[1])
    reseeded, _ = merge_per_sample("dare", static, generated, drop=0.9, scale=1.0, seed=1)
    assert not torch.equal(reseeded, batched)


def test_batch_dims_are_checked():
    static, generated = _static_and_generated()
    with pytest.raises(ValueError, match="batch_dims must be in"):
        baselines.ties([static.expand_as(generated), generated], static, batch_dims=3)


def _dynamic(form: str = "full"):
    torch.manual_seed(0)
    cfg = tiny_model_config("sasrec", dynamic=True, generator_form=form, generator_rank=4, generator_window=5,
                            code_size=8)
    model = build_model(cfg, N_ITEMS).eval()
    with torch.no_grad():
        model.generator.maps.weight.mul_(50.0)  # generated weights far enough from the static ones to matter
    return model


def _histories(batch: int = 5) -> torch.Tensor:
    seq = torch.randint(1, N_ITEMS + 1, (batch, 12), generator=torch.Generator().manual_seed(1))
    seq[1, :7] = 0
    return seq


@pytest.mark.parametrize(("method", "options"), CASES)
@pytest.mark.parametrize("form", ["full", "lowrank"])
def test_online_baseline_scores_each_request_with_its_merged_head(method, options, form):
    model = _dynamic(form)
    online = OnlineBaseline(model, method, **options).eval()
    seq = _histories()
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched = online.score_all(seq)
        maps = online.last_maps
        single = torch.cat([online.score_all(seq[i : i + 1]) for i in range(len(seq))])
        merged, _ = online.splice(model.generate(seq))
        assert torch.allclose(batched, single, atol=1e-4)
        assert torch.allclose(model.score_all(seq, merged), batched, atol=1e-4)
        assert torch.allclose(online.score_candidates(seq, cand), batched.gather(1, cand), atol=1e-4)
    shapes = [(len(seq), i, o) for i, o in model.backbone.head.layer_shapes]
    assert [m.shape for m in maps] == (shapes if method == "magnitude" else [])


def test_task_arithmetic_at_scale_one_is_the_dynamic_model():
    model = _dynamic()
    seq = _histories()
    with torch.no_grad():
        scores = OnlineBaseline(model, "task-arithmetic", scale=1.0).score_all(seq)
        assert torch.allclose(scores, model.score_all(seq), atol=1e-5)
        assert not torch.allclose(OnlineBaseline(model, "average").score_all(seq), scores, atol=1e-3)


def test_unknown_baselines_and_options_are_named():
    model = _dynamic()
    with pytest.raises(FusionError, match="unknown online baseline 'cki'"):
        OnlineBaseline(model, "cki")
    with pytest.raises(FusionError, match="'ties' has no option 'base'"):
        OnlineBaseline(model, "ties", base=None)
