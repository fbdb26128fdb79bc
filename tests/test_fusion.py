"""Offline CKI and the baselines: the maps are distributions over models, splicing keeps what it should,
a hand-worked example, order independence, bad inputs named, baselines on hand-checked tensors, learned
f_L/f_G, and fused checkpoints that load into the plain architecture."""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynrec import api, cli
from dynrec.checkpoint import save_checkpoint
from dynrec.config import RunConfig, load_config
from dynrec.errors import FusionError
from dynrec.fusion import fuse, histogram_entropy
from dynrec.fusion.baselines import OutputEnsemble, dare, magnitude, task_arithmetic, ties
from dynrec.fusion.compatibility import (
    GLOBAL_SCALE,
    GLOBAL_SHARPNESS,
    LearnedCompatibility,
    assess,
    sum_over_others,
)
from dynrec.fusion.learned import SplicedParameters, train_compatibility
from dynrec.fusion.offline import selected
from dynrec.models import build_model
from tests.conftest import tiny_model_config


def _models(n: int, shape=(4, 5), seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"head.weight.0": torch.randn(shape, generator=g), "head.bias.0": torch.randn(shape[-1], generator=g),
             "item_emb.weight": torch.randn(6, 3, generator=g)} for _ in range(n)]


# ----------------------------------------------------------------------------- entropy


def test_entropy_of_known_histograms():
    assert torch.isclose(histogram_entropy(torch.arange(10.0)), torch.tensor(math.log(10)))  # uniform over 10 bins
    assert histogram_entropy(torch.full((7,), 3.0)) == 0  # a constant tensor: one bin
    three_one = torch.tensor([0.0, 0.1, 0.2, 1.0])  # bins=2: [0, .5) holds 3, [.5, 1] holds the maximum
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert torch.isclose(histogram_entropy(three_one, bins=2), torch.tensor(expected))
    assert torch.isclose(histogram_entropy(torch.tensor([0.0, 1.0]), bins=10), torch.tensor(math.log(2)))  # max counted


def test_entropy_is_batched_per_row():
    rows = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(histogram_entropy(rows), torch.stack([histogram_entropy(r) for r in rows]))


def test_entropy_counts_every_rows_bins_like_a_per_row_reference():
    rows = torch.randn(40, 333, generator=torch.Generator().manual_seed(2))
    rows[3] = 1.5  # constant: entropy 0
    rows[5, :100] = rows[5].max()  # many values at the maximum, which joins the last bin
    lo, hi = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    index = ((rows - lo) * (10 / (hi - lo)).nan_to_num(posinf=0.0)).clamp(max=9).long()
    expected = []
    for row in index.numpy():  # an independent count per row
        p = np.unique(row, return_counts=True)[1] / len(row)
        expected.append(-(p * np.log(p)).sum())
    assert torch.allclose(histogram_entropy(rows), torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert histogram_entropy(rows)[3] == 0


# ----------------------------------------------------------------------------- CKI invariants


@pytest.mark.parametrize("n", [2, 3, 4])
def test_maps_sum_to_one_over_models(n):
    result = fuse(_models(n), "cki", tensors="all")
    for name, maps in result.maps.items():
        assert maps.shape == (n, *result.state_dict[name].shape)
        assert torch.allclose(maps.sum(0), torch.ones_like(maps[0]), atol=1e-6)
        assert (maps > 0).all()


def test_soft_splicing_identical_models_returns_them():
    model = _models(1)[0]
    result = fuse([model, copy.deepcopy(model), copy.deepcopy(model)], "cki", tensors="all")
    for name, tensor in model.items():
        assert torch.allclose(result.state_dict[name], tensor, atol=1e-6)


@pytest.mark.parametrize("method", ["cki-hard", "magnitude"])
def test_hard_splicing_takes_each_position_from_exactly_one_model(method):
    models = _models(3)
    result = fuse(models, method, tensors="all")
    for name, maps in result.maps.items():
        assert set(maps.unique().tolist()) <= {0.0, 1.0}
        assert (maps.sum(0) == 1).all()
        chosen = (maps * torch.stack([m[name] for m in models])).sum(0)
        assert torch.equal(result.state_dict[name], chosen)


def test_two_model_cki_equals_the_worked_example():
    a = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # 2 bins: counts 3, 1
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # 2 bins: counts 2, 2
    entropy_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623
    entropy_b = math.log(2)  # 0.6931
    g_a = GLOBAL_SCALE / math.pi * math.atan(GLOBAL_SHARPNESS * (entropy_a - entropy_b)) + 0.5  # 0.3019
    g_b = 1 - g_a  # f_G(-x) = 1 - f_G(x)

    def share_of_b(distance: float) -> float:
        local = 1 / (1 + math.exp(-distance))  # f_L = sigmoid(|dW|), the same for both models
        v_a, v_b = g_a * (1 - math.exp(-g_a * local)), g_b * (1 - math.exp(-g_b * local))
        return math.exp(v_b) / (math.exp(v_a) + math.exp(v_b))

    result = fuse([{"head.weight.0": a}, {"head.weight.0": b}], "cki", bins=2)
    maps = result.maps["head.weight.0"]
    assert share_of_b(1.0) == pytest.approx(0.5546, abs=1e-4)  # the position where A and B differ
    assert maps[1, 0, 1].item() == pytest.approx(share_of_b(1.0), abs=1e-6)
    assert maps[1, 0, 0].item() == pytest.approx(share_of_b(0.0), abs=1e-6)
    expected = torch.tensor([[0.0, share_of_b(1.0)], [0.0, 1.0]])
    assert torch.allclose(result.state_dict["head.weight.0"], expected, atol=1e-6)
    assert result.info["per_tensor"]["head.weight.0"]["entropy"] == pytest.approx([entropy_a, entropy_b], abs=1e-6)
    hard = fuse([{"head.weight.0": a}, {"head.weight.0": b}], "cki-hard", bins=2)
    assert torch.equal(hard.state_dict["head.weight.0"], b)  # B's higher entropy wins every position


def test_sums_over_other_models_are_bit_identical_in_any_order():
    terms = [torch.tensor([1e8]), torch.tensor([1.0]), torch.tensor([-1e8])]  # float32 addition is not associative
    results = {sum_over_others([terms[i] for i in order]).item() for order in itertools.permutations(range(3))}
    assert len(results) == 1


@pytest.mark.parametrize("method", ["cki", "cki-hard", "average", "magnitude", "ties"])
def test_result_does_not_depend_on_model_order(method):
    models = _models(4, seed=2)
    models[3] = copy.deepcopy(models[1])  # exact ties between two models, for the hard methods
    first = fuse(models, method, tensors="all").state_dict
    for order in ([3, 1, 0, 2], [2, 3, 1, 0]):
        permuted = fuse([models[i] for i in order], method, tensors="all").state_dict
        for name in first:
            if method in ("cki-hard", "magnitude"):
                assert torch.equal(first[name], permuted[name]), name
            else:
                assert torch.allclose(first[name], permuted[name], atol=1e-6), name


def test_hard_ties_go_to_the_larger_value_in_either_order():
    a = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    b = torch.tensor([[2.0, 0.5], [0.3, -1.0]])  # the same values elsewhere: equal entropies, so V ties
    maps = fuse([{"head.weight.0": a}, {"head.weight.0": b}], "cki").maps["head.weight.0"]
    assert torch.equal(maps[0], maps[1])
    for pair in ([a, b], [b, a]):
        hard = fuse([{"head.weight.0": w} for w in pair], "cki-hard").state_dict["head.weight.0"]
        assert torch.equal(hard, torch.maximum(a, b))


def test_tensor_selection_and_untouched_tensors_come_from_the_first_model():
    names = ["head.weight.0", "head.bias.0", "item_emb.weight", "blocks.0.qkv.weight", "backbone.head.weight.1",
             "generator.maps.weight", "item_embedding.weight", "trm_encoder.layer.0.dense.weight"]
    assert [n for n in names if selected(n, "head")] == ["head.weight.0", "backbone.head.weight.1"]
    assert [n for n in names if selected(n, "head+encoder")] == [
        "head.weight.0", "head.bias.0", "blocks.0.qkv.weight", "backbone.head.weight.1",
        "trm_encoder.layer.0.dense.weight"]
    models = _models(2)
    result = fuse(models, "average", tensors="head")
    assert torch.equal(result.state_dict["head.bias.0"], models[0]["head.bias.0"])
    assert torch.equal(result.state_dict["item_emb.weight"], models[0]["item_emb.weight"])
    assert result.info["spliced"] == ["head.weight.0"]


def test_share_counts_each_models_positions_over_every_spliced_tensor():
    models = _models(3, shape=(4, 5), seed=3)
    hard = fuse(models, "cki-hard", tensors="all")
    groups = {"head.weight.0": "head", "head.bias.0": "rest", "item_emb.weight": "item_table"}
    taken = {group: torch.zeros(3) for group in groups.values()}
    for name, fused in hard.state_dict.items():
        for k, model in enumerate(models):
            taken[groups[name]][k] += (fused == model[name]).sum()
    total = sum(taken.values())
    assert hard.info["share"] == pytest.approx((total / total.sum()).tolist(), abs=1e-6)
    assert hard.info["share_by_group"].keys() == taken.keys()
    for group, counts in taken.items():
        assert hard.info["share_by_group"][group] == pytest.approx((counts / counts.sum()).tolist(), abs=1e-6)
    head_only = fuse(models, "cki-hard", tensors="head").info
    assert head_only["share_by_group"] == {"head": head_only["share"]}  # one group: its share is the total
    soft = fuse(models, "cki", tensors="all")
    sizes = {name: tensor.numel() for name, tensor in models[0].items()}
    mean_weights = sum(torch.tensor(soft.info["per_tensor"][n]["mean_weight"]) * sizes[n] for n in sizes)
    assert soft.info["share"] == pytest.approx((mean_weights / sum(sizes.values())).tolist(), abs=1e-5)
    assert sum(soft.info["share"]) == pytest.approx(1.0, abs=1e-5)
    a = models[0]["head.weight.0"]
    only_a = fuse([{"head.weight.0": a}, {"head.weight.0": a - 1.0}], "cki-hard")  # equal V: the larger value
    assert only_a.info["share"] == [1.0, 0.0]
    assert fuse(models, "average").info["share"] is None


# ----------------------------------------------------------------------------- bad input


def test_mismatched_names_or_shapes_are_named():
    a, b = _models(2)
    renamed = {("head.weight.9" if k == "head.weight.0" else k): v for k, v in b.items()}
    with pytest.raises(FusionError, match=r"'head.weight.0' of model 0 is missing from model 1"):
        fuse([a, renamed], "cki")
    reshaped = {**b, "item_emb.weight": torch.zeros(7, 3)}
    with pytest.raises(FusionError, match=r"'item_emb.weight' has shape \(6, 3\) in model 0 but \(7, 3\) in model 1"):
        fuse([a, reshaped], "cki")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_named(bad):
    a, b = _models(2)
    b["head.bias.0"][2] = bad
    with pytest.raises(FusionError, match=r"'head.bias.0' of model 1 holds a non-finite value"):
        fuse([a, b], "average")


def test_one_model_unknown_method_and_unknown_option_are_errors():
    a, b = _models(2)
    with pytest.raises(FusionError, match="at least 2 models, got 1"):
        fuse([a], "cki")
    with pytest.raises(FusionError, match=r"unknown fusion method 'soup'.*cki, cki-hard, average, magnitude, "
                                          r"task-arithmetic, ties, dare"):
        fuse([a, b], "soup")
    with pytest.raises(FusionError, match="method 'average' has no option 'density'"):
        fuse([a, b], "average", density=0.5)
    with pytest.raises(FusionError, match="no tensor matches tensors='head'"):
        fuse([{"x": torch.ones(2)}, {"x": torch.zeros(2)}], "cki")


# ----------------------------------------------------------------------------- baselines


def test_averaging_is_the_mean():
    models = _models(3)
    result = fuse(models, "average", tensors="all").state_dict
    for name in result:
        assert torch.allclose(result[name], sum(m[name] for m in models) / 3, atol=1e-6)


def test_task_arithmetic_hand_example_and_mean_base():
    base, w1, w2 = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0]), torch.tensor([1.5, 3.0])
    # task vectors (1, -1) and (0.5, 2); 0.5 * their sum = (0.75, 0.5)
    assert torch.allclose(task_arithmetic([w1, w2], base, scale=0.5), torch.tensor([1.75, 1.5]))
    assert torch.allclose(task_arithmetic([w1, w2], None, scale=0.7), (w1 + w2) / 2)  # mean base: averaging


def test_ties_hand_example():
    base = torch.zeros(4)
    w1, w2 = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([-3.0, 1.0, 0.25, 2.0])
    # density 0.5 keeps two entries each: (1, -2, 0, 0) and (-3, 0, 0, 2); summed signs (-, -, 0, +);
    # the mean of the agreeing entries: -3 (model 2), -2 (model 1), nothing, 2 (model 2)
    assert torch.equal(ties([w1, w2], base, density=0.5), torch.tensor([-3.0, -2.0, 0.0, 2.0]))


def test_magnitude_keeps_the_largest_and_breaks_ties_by_value():
    fused, maps = magnitude([torch.tensor([1.0, -3.0, 0.5]), torch.tensor([-2.0, 3.0, 0.1])])
    assert torch.equal(fused, torch.tensor([-2.0, 3.0, 0.5]))
    assert maps.tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def test_dare_is_seeded_and_rescales_what_it_keeps():
    base = torch.zeros(200)
    tau = torch.randn(200, generator=torch.Generator().manual_seed(0))
    first = dare([tau, torch.zeros(200)], base, drop=0.75, seed=3)
    assert torch.equal(first, dare([tau, torch.zeros(200)], base, drop=0.75, seed=3))
    assert not torch.equal(first, dare([tau, torch.zeros(200)], base, drop=0.75, seed=4))
    kept = first != 0
    assert torch.allclose(first[kept], tau[kept] / 0.25)  # survivors rescaled by 1 / (1 - drop)
    assert 20 < int(kept.sum()) < 80  # about a quarter kept
    assert torch.allclose(dare([tau, -tau], base, drop=0.0), task_arithmetic([tau, -tau], base))
    models = _models(2)
    seeded = [fuse(models, "dare", tensors="all", base=models[0], seed=s).state_dict for s in (1, 1, 2)]
    assert torch.equal(seeded[0]["item_emb.weight"], seeded[1]["item_emb.weight"])
    assert not torch.equal(seeded[0]["item_emb.weight"], seeded[2]["item_emb.weight"])


def test_output_ensemble_averages_scores():
    torch.manual_seed(0)
    models = [build_model(tiny_model_config("gru4rec"), 20).eval() for _ in range(2)]
    seq = torch.randint(1, 21, (3, 6))
    ensemble = OutputEnsemble(models)
    expected = (models[0].score_all(seq) + models[1].score_all(seq)) / 2
    assert torch.allclose(ensemble.score_all(seq)[:, 1:], expected[:, 1:])
    cand = torch.randint(1, 21, (3, 4))
    assert torch.allclose(ensemble.score_candidates(seq, cand), expected.gather(1, cand), atol=1e-5)


# ----------------------------------------------------------------------------- learned f_L / f_G


def test_learned_compatibility_starts_at_the_parameter_free_form():
    weights = [m["head.weight.0"] for m in _models(3)]
    entropies = [histogram_entropy(w.flatten()) for w in weights]
    learned = LearnedCompatibility({"w": weights[0].shape}, 3)
    assert torch.allclose(assess(weights, entropies, *learned.functions("w")), assess(weights, entropies), atol=1e-6)


def _tiny_run(cyclic_file, tmp_path, name: str, extra: list[str] | None = None) -> RunConfig:
    return load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / name}", "model.hidden_size=16",
                              "model.max_len=10", "model.head_hidden=[16]", "model.dropout=0.0", "model.num_heads=1",
                              "train.batch_size=16", "eval.protocols=[full]", "train.select_protocol=full",
                              *(extra or [])])


def _random_sasrec_states(cfg: RunConfig, n_items: int, n: int = 2) -> list[dict[str, torch.Tensor]]:
    states = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = build_model(cfg.model, n_items)
        with torch.no_grad():
            for weight in model.head.weight:  # the residual head starts at zero: give the models distinct heads
                weight.normal_(std=0.3)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def test_learning_f_l_lowers_the_training_loss_and_keeps_base_weights(cyclic_file, cyclic_data, tmp_path):
    cfg = _tiny_run(cyclic_file, tmp_path, "learn")
    states = _random_sasrec_states(cfg, cyclic_data.n_items)
    before = [{k: v.clone() for k, v in s.items()} for s in states]
    model = build_model(cfg.model, cyclic_data.n_items)
    compatibility, history = train_compatibility(model, states, cyclic_data, cfg, tensors="all", epochs=4, lr=0.05)
    losses = [record["loss"] for record in history["history"][1:]]
    assert losses[-1] < losses[0]
    assert [r["epoch"] for r in history["history"]] == [0, 1, 2, 3, 4]
    for state, original in zip(states, before, strict=True):
        assert all(torch.equal(state[k], original[k]) for k in state)  # the models' own weights are only read
    spliced = SplicedParameters(states, list(compatibility.names))(compatibility)
    fused = fuse(states, "cki", tensors="all", compatibility=compatibility).state_dict
    assert all(torch.allclose(fused[k], spliced[k].detach(), atol=1e-5) for k in fused)


def test_learning_f_l_with_dropout_repeats_exactly_and_leaves_the_callers_rng(cyclic_file, cyclic_data, tmp_path):
    cfg = _tiny_run(cyclic_file, tmp_path, "learn", ["model.dropout=0.5"])  # dropout draws from the global RNG
    states = _random_sasrec_states(cfg, cyclic_data.n_items)
    learned = []
    for global_seed in (1, 2):  # whatever ran before in the process must not change what is learned
        torch.manual_seed(global_seed)
        model = build_model(cfg.model, cyclic_data.n_items)
        before = torch.get_rng_state()
        compatibility, history = train_compatibility(model, states, cyclic_data, cfg, tensors="all", epochs=2,
                                                     lr=0.05)
        assert torch.equal(torch.get_rng_state(), before)
        learned.append(({k: v.detach().clone() for k, v in compatibility.state_dict().items()}, history["history"]))
    (first, first_history), (second, second_history) = learned
    assert first_history == second_history
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ----------------------------------------------------------------------------- checkpoints and the CLI


def _checkpoints(cyclic_file, cyclic_data, tmp_path) -> tuple[RunConfig, list]:
    cfg = _tiny_run(cyclic_file, tmp_path, "a")
    paths = []
    for index, state in enumerate(_random_sasrec_states(cfg, cyclic_data.n_items)):
        model = build_model(cfg.model, cyclic_data.n_items)
        model.load_state_dict(state)
        save_checkpoint(tmp_path / f"model{index}", model, cfg, cyclic_data)
        paths.append(tmp_path / f"model{index}")
    return cfg, paths


def test_fused_checkpoint_loads_into_the_plain_architecture_and_scores(cyclic_file, cyclic_data, tmp_path, capsys):
    _, (a, b) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    assert cli.main(["fuse", "--models", str(a), str(b), "--method", "cki", "--tensors", "all", "--bins", "8",
                     "--out", str(tmp_path / "fused")]) == 0
    info = json.loads((tmp_path / "fused" / "fusion.json").read_text())
    share, head = info["share"], info["share_by_group"]["head"]
    assert sum(share) == pytest.approx(1.0, abs=1e-5) and sum(head) == pytest.approx(1.0, abs=1e-5)
    assert info["share_by_group"].keys() == {"head", "item_table", "rest"}
    out = capsys.readouterr().out
    assert f"(share of the spliced positions: {share[0]:.3f}, {share[1]:.3f}; head: {head[0]:.3f}, " in out
    inputs, fused = load_file(str(a / "model.safetensors")), load_file(str(tmp_path / "fused" / "model.safetensors"))
    assert {k: (v.shape, v.dtype) for k, v in fused.items()} == {k: (v.shape, v.dtype) for k, v in inputs.items()}
    assert (tmp_path / "fused" / "config.json").read_text() == (a / "config.json").read_text()
    maps = load_file(str(tmp_path / "fused" / "fusion_maps.safetensors"))
    assert maps["head.weight.0"].shape == (2, 16, 16)
    model, _, _ = api.load_checkpoint(tmp_path / "fused")
    scores = model.score_all(torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]]))
    assert scores.shape == (2, cyclic_data.n_items + 1) and torch.isfinite(scores[:, 1:]).all()


def test_cli_fuse_errors_are_one_line(cyclic_file, cyclic_data, tmp_path, capsys):
    _, (a, _) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    assert cli.main(["fuse", "--models", str(a), "--method", "cki", "--out", str(tmp_path / "x")]) == 2
    assert "at least 2 models, got 1" in capsys.readouterr().err
    assert cli.main(["fuse", "--models", str(a), str(a), "--method", "soup", "--out", str(tmp_path / "x")]) == 2
    assert "unknown fusion method 'soup'" in capsys.readouterr().err


def test_cli_base_and_options_reach_the_method(cyclic_file, cyclic_data, tmp_path):
    _, (a, b) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    out = tmp_path / "ties"
    assert cli.main(["fuse", "--models", str(a), str(b), "--method", "ties", "--tensors", "all", "--base", str(a),
                     "--option", "density=0.5", "--out", str(out)]) == 0
    info = json.loads((out / "fusion.json").read_text())
    assert info["options"] == {"density": 0.5} and info["base"] == "given"
    expected = fuse([load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))], "ties",
                    tensors="all", base=load_file(str(a / "model.safetensors")), density=0.5).state_dict
    fused = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(fused[k], expected[k]) for k in expected)


def test_checkpoints_of_different_catalogues_are_refused(cyclic_file, cyclic_data, tmp_path):
    _, (a, b) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    idmap = json.loads((b / "idmap.json").read_text())
    idmap["items"] = idmap["items"][::-1]
    (b / "idmap.json").write_text(json.dumps(idmap))
    with pytest.raises(FusionError, match="its items differ from"):
        api.fuse_checkpoints([a, b], "average", tmp_path / "out", tensors="all")


def test_learning_through_the_api_is_recorded(cyclic_file, cyclic_data, tmp_path):
    _, (a, b) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    info = api.fuse_checkpoints([a, b], "cki", tmp_path / "learned", learn_epochs=1, progress=False)
    assert info["learned"] and [r["epoch"] for r in info["learning"]["history"]] == [0, 1]
    assert json.loads((tmp_path / "learned" / "fusion.json").read_text())["learning"]["best_epoch"] in (0, 1)


def test_continuing_from_a_fused_checkpoint_trains_one_more_epoch(cyclic_file, cyclic_data, tmp_path):
    _, (a, b) = _checkpoints(cyclic_file, cyclic_data, tmp_path)
    api.fuse_checkpoints([a, b], "cki", tmp_path / "fused", tensors="all")
    cfg = _tiny_run(cyclic_file, tmp_path, "continued", [f"train.init_from={tmp_path / 'fused'}", "train.epochs=1"])
    result = api.train(cfg, progress=False)
    assert result["epochs"] == 1 and result["test"]["full"]["ndcg@10"] >= 0
