"""The DUET-style dynamic models: batched per-sample heads equal one-at-a-time scoring, generation depends
on the history and only on it, gradients reach the generator, and the low-rank form is exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dynrec.config import load_config
from dynrec.errors import ConfigError
from dynrec.models import DynamicRecommender, build_model, din
from dynrec.models.generator import recent_windows
from dynrec.models.head import LowRank, linear
from dynrec.train import train
from tests.conftest import tiny_model_config

N_ITEMS = 40
VARIANTS = [(name, source, form) for name in ("sasrec", "gru4rec", "din") for source in ("gru", "backbone")
            for form in ("full", "lowrank") if not (name == "din" and source == "backbone")]


def _dynamic(name: str, source: str = "gru", form: str = "full") -> DynamicRecommender:
    torch.manual_seed(0)
    cfg = tiny_model_config(name, dynamic=True, generator_source=source, generator_form=form, generator_rank=4,
                            generator_window=5, code_size=8)
    model = build_model(cfg, N_ITEMS).eval()
    with torch.no_grad():  # make the generated deltas large enough to matter in the comparisons
        model.generator.maps.weight.mul_(20.0)
    return model


def _histories(batch: int = 6, length: int = 12, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, N_ITEMS + 1, (batch, length), generator=g)
    lengths = torch.tensor([12, 9, 5, 3, 1, 12])[:batch]
    return seq.masked_fill(torch.arange(length)[None, :] < (length - lengths)[:, None], 0)


@pytest.mark.parametrize(("name", "source", "form"), VARIANTS)
def test_batched_per_sample_heads_equal_one_at_a_time(name, source, form):
    model, seq = _dynamic(name, source, form), _histories()
    cand = torch.randint(1, N_ITEMS + 1, (len(seq), 7), generator=torch.Generator().manual_seed(4))
    batched = model.score_candidates(seq, cand)
    single = torch.cat([model.score_candidates(seq[i : i + 1], cand[i : i + 1]) for i in range(len(seq))])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(model.score_all(seq).gather(1, cand), batched, atol=1e-5)


@pytest.mark.parametrize("form", ["full", "lowrank"])
def test_din_full_ranking_in_blocks_of_users_keeps_each_users_generated_head(form, monkeypatch):
    model, seq = _dynamic("din", form=form), _histories()
    with torch.no_grad():
        whole = model.score_all(seq)
        monkeypatch.setattr(din, "BLOCK_VALUES", 1)  # one user per block: per-sample weights sliced per block
        assert torch.allclose(model.score_all(seq), whole, atol=1e-6)
        assert torch.allclose(model.score_all(seq[2:3]), whole[2:3], atol=1e-6)


@pytest.mark.parametrize("form", ["full", "lowrank"])
def test_generated_weights_follow_the_history(form):
    model = _dynamic("sasrec", "gru", form)
    seq = _histories()
    seq[5] = seq[0]  # rows 0 and 5: the same history
    dense = [w.dense() if isinstance(w, LowRank) else w for w, _ in model.generate(seq)]
    for weight in dense:
        assert weight.shape[0] == len(seq)
        assert torch.allclose(weight[0], weight[5], atol=1e-6)  # batched BLAS may differ in the last bit
        assert not torch.allclose(weight[0], weight[1])  # different histories, different heads


def test_generation_reads_only_the_window():
    model = _dynamic("sasrec", "gru")
    seq = _histories(length=12)
    older = seq.clone()
    older[:, :4] = torch.randint(1, N_ITEMS + 1, (len(seq), 4))  # change items outside the 5-item window
    first, second = model.generate(seq), model.generate(older)
    assert all(torch.allclose(a, b, atol=1e-6) for (a, _), (b, _) in zip(first, second, strict=True))


def test_padding_does_not_enter_the_generator_gru():
    model = _dynamic("sasrec", "gru")
    seq = _histories()[:, -4:]  # short windows, some left-padded
    padded = torch.nn.functional.pad(seq, (6, 0))
    assert all(torch.allclose(a, b, atol=1e-6) for (a, _), (b, _) in
               zip(model.generate(seq), model.generate(padded), strict=True))


@pytest.mark.parametrize(("name", "mode"), [("sasrec", "sequence"), ("gru4rec", "window"), ("din", "window")])
def test_gradients_reach_the_generator(name, mode):
    model = _dynamic(name).train()
    seq = _histories()
    if mode == "sequence":
        targets, loss = torch.roll(seq, -1, 1).masked_fill(seq == 0, 0), "ce"
        targets[:, -1] = 1
        negatives = None
    else:
        targets, loss = torch.randint(1, N_ITEMS + 1, (len(seq),)), "bce"
        negatives = torch.randint(1, N_ITEMS + 1, (len(seq), 4))
    model.training_loss(seq, targets, loss, negatives).backward()
    for pname, p in model.generator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_low_rank_form_equals_the_explicit_product():
    torch.manual_seed(0)
    base, left, core, right = torch.randn(6, 5), torch.randn(6, 3), torch.randn(4, 3, 3), torch.randn(3, 5)
    bias, x = torch.randn(4, 5), torch.randn(4, 7, 6)
    factored = LowRank(base, left, core, right)
    explicit = base + torch.einsum("ik,bkl,lo->bio", left, core, right)  # (B, in, out)
    assert torch.allclose(factored.dense(), explicit, atol=1e-5)
    expected = torch.einsum("bti,bio->bto", x, explicit) + bias[:, None]
    assert torch.allclose(linear(x, factored, bias), expected, atol=1e-4)


def test_sequence_mode_windows_are_each_positions_own():
    seq = torch.tensor([[0, 0, 3, 4, 5]])
    windows = recent_windows(seq, 3)
    assert windows.tolist() == [[[0, 0, 0], [0, 0, 0], [0, 0, 3], [0, 3, 4], [3, 4, 5]]]


def test_a_zero_generator_is_the_static_model():
    model = _dynamic("gru4rec")
    with torch.no_grad():
        model.generator.maps.weight.zero_()
        model.generator.maps.bias.zero_()
    seq = _histories()
    assert torch.allclose(model.score_all(seq)[:, 1:], model.backbone.score_all(seq)[:, 1:], atol=1e-5)


def test_generator_dropout_acts_on_the_code_in_training_only():
    seq = _histories()
    plain, dropped = _dynamic("sasrec"), _dynamic("sasrec")
    dropped.generator.code_dropout = torch.nn.Dropout(0.5)
    dropped.eval()
    assert isinstance(plain.generator.code_dropout, torch.nn.Identity)  # off: no module draws random numbers
    assert torch.equal(dropped.score_all(seq), plain.score_all(seq))  # eval mode: the same model
    dropped.train()
    torch.manual_seed(1)
    first = dropped.generate(seq)[0][0]
    assert not torch.allclose(first, dropped.generate(seq)[0][0])  # each pass drops other parts of z
    assert not torch.allclose(first, plain.generate(seq)[0][0])
    built = build_model(tiny_model_config("gru4rec", dynamic=True, generator_dropout=0.3), N_ITEMS)
    assert built.generator.code_dropout.p == 0.3
    with pytest.raises(ConfigError, match=r"model.generator_dropout: 1.0 is not in \[0, 1\)"):
        build_model(tiny_model_config("gru4rec", dynamic=True, generator_dropout=1.0), N_ITEMS)


def test_din_refuses_the_backbone_source():
    with pytest.raises(ConfigError, match="din has no candidate-free state"):
        build_model(tiny_model_config("din", dynamic=True, generator_source="backbone"), N_ITEMS)


def test_dynamic_on_a_frozen_static_model(tmp_path, cyclic_file):
    tiny = ["model.hidden_size=16", "model.max_len=10", "model.head_hidden=[16]", "model.dropout=0.0",
            "train.batch_size=16", "train.lr=0.01", "eval.sampled_negatives=10", "eval.protocols=[full]"]
    static = load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / 'static'}", *tiny,
                                "train.epochs=3"])
    train(static, progress=False)
    dynamic = load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / 'dynamic'}", *tiny,
                                 "train.epochs=2", "model.dynamic=true", f"train.init_from={tmp_path / 'static'}",
                                 "train.freeze_backbone=true"])
    result = train(dynamic, progress=False)
    before = load_file(str(tmp_path / "static" / "model.safetensors"))
    after = load_file(str(tmp_path / "dynamic" / "model.safetensors"))
    assert all(torch.equal(before[name], after[f"backbone.{name}"]) for name in before)  # frozen: unchanged
    assert any(name.startswith("generator.") for name in after)
    assert result["test"]["full"]["ndcg@10"] > 0


def test_select_start_keeps_a_start_no_epoch_beats_and_leaves_the_epochs_unchanged(tmp_path, cyclic_file):
    """With train.select_start the starting weights are validated as epoch 0: a run whose epochs never beat it
    (lr 0) returns its start; otherwise its epochs (losses, validation, selection) are those of the run without."""
    tiny = ["model.hidden_size=16", "model.max_len=10", "model.head_hidden=[16]", "model.dropout=0.2",
            "train.batch_size=16", "eval.sampled_negatives=10", "eval.protocols=[sampled]"]
    train(load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / 'static'}", *tiny,
                             "train.epochs=3", "train.lr=0.01"]), progress=False)

    def on_static(name: str, *extra: str) -> dict:
        cfg = load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / name}", *tiny, "train.epochs=3",
                                 "model.dynamic=true", f"train.init_from={tmp_path / 'static'}",
                                 "train.freeze_backbone=true", *extra])
        return train(cfg, progress=False)

    still = on_static("still", "train.lr=0", "train.select_start=true", "train.patience=2")
    assert still["selection"]["best_epoch"] == 0 and still["epochs"] == 2  # patience 2 after epoch 0
    assert still["history"][0] == {"epoch": 0, "valid_full_ndcg@10": still["selection"]["best_value"]}
    moved = on_static("moved", "train.lr=0.01", "train.select_start=true")
    plain = on_static("plain", "train.lr=0.01")
    history = [[{k: v for k, v in record.items() if k != "train_seconds"} for record in
                json.loads((tmp_path / run / "result.json").read_text())["history"]] for run in ("moved", "plain")]
    assert history[0][0]["epoch"] == 0 and history[0][1:] == history[1] and len(history[1]) == 3
    assert moved["selection"]["best_value"] >= history[0][0]["valid_full_ndcg@10"]
    if moved["selection"]["best_epoch"] > 0:  # the same epoch, the same weights
        assert moved["selection"] == plain["selection"] and moved["test"] == plain["test"]

