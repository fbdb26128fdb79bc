"""Invariants of the encoders and the functional head: causality, padding, batched per-sample weights."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dynrec.models import build_model, din
from dynrec.models.gru4rec import realign
from dynrec.models.head import MLPHead, linear
from dynrec.models.losses import full_cross_entropy
from dynrec.train import trim_padding
from tests.conftest import tiny_model_config

N_ITEMS = 40


def _model(name: str, **overrides):
    torch.manual_seed(0)
    return build_model(tiny_model_config(name, **overrides), N_ITEMS).eval()


def _histories(batch: int = 5, length: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, N_ITEMS + 1, (batch, length), generator=g)
    lengths = torch.tensor([length, 7, 3, 1, 10])[:batch]
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]
    return seq.masked_fill(pad, 0)  # left-padded


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_states_are_causal(name):
    model, seq = _model(name), _histories()
    changed = seq.clone()
    changed[:, -1] = (changed[:, -1] % N_ITEMS) + 1  # alter only the most recent item
    before, after = model.states(seq), model.states(changed)
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)  # earlier positions cannot see it
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_last_state_is_the_final_position_of_states(name):
    model, seq = _model(name), _histories()
    assert torch.allclose(model.last_state(seq), model.states(seq)[:, -1], atol=1e-5)
    assert torch.isfinite(model.last_state(torch.zeros(2, 3, dtype=torch.long))).all()  # empty histories stay finite


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "din"])
def test_extra_left_padding_changes_nothing(name):
    model, seq = _model(name), _histories(length=8)
    padded = F.pad(seq, (4, 0))  # same histories, 4 more padding columns
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 6), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model.score_candidates(seq, cand), model.score_candidates(padded, cand), atol=1e-5)
    assert torch.allclose(model.score_all(seq), model.score_all(padded), atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_padded_positions_do_not_reach_real_ones(name):
    model, seq = _model(name), _histories()
    real = seq > 0
    with torch.no_grad():
        reference = model.states(seq)[real]
        model.item_emb.weight[0].normal_()  # whatever the padding row holds, real positions must not see it
        assert torch.allclose(model.states(seq)[real], reference, atol=1e-5)


def test_din_scores_each_candidate_independently():
    model, seq = _model("din"), _histories()
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 6), generator=torch.Generator().manual_seed(4))
    full = model.score_candidates(seq, cand)
    alone = torch.cat([model.score_candidates(seq, cand[:, j : j + 1]) for j in range(cand.shape[1])], dim=1)
    assert torch.allclose(full, alone, atol=1e-6)
    assert torch.allclose(model.score_all(seq).gather(1, cand), full, atol=1e-5)


def test_din_attention_over_many_candidates_equals_the_summed_first_layer():
    model, seq = _model("din"), _histories()
    g = torch.Generator().manual_seed(5)
    hist, cand = model.item_emb(seq), model.item_emb(torch.randint(1, N_ITEMS + 1, (len(seq), 50), generator=g))
    with torch.no_grad():
        assert torch.allclose(model.attention.scores_many(hist, cand), model.attention.scores(hist, cand), atol=1e-6)
        fast = model.score_all(seq)  # N_ITEMS candidates >= MANY_CANDIDATES: the per-position route
    assert N_ITEMS >= din.MANY_CANDIDATES
    assert torch.allclose(fast, model.score_all(seq), atol=1e-6)  # with a graph: the summed route


def test_din_inference_in_blocks_of_users_equals_one_block(monkeypatch):
    model, seq = _model("din"), _histories()
    with torch.no_grad():
        whole = model.score_all(seq)
        cand = torch.randint(1, N_ITEMS + 1, (len(seq), 40), generator=torch.Generator().manual_seed(6))
        sampled = model.score_candidates(seq, cand)
        monkeypatch.setattr(din, "BLOCK_VALUES", 2 * 40 * 12 * 8)  # 2 users per block at 40 candidates, 1 at 512
        assert model.block_users(512, seq.shape[1]) < len(seq) and model.block_users(40, seq.shape[1]) < len(seq)
        assert torch.allclose(model.score_all(seq), whole, atol=1e-6)
        assert torch.allclose(model.score_candidates(seq, cand), sampled, atol=1e-6)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_score_all_matches_score_candidates(name):
    model, seq = _model(name), _histories()
    cand = torch.arange(1, N_ITEMS + 1).expand(len(seq), -1)
    scores = model.score_all(seq)
    assert scores.shape == (len(seq), N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.allclose(scores[:, 1:], model.score_candidates(seq, cand), atol=1e-5)


def test_realign_round_trip():
    seq = _histories()
    lengths = (seq > 0).sum(1)
    right = realign(seq, lengths, to_left=False)
    for row, n in zip(right, lengths, strict=True):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    assert torch.equal(realign(right, lengths, to_left=True), seq)


def test_trim_padding_is_exact_for_sasrec():
    model, seq = _model("sasrec"), _histories(length=12)
    seq[:, :3] = 0  # at least three all-padding columns
    targets = torch.roll(seq, -1, dims=1)
    trimmed, trimmed_targets = trim_padding(seq, targets)
    assert trimmed.shape[1] == int((seq > 0).sum(1).max())
    assert torch.allclose(model.training_loss(seq, targets, "ce"), model.training_loss(trimmed, trimmed_targets, "ce"))


def test_per_sample_head_weights_equal_a_loop():
    torch.manual_seed(0)
    head = MLPHead([8, 16, 8], residual=True)
    x = torch.randn(4, 5, 8)  # (B, T, in)
    weights = [(torch.randn(4, i, o), torch.randn(4, o)) for i, o in head.layer_shapes]
    batched = head(x, weights)
    for b in range(4):
        single = head(x[b : b + 1], [(w[b], bias[b]) for w, bias in weights])
        assert torch.allclose(batched[b], single[0], atol=1e-5)


def test_linear_shared_and_expanded_weights_agree():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 7), torch.randn(7, 5), torch.randn(5)
    assert torch.allclose(linear(x, w, b), linear(x, w.expand(3, 7, 5), b.expand(3, 5)), atol=1e-6)


def test_chunked_cross_entropy_matches_reference():
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    table = torch.randn(21, 8, requires_grad=True)
    targets = torch.randint(0, 21, (37,))
    reference = F.cross_entropy(h @ table.T, targets)
    grad_h, grad_t = torch.autograd.grad(reference, (h, table))
    ours = full_cross_entropy(h, table, targets, chunk=5)
    ours_h, ours_t = torch.autograd.grad(ours * 1.0, (h, table))
    assert torch.allclose(ours, reference, atol=1e-6)
    assert torch.allclose(ours_h, grad_h, atol=1e-6) and torch.allclose(ours_t, grad_t, atol=1e-6)


def test_bce_loss_uses_negatives():
    model, seq = _model("sasrec"), _histories()
    targets = torch.roll(seq, -1, dims=1)
    g = torch.Generator().manual_seed(0)
    neg_a = torch.randint(1, N_ITEMS + 1, (*targets.shape, 4), generator=g)
    neg_b = torch.randint(1, N_ITEMS + 1, (*targets.shape, 4), generator=g)
    loss_a, loss_b = (model.training_loss(seq, targets, "bce", n) for n in (neg_a, neg_b))
    assert torch.isfinite(loss_a) and not torch.isclose(loss_a, loss_b)
