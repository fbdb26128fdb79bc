"""Online CKI: the batched per-sample splice equals the generic n-model splice run sample by sample, a
zero generator leaves the dynamic model unchanged, scoring is per-sample, maps are exposed, and the
learned form trains with the dynamic model frozen."""

from __future__ import annotations

import pytest
import torch

from dynrec.config import load_config
from dynrec.fusion import OnlineCKI
from dynrec.fusion.compatibility import LearnedCompatibility, assess, histogram_entropy
from dynrec.fusion.learned import train_online
from dynrec.fusion.online import entropy_gaps, splice_per_sample
from dynrec.fusion.splice import splice
from dynrec.models import build_model
from dynrec.models.head import LowRank
from tests.conftest import tiny_model_config

N_ITEMS = 30


def _dynamic(name: str = "sasrec", form: str = "full", source: str = "gru"):
    torch.manual_seed(0)
    cfg = tiny_model_config(name, dynamic=True, generator_form=form, generator_source=source, generator_rank=4,
                            generator_window=5, code_size=8)
    model = build_model(cfg, N_ITEMS).eval()
    with torch.no_grad():
        model.generator.maps.weight.mul_(50.0)  # generated weights far enough from the static ones to matter
        for weight in model.backbone.head.weight:
            weight.normal_(std=0.3)
    return model


def _histories(batch: int = 5) -> torch.Tensor:
    seq = torch.randint(1, N_ITEMS + 1, (batch, 12), generator=torch.Generator().manual_seed(1))
    seq[1, :7] = 0
    seq[3, :10] = 0
    return seq


@pytest.mark.parametrize("hard", [False, True])
def test_batched_splice_equals_the_generic_splice_sample_by_sample(hard):
    g = torch.Generator().manual_seed(0)
    static = torch.randn(6, 5, generator=g)
    generated = static + 0.5 * torch.randn(4, 6, 5, generator=g)  # (B, in, out)
    generated[2] = static  # one sample identical to the static weights: ties everywhere
    batched, share = splice_per_sample(static, generated, hard=hard)
    for i in range(len(generated)):
        weights = [static, generated[i]]
        maps = assess(weights, [histogram_entropy(w.flatten()) for w in weights])
        expected, used = splice(weights, maps, hard)
        assert torch.allclose(batched[i], expected, atol=1e-6)
        assert torch.allclose(share[i], used[1], atol=1e-6)


@pytest.mark.parametrize("tie", [False, True])
def test_hard_splicing_into_the_generated_temporary_gives_the_same_weights(tie):
    g = torch.Generator().manual_seed(4)
    static = torch.randn(6, 5, generator=g)
    generated = static + torch.randn(4, 6, 5, generator=g) * torch.tensor([0.1, 2.0, 0.1, 2.0])[:, None, None]
    if tie:
        generated[3] = static  # equal entropies: position by position, so no rows to overwrite
    expected, expected_map = splice_per_sample(static, generated, hard=True)
    temporary = generated.clone()
    with torch.no_grad():
        spliced, share = splice_per_sample(static, temporary, hard=True, reuse=True)
    assert torch.equal(spliced, expected) and torch.equal(share, expected_map)
    assert (spliced.data_ptr() == temporary.data_ptr()) != tie  # written in place unless a tie needs a new one
    assert 0 < share[:, 0, 0].sum() < len(generated)  # some samples take the static head, some their own
    untouched = generated.clone()
    splice_per_sample(static, generated, hard=True, reuse=True)  # with a graph allowed, never in place
    assert torch.equal(generated, untouched)


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("hard", [False, True])
def test_the_in_place_inference_splice_is_bit_identical_to_the_differentiable_one(hard, learned):
    g = torch.Generator().manual_seed(3)
    static = torch.randn(6, 5, generator=g)
    generated = static + 0.5 * torch.randn(4, 6, 5, generator=g)
    local = global_ = None
    if learned:
        compatibility = LearnedCompatibility({"w": (6, 5)}, n_models=2)
        with torch.no_grad():
            compatibility.local[0].weight.add_(0.1 * torch.randn(2, 5, 5, generator=g))
        local, global_ = compatibility.functions("w")
    expected = splice_per_sample(static, generated, hard=hard, local=local, global_=global_)
    with torch.no_grad():
        in_place = splice_per_sample(static, generated, hard=hard, local=local, global_=global_)
    assert all(torch.equal(a, b.detach()) for a, b in zip(in_place, expected, strict=True))
    assert expected[1].requires_grad == (learned and not hard)  # with grad enabled, the map keeps its graph


@pytest.mark.parametrize("form", ["full", "lowrank"])
@pytest.mark.parametrize("hard", [False, True])
def test_online_scores_are_per_sample_and_expose_maps(form, hard):
    model = _dynamic(form=form)
    online = OnlineCKI(model, hard=hard).eval()
    seq = _histories()
    with torch.no_grad():
        batched = online.score_all(seq)
        maps = online.last_maps
        single = torch.cat([online.score_all(seq[i : i + 1]) for i in range(len(seq))])
    assert torch.allclose(batched, single, atol=1e-4)
    assert torch.isfinite(batched[:, 1:]).all()
    assert [m.shape for m in maps] == [(len(seq), i, o) for i, o in model.backbone.head.layer_shapes]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)
    generated = model.generate(seq)
    dense = generated[0][0].dense() if isinstance(generated[0][0], LowRank) else generated[0][0]
    spliced, _ = online.splice(generated)
    assert torch.allclose(model.score_all(seq, spliced), batched, atol=1e-4)  # scoring is the dynamic model's
    static = model.backbone.head.weight[0]
    if hard:  # every position from one of the two; with a symmetric f_L two models never split a tensor
        assert ((spliced[0][0] == dense) | (spliced[0][0] == static)).all()
    else:
        assert not torch.allclose(spliced[0][0], dense)  # the splice moved the generated weights
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(online.score_candidates(seq, cand), batched.gather(1, cand), atol=1e-4)


def test_a_zero_generator_leaves_the_dynamic_model_unchanged():
    model = _dynamic()
    with torch.no_grad():
        model.generator.maps.weight.zero_()
        model.generator.maps.bias.zero_()
    seq = _histories()
    with torch.no_grad():
        assert torch.allclose(OnlineCKI(model).score_all(seq), model.score_all(seq), atol=1e-5)


@pytest.mark.parametrize(("name", "source"), [("din", "gru"), ("gru4rec", "backbone")])
def test_other_backbones_and_sources(name, source):
    model = _dynamic(name, source=source)
    online = OnlineCKI(model).eval()
    seq = _histories()
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        spliced, _ = online.splice(model.generate(seq, model.backbone.last_features(seq) if source == "backbone"
                                                  else None))
        assert torch.allclose(online.score_candidates(seq, cand), model.score_candidates(seq, cand, spliced),
                              atol=1e-4)


def test_learned_online_cki_trains_with_the_dynamic_model_frozen(cyclic_file, cyclic_data, tmp_path):
    cfg = load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path}", "train.mode=window",
                             "train.loss=ce", "train.batch_size=64", "eval.protocols=[full]"])
    torch.manual_seed(0)
    model = build_model(tiny_model_config("sasrec", dynamic=True, generator_window=5, code_size=8),
                        cyclic_data.n_items)
    with torch.no_grad():  # scores far from uniform, generated heads far from the static one
        model.item_emb.weight.normal_()
        model.generator.maps.weight.mul_(50.0)
        for weight in model.backbone.head.weight:
            weight.normal_(std=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    online = OnlineCKI(model, learned=True)
    start = {k: v.clone() for k, v in online.compatibility.state_dict().items()}
    history = train_online(online, cyclic_data, cfg, epochs=3, lr=0.05)
    losses = [record["loss"] for record in history["history"][1:]]
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # frozen only while training
    if history["best_epoch"] > 0:
        assert any(not torch.equal(start[k], v) for k, v in online.compatibility.state_dict().items())


def test_the_static_entropy_cache_follows_in_place_changes_to_the_static_head():
    model = _dynamic()
    online = OnlineCKI(model).eval()
    seq = _histories()
    with torch.no_grad():
        online.score_all(seq)  # fills the cache
        model.backbone.head.weight[0][0, 0] = 100.0  # an outlier: most weights now share one bin (in place)
        after = online.score_all(seq)
        fresh = OnlineCKI(model).eval().score_all(seq)
    assert torch.equal(after, fresh)
    expected = histogram_entropy(model.backbone.head.weight[0].detach().flatten())
    assert torch.equal(online.static_entropy(0, model.backbone.head.weight[0]), expected)


@pytest.mark.parametrize("batch", [2, 100])  # layers share a histogram call at batch 2, not at 100
def test_entropy_gaps_equal_each_samples_own_histogram_entropy(batch):
    g = torch.Generator().manual_seed(5)
    pairs = [(torch.randn(32, 32, generator=g), torch.randn(batch, 32, 32, generator=g) * (1 + layer))
             for layer in range(2)]
    pairs.append((torch.randn(8, 4, generator=g), torch.randn(batch, 8, 4, generator=g)))  # another size
    gaps = entropy_gaps(pairs)
    for (static, generated), gap in zip(pairs, gaps, strict=True):
        assert gap.shape == (batch, 1, 1)
        each = torch.stack([histogram_entropy(w.flatten()) for w in generated])
        assert torch.equal(gap.flatten(), each - histogram_entropy(static.flatten()))
