"""The paper tables on a tiny dataset: model A is the grid's run, Table 3's B(G) is trained on A's frozen
backbone and its fusion rows merge heads online, options are chosen on validation only, a rerun trains and
evaluates nothing, an interrupted run resumes where it stopped, one CSV row per cell,
the CLI end to end (CSVs, paired tests, charts, results.md), and bad requests get a clear error."""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynrec import api, cli, machine
from dynrec.checkpoint import load_checkpoint, write_json
from dynrec.errors import ConfigError, FusionError
from dynrec.experiments import dynamic, methods, paper, per_user, report, runner, tables
from dynrec.models import build_model
from dynrec.train import seed_everything
from tests.conftest import tiny_model_config, write_cyclic_sequences

COLUMNS = {"table", "dataset", "backbone", "method", "protocol", "seed", "ndcg@5", "hr@5", "ndcg@10", "hr@10",
           "selected_on", "valid_score", "options", "seconds", "budget", "trained_with", "a_best_epoch", "b_best_epoch",
           "a_share", "a_share_head"}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A work directory and a 60-user dataset with 150 items (enough for 99 sampled negatives)."""
    work = tmp_path_factory.mktemp("reproduce")
    return work, write_cyclic_sequences(work / "cyclic.txt", n_users=60, n_items=150)


def _context(work: Path, **settings) -> tables.Context:
    return tables.Context(root=work / "runs", budget=tables.QUICK, threads=1, **settings)


@pytest.fixture(scope="module")
def table1(tiny) -> tuple[Path, Path]:
    """Table 1 run once (SASRec, seed 0); returns the work directory and the output directory."""
    work, data = tiny
    tables.reproduce_table("table1", [str(data)], ["sasrec"], [0], _context(work), work / "out")
    return work, work / "out"


def test_model_a_is_the_grid_run_and_bg_is_dynamic_on_its_frozen_backbone(tmp_path, monkeypatch):
    grid = []
    monkeypatch.setattr(dynamic, "run_cached", lambda cfg, root, tag, progress, cached_only=False:
                        grid.append((cfg, tag)) or {})
    dynamic.static_vs_dynamic(["ml-1m"], ["sasrec"], [0], "paper", tmp_path, threads=1)
    runs = {tag: cfg for cfg, tag in grid}  # every variant is visited (read back unless it trains)
    assert list(runs) == ["paper-static", "paper-dynamic", "paper-dynamic-lowrank", "paper-dynamic-on-a",
                          "paper-dynamic-on-a-epoch0"]
    static_tag, on_a_tag = "paper-static", "paper-dynamic-on-a"
    static, twin, on_a = runs[static_tag], runs["paper-dynamic"], runs[on_a_tag]
    ctx = tables.Context(root=tmp_path, threads=2)  # threads are not part of a run's identity
    (a, tag_a), (bg, tag_bg) = tables.base_configs(tables.TABLES["table3"], "ml-1m", "sasrec", 0, ctx)
    assert (runner.config_key(a), tag_a) == (runner.config_key(static), static_tag)  # model A: the grid's run
    assert tag_bg == "paper-dynamic-on-a"
    assert bg.train.init_from == str(runner.run_directory(static, tmp_path, static_tag))
    assert bg.model.dynamic and bg.train.freeze_backbone
    assert (runner.config_key(on_a), on_a_tag) == (runner.config_key(bg), tag_bg)  # the grid's run is B(G)
    bg.train.init_from, bg.train.freeze_backbone = None, False  # otherwise the grid's dynamic twin exactly
    assert runner.config_key(bg) == runner.config_key(twin)
    table1 = tables.base_configs(tables.TABLES["table1"], "ml-1m", "sasrec", 0, ctx)
    assert runner.config_key(table1[0][0]) == runner.config_key(static)  # model A is shared by every table
    assert table1[1][1] == "paper-static" and table1[1][0].train.seed == 100  # model B: never another pair's A
    assert not {s + tables.B_SEED_OFFSET for s in tables.SEEDS} & set(tables.SEEDS)
    (a1, _), (b1, tag_b1) = tables.base_configs(tables.TABLES["table1-shared-init"], "ml-1m", "sasrec", 0, ctx)
    assert runner.config_key(a1) == runner.config_key(static)
    assert (b1.train.seed, b1.train.init_seed, tag_b1) == (100, 0, "paper-static-init0")
    b1.train.init_seed = None
    assert runner.config_key(b1) == runner.config_key(table1[1][0])  # otherwise Table 1's model B


@pytest.fixture(scope="module")
def table3(tiny) -> tuple[Path, Path]:
    """Table 3 run once (SASRec, seed 0) beside Table 1, sharing its model A; returns the work and output dirs."""
    work, data = tiny
    tables.reproduce_table("table3", [str(data)], ["sasrec"], [0], _context(work), work / "out")
    return work, work / "out"


def test_table3_bg_is_trained_on_model_a_frozen_backbone(table3):
    work, _ = table3
    ctx = _context(work)
    pair, _ = tables.open_pair(tables.TABLES["table3"], str(work / "cyclic.txt"), "sasrec", 0, ctx)
    a, bg = pair.a.state_dict(), pair.b.backbone.state_dict()
    assert list(a) == list(bg) and all(torch.equal(a[name], bg[name]) for name in a)  # encoder, items, static head
    cfg = load_checkpoint(pair.dirs[1])[1]
    assert cfg.train.freeze_backbone and cfg.train.init_from == str(pair.dirs[0])
    seed_everything(cfg.train.seed)  # the generator as the run started it
    start = build_model(cfg.model, pair.data.n_items).generator.state_dict()
    assert any(not torch.equal(start[name], t) for name, t in pair.b.generator.state_dict().items())
    moved = copy.deepcopy(pair.b)
    with torch.no_grad():
        moved.backbone.head.weight[0][0, 0] += 1.0
    with pytest.raises(FusionError, match=r"differs from model A at tensor 'head\.weight\.0'"):
        methods.check_frozen_on(pair.a, moved)


def test_table3_merges_heads_online_with_no_tensor_option(table3):
    work, out = table3
    rows = _rows(out / "table3.csv")
    assert {r["method"] for r in rows} == set(tables.TABLES["table3"].methods)
    assert not any("tensors=" in r["options"] for r in rows)
    pair, _ = tables.open_pair(tables.TABLES["table3"], str(work / "cyclic.txt"), "sasrec", 0, _context(work))
    records = [json.loads(path.read_text()) for path in (work / "runs" / "tables" / pair.name).glob("*.json")]
    mine = [r for r in records if r["runs"] == [str(d) for d in pair.dirs]]  # Table 1's records share the folder
    assert {r["method"] for r in mine if r["details"].get("online")} == set(tables.FUSION_ROWS) - {"ensemble"}


def test_one_row_per_dataset_backbone_method_protocol_seed(table1):
    work, out = table1
    rows = _rows(out / "table1.csv")
    assert set(rows[0]) >= COLUMNS
    cells = [(r["dataset"], r["backbone"], r["method"], r["protocol"], r["seed"]) for r in rows]
    assert len(cells) == len(set(cells))
    assert {(r["method"], r["protocol"]) for r in rows} == {
        (m, p) for m in tables.TABLES["table1"].methods for p in ("full", "sampled")}
    assert {r["budget"] for r in rows} == {"quick"}
    assert all(r["selected_on"] == "valid sampled ndcg@10" for r in rows)
    assert {r["trained_with"] for r in rows} == {machine.trained_with({"machine": machine.machine_info()})}
    pair, _ = tables.open_pair(tables.TABLES["table1"], str(work / "cyclic.txt"), "sasrec", 0, _context(work))
    selected = [json.loads((d / "result.json").read_text())["selection"]["best_epoch"] for d in pair.dirs]
    assert {(int(r["a_best_epoch"]), int(r["b_best_epoch"])) for r in rows} == {tuple(selected)}
    for column in ("a_share", "a_share_head"):
        shares = {r["method"]: r[column] for r in rows}
        assert all(0 <= float(shares[m]) <= 1 for m in ("cki", "cki-hard", "cki-learned", "magnitude"))
        assert all(shares[m] == "" for m in ("model-a", "model-b", "average", "ties", "ensemble"))
    head_only = [r for r in rows if r["method"].startswith("cki") and "tensors=head" in r["options"].split()]
    assert all(r["a_share"] == r["a_share_head"] for r in head_only)
    tests = _rows(out / "table1_tests.csv")
    assert tests and all(0 < float(t["p_bootstrap"]) <= 1 and 0 <= float(t["p_t_test"]) <= 1 for t in tests)
    assert {(t["seeds"], t["pooled_seeds"]) for t in tests} == {("1", "0")}  # one seed run: seed 0
    assert {t["versus_method"] for t in tests if t["versus"] == "best-single"} <= {"model-a", "model-b"}


def test_options_are_chosen_on_validation_only(table1, monkeypatch):
    work, _ = table1
    ctx = _context(work)
    pair, _ = tables.open_pair(tables.TABLES["table1"], str(work / "cyclic.txt"), "sasrec", 0, ctx)
    calls, evaluate = [], tables.evaluate

    def recording(scorer, data, split, protocols, *args):
        calls.append((split, list(protocols)))
        return evaluate(scorer, data, split, protocols, *args)

    monkeypatch.setattr(tables, "evaluate", recording)
    fresh = tables.Context(root=work / "fresh", budget=tables.QUICK)  # no cached grid points there
    options, grid = tables.select(pair, "ties", fresh)
    assert len(grid) == len(tables.grid_points(methods.METHODS["ties"].grid)) == len(calls)
    assert {(split, tuple(protocols)) for split, protocols in calls} == {("valid", ("sampled",))}
    assert options == grid[max(range(len(grid)), key=lambda i: (grid[i]["valid"], -i))]["options"]


def test_trained_models_rows_are_read_from_their_runs_and_equal_scoring_them_again(table1, monkeypatch):
    work, _ = table1
    ctx = _context(work)
    pair, _ = tables.open_pair(tables.TABLES["table1"], str(work / "cyclic.txt"), "sasrec", 0, ctx)
    monkeypatch.setattr(tables, "evaluate", lambda *a, **k: pytest.fail("scored a trained run again"))
    read = {name: tables._evaluate(pair, name, {}, ["full", "sampled"], ctx) for name in ("model-a", "model-b")}
    monkeypatch.undo()
    monkeypatch.setattr(tables, "TEST_OUTCOMES", "none-kept.npz")  # as for a run trained before they were kept
    scored = {name: tables._evaluate(pair, name, {}, ["full", "sampled"], ctx) for name in ("model-a", "model-b")}
    for name, protocol in itertools.product(("model-a", "model-b"), ("full", "sampled")):
        (record, arrays), (again, arrays_again) = read[name][protocol], scored[name][protocol]
        assert record["read_from"].startswith(str(pair.dirs[name == "model-b"]))
        assert "read_from" not in again and sum(record["seconds"].values()) == 0
        for key in ("test", "valid", "selection", "runs", "options"):
            assert record[key] == again[key], (name, protocol, key)
        assert arrays.keys() == arrays_again.keys() and f"test/{protocol}/ndcg@10" in arrays
        for key, values in arrays.items():
            np.testing.assert_array_equal(values, arrays_again[key])
    monkeypatch.undo()
    other = dataclasses.replace(pair, cfg=copy.deepcopy(pair.cfg))
    other.cfg.eval.sample_seed += 1  # the run's own evaluation drew other negatives: it is not the table's
    assert tables._from_run(other, "model-a", {}, ["full", "sampled"], ctx) == {}
    assert tables._from_run(pair, "average", {"tensors": "all"}, ["full"], ctx) == {}  # a merge is no run


def test_a_rerun_trains_and_evaluates_nothing(table1, monkeypatch):
    work, out = table1
    before = (out / "table1.csv").read_text()
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained a cached run"))
    monkeypatch.setattr(tables, "evaluate", lambda *a, **k: pytest.fail("evaluated a cached method"))
    monkeypatch.setattr(methods, "train_compatibility", lambda *a, **k: pytest.fail("relearned f_L"))
    timing = tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0], _context(work), out)
    assert (out / "table1.csv").read_text() == before
    assert timing["pairs_complete"] == timing["pairs_complete_full"] == timing["pairs_requested"] == 1
    sampled_only = tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0],
                                          _context(work, protocols=("sampled",)), out)
    assert sampled_only["pairs_complete_full"] == 1  # counted from the merged rows, not from this call's protocols


def test_an_interrupted_reproduction_resumes_where_it_stopped(table1, monkeypatch):
    work, out = table1
    before = _rows(out / "table1.csv")
    cell = work / "runs" / "tables" / "cyclic.txt-sasrec-s0"
    for path in [*cell.glob("cki-hard-*"), *cell.glob("ensemble-full-*")]:  # as if killed before these were stored
        path.unlink()
    calls, evaluate = [], tables.evaluate

    def counting(scorer, data, split, protocols, *args):
        calls.append((split, *protocols))
        return evaluate(scorer, data, split, protocols, *args)

    monkeypatch.setattr(tables, "evaluate", counting)
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained a cached run"))
    tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0], _context(work), out)
    # only what was lost: the ensemble's full ranking, CKI hard under both protocols (its grid was still cached)
    assert sorted(calls) == sorted([("valid", "sampled"), ("test", "full"),
                                    ("valid", "sampled"), ("test", "full"), ("test", "sampled")])
    timeless = [[{k: v for k, v in row.items() if k != "seconds"} for row in rows]
                for rows in (before, _rows(out / "table1.csv"))]
    assert timeless[0] == timeless[1]


def test_rows_of_cells_not_in_the_call_survive_and_larger_pooled_tests_are_kept(table1, tmp_path, monkeypatch):
    work, out = table1
    committed = tmp_path / "committed"  # as if a cell of another dataset had been run in an earlier sitting
    committed.mkdir()
    ours = _rows(out / "table1.csv")
    theirs = [{**row, "dataset": "other", "ndcg@10": "0.5"} for row in ours if row["method"] in ("model-a", "cki")]
    tests = _rows(out / "table1_tests.csv")
    pooled = {**tests[0], "seeds": "3", "pooled_seeds": "0 1 2", "p_bootstrap": "0.123"}  # arrays of 1, 2 gone
    runner.write_csv(committed / "table1.csv", theirs)
    runner.write_csv(committed / "table1_tests.csv", [pooled, {**tests[1], "dataset": "other"}])
    earlier = {"pairs_complete": 1, "pairs_requested": 36, "base_runs_seconds": 100.0, "methods_seconds": 20.0}
    write_json(committed / "table1_timing.json", earlier)  # written before cells were itemised
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained a cached run"))
    timing = tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0], _context(work), committed)
    rows = _rows(committed / "table1.csv")
    assert rows == theirs + ours  # the other dataset's rows first, as they were; this call's rows after them
    merged_tests = _rows(committed / "table1_tests.csv")
    assert merged_tests[0] == pooled  # 3 seeds beat the 1 this call could read back
    assert {"other", "cyclic.txt"} == {row["dataset"] for row in merged_tests}
    assert len(merged_tests) == len(tests) + 1
    cell = timing["cells"]["cyclic.txt/sasrec/0"]
    assert timing["earlier_not_itemised"] == {k: earlier[k] for k in ("pairs_complete", "base_runs_seconds",
                                                                      "methods_seconds")}
    assert timing["base_runs_seconds"] == pytest.approx(cell["base_runs_seconds"], abs=0.1)  # earlier kept apart
    assert timing["methods_seconds"] == pytest.approx(cell["methods_seconds"], abs=0.1)
    assert report.timing_table({"table1": timing})[2].endswith(" | 0.03 h (1 pairs) |")  # 120 s, shown apart
    assert timing["pairs_requested"] == 36 and timing["pairs_complete"] == 1  # "other" lacks most methods
    again = tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0], _context(work), committed)
    assert again["base_runs_seconds"] == timing["base_runs_seconds"]  # a rerun counts no cell twice
    assert _rows(committed / "table1.csv") == rows


def test_requested_pairs_count_every_call_s_cells(tmp_path):
    path = tmp_path / "table3_timing.json"
    seconds = {"base_runs_seconds": 1.0, "methods_seconds": 1.0}
    legacy = {"pairs_requested": 3, "cells": {f"ml-1m/sasrec/{s}": seconds for s in range(3)}}
    write_json(path, legacy)  # written before the requested cells were listed
    itemised = {"base_runs_seconds": 1.0, "by_method": {"cki": {"selection": 0.5, "sampled": 0.5}}}
    call = {"pairs_requested": 1, "requested_cells": ["douban-music/din/0"], "cells": {"douban-music/din/0": itemised}}
    merged = tables.merge_timing(path, call)
    assert merged["pairs_requested"] == 4  # not max(3, 1): the two calls asked for different cells
    write_json(path, merged)
    again = tables.merge_timing(path, {**call, "cells": {}})  # the same cell asked for again, cached
    assert again["pairs_requested"] == 4 and len(again["requested_cells"]) == 4
    write_json(path, {"pairs_requested": 36, "cells": {}})  # a full grid's count is kept as a floor
    assert tables.merge_timing(path, call)["pairs_requested"] == 36


def test_a_call_reading_back_fewer_methods_or_protocols_keeps_the_others_seconds(tmp_path):
    path, key = tmp_path / "table1_timing.json", "ml-1m/din/0"
    both = {"base_runs_seconds": 50.0, "by_method": {"cki": {"selection": 4.0, "sampled": 1.0, "full": 10.0},
                                                     "average": {"selection": 0.0, "sampled": 0.5, "full": 5.0}}}
    call = {"requested_cells": [key], "cells": {key: both}}
    write_json(path, tables.merge_timing(path, call))
    full_only = {"base_runs_seconds": 50.0, "by_method": {"cki": {"selection": 4.0, "full": 12.0}}}
    merged = tables.merge_timing(path, {**call, "cells": {key: full_only}})
    cell = merged["cells"][key]
    assert cell["by_method"]["cki"] == {"selection": 4.0, "sampled": 1.0, "full": 12.0}  # full recomputed
    assert cell["by_method"]["average"] == both["by_method"]["average"]  # not read back by this call
    assert merged["methods_seconds"] == cell["methods_seconds"] == 22.5
    assert merged["total_seconds"] == 72.5
    write_json(path, {"cells": {key: {"base_runs_seconds": 50.0, "methods_seconds": 40.0}}})  # before by_method
    assert tables.merge_timing(path, {**call, "cells": {key: full_only}})["methods_seconds"] == 40.0
    assert tables.merge_timing(path, call)["methods_seconds"] == 40.0  # 20.5 itemised, the old total a floor
    write_json(path, tables.merge_timing(path, {**call, "cells": {key: full_only}}))
    again = tables.merge_timing(path, {**call, "cells": {key: full_only}})  # a second call after the legacy one
    assert again["methods_seconds"] == 40.0
    waiting = {"base_runs_seconds": 60.0, "by_method": {}}  # a base run retrained, the other not yet
    assert tables.merge_timing(path, {**call, "cells": {key: waiting}})["cells"][key]["methods_seconds"] == 40.0


def test_jobs_train_the_pair_side_by_side_with_the_weights_of_one_after_the_other(tiny, tmp_path, monkeypatch):
    _, data = tiny
    weights = {}
    for jobs in (1, 2):
        ctx = tables.Context(root=tmp_path / f"jobs{jobs}", budget=tables.QUICK, threads=1, jobs=jobs)
        runs = tables.base_configs(tables.TABLES["table1"], str(data), "sasrec", 0, ctx)
        if jobs == 2:  # the workers are other processes: training here would fail
            monkeypatch.setattr(runner, "train", lambda *args, **kwargs: pytest.fail("trained in the parent"))
        results = tables.train_base_runs(runs, ctx, side_by_side=True)
        assert [r["selection"]["best_epoch"] for r in results] == [
            json.loads((Path(cfg.out_dir) / "result.json").read_text())["selection"]["best_epoch"] for cfg, _ in runs]
        weights[jobs] = [load_file(Path(cfg.out_dir) / "model.safetensors") for cfg, _ in runs]
        assert [cfg.train.threads for cfg, _ in runs] == [1, 1]
    assert weights[1][0].keys() == weights[2][0].keys()
    assert not all(torch.equal(weights[1][0][k], weights[1][1][k]) for k in weights[1][0])  # A and B differ
    for one, two in zip(weights[1], weights[2], strict=True):
        assert all(torch.equal(one[k], two[k]) for k in one)


def test_cached_only_reports_what_exists_without_training(tiny, monkeypatch):
    work, data = tiny
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained in cached-only mode"))
    ctx = tables.Context(root=work / "empty", budget=tables.QUICK, cached_only=True)
    timing = tables.reproduce_table("table3", [str(data)], ["sasrec"], [0], ctx, work / "cached-only")
    assert timing["pairs_complete"] == 0
    assert report.render(work / "cached-only", work / "cached-only" / "results.md").is_file()


def test_quick_end_to_end_from_the_command_line(table1, capsys, monkeypatch):
    work, _ = table1
    out = work / "cli"
    argv = ["reproduce", "all", "--quick", "--datasets", str(work / "cyclic.txt"), "--backbones", "sasrec",
            "--seeds", "0", "--root", str(work / "runs"), "--out-dir", str(out), "--threads", "1", "--no-progress",
            "--jobs", "2"]
    jobs, train_base_runs = [], tables.train_base_runs
    monkeypatch.setattr(tables, "train_base_runs", lambda runs, ctx, side_by_side: jobs.append(
        (ctx.jobs, side_by_side)) or train_base_runs(runs, ctx, side_by_side))
    assert cli.main(argv) == 0
    assert set(jobs) == {(2, True), (2, False)}  # Table 3's B(G) waits for A's backbone
    assert "table3: 1/1 pairs complete (sampled; 1 with full ranking)" in capsys.readouterr().out
    for name in tables.TABLES:
        assert _rows(out / f"{name}.csv") and _rows(out / f"{name}_tests.csv")
        assert (out / f"{name}_timing.json").is_file()
        assert (out / f"{name}_sampled.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "results.md").read_text()
    assert report.QUICK_BANNER in text
    assert "## Table 4" in text and "p bootstrap" in text and "## Time per table" in text
    assert f"![table1]({Path('table1_sampled.png')})" in text  # charts linked relative to the page
    assert "## Discussion" not in text and "discussion closes" not in text  # none written for this out_dir
    (out / report.DISCUSSION).write_text("CKI tracks averaging here.\n")
    text = report.render(out, out / "results.md").read_text()
    assert text.endswith("## Discussion: where CKI wins, where it does not, and why\n\nCKI tracks averaging here.\n")
    assert "The discussion closes the page." in text


def test_missing_cells_say_not_run_yet(tmp_path):
    rendered = report.render(tmp_path, tmp_path / "results.md").read_text()
    assert rendered.count(report.NOT_RUN) >= 3 * len(tables.DATASETS) * len(tables.BACKBONES)
    assert "±" not in rendered.split("## Time per table")[1] and report.QUICK_BANNER not in rendered


def test_published_figures_are_those_of_design_section_5():
    assert paper.published("table3", "ml-1m", "cki") == {"ndcg@5": 0.4811, "hr@5": 0.6315, "ndcg@10": 0.5211,
                                                         "hr@10": 0.7535}
    assert paper.published("table4", "douban-music", "cki+epoch")["ndcg@10"] == 0.4223
    assert paper.published("table1", "ml-1m", "ties") is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tables": "table2"}, "unknown table 'table2'"),
    ({"tables": "table4", "methods": ["ties"]}, "'ties' is not a method of table4"),
    ({"tables": "all", "methods": ["cki-soft"]}, "'cki-soft' is not a method"),
    ({"tables": "table1", "protocols": ["popular"]}, "unknown protocol 'popular'"),
    ({"tables": "table1", "jobs": 0}, "--jobs: expected a positive number of processes, got 0"),
])
def test_bad_requests_name_what_is_wrong(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        api.reproduce(**kwargs, root=tmp_path, out_dir=tmp_path, progress=False)


def test_the_command_line_prints_the_error_and_exits_2(capsys):
    assert cli.main(["reproduce", "table2"]) == 2
    expected = "unknown table 'table2' (expected one of table1, table1-shared-init, table3, table4 or all)"
    assert expected in capsys.readouterr().err


def test_report_cells_and_empty_test_tables():
    """One seed shows a bare mean (no "± 0"); a protocol without tests says so; table headers match rows."""
    import pandas as pd

    assert report._cell(pd.Series([0.5])) == "0.5000"
    assert report._cell(pd.Series([0.5, 0.7])) == "0.6000 ± 0.1414"
    row = {"dataset": "d", "backbone": "b", "method": "cki", "protocol": "sampled", "metric": "ndcg@10", "seeds": 1,
           "users": 10, "difference": 0.1, "p_bootstrap": 0.01, "p_t_test": 0.02}
    versus = ("model-a", "model-bg", "average", "ensemble")
    tests = pd.DataFrame([{**row, "versus": v, "versus_method": v} for v in versus])
    assert report.tests_table(tests, "full") == [report.NOT_RUN + "."]
    assert "| d | b | cki | model-a | 1 | 10 |" in report.tests_table(tests, "sampled")[2]  # no list: the count
    listed = tests.assign(seeds=2, pooled_seeds="0 2")
    assert "| d | b | cki | model-a | 2 (0 2) | 10 |" in report.tests_table(listed, "sampled")[2]
    header, separator, *rows = report.target_check(tests)
    assert header.count("|") == separator.count("|") == rows[0].count("|") == 9


def test_tests_over_other_seed_sets_are_listed_and_the_verdicts_read_the_widest():
    """A cell whose CSV kept tests over seeds 0 and over 1 2 lists both; the verdicts read the two-seed test."""
    import pandas as pd

    row = {"dataset": "d", "backbone": "b", "method": "cki", "protocol": "sampled", "metric": "ndcg@10",
           "users": 10, "p_bootstrap": 0.01, "p_t_test": 0.02}
    versus = ("model-a", "model-bg", "average", "ensemble")
    old = [{**row, "versus": v, "versus_method": v, "seeds": 1, "pooled_seeds": "0", "difference": -0.1}
           for v in versus]
    new = [{**row, "versus": v, "versus_method": v, "seeds": 2, "pooled_seeds": "1 2", "difference": 0.1}
           for v in versus]
    tests = pd.DataFrame(new + old)  # the wider test written first: the verdict must not follow file order
    lines = report.tests_table(tests, "sampled")[2:]
    assert len(lines) == 8 and sum("| 1 (0) |" in line for line in lines) == 4
    assert sum("| 2 (1 2) |" in line for line in lines) == 4
    assert report.target_check(tests)[2].endswith("| yes |")
    assert "above on d/b" in report.wins_and_losses(tests)[0]
    assert list(report.widest(tests)["pooled_seeds"]) == ["1 2"] * 4


def test_the_report_names_the_code_and_selected_epochs_behind_each_cell():
    import pandas as pd

    rows = pd.DataFrame([
        {"dataset": "d", "backbone": "b", "seed": 0, "trained_with": "aaaaaaaa+bbbbbbbb", "a_best_epoch": 119,
         "b_best_epoch": 150},
        {"dataset": "d", "backbone": "b", "seed": 0, "trained_with": "aaaaaaaa+bbbbbbbb", "a_best_epoch": 119,
         "b_best_epoch": 150},  # another method of the same pair
        {"dataset": "d", "backbone": "b", "seed": 1, "trained_with": "aaaaaaaa", "a_best_epoch": 175,
         "b_best_epoch": None},
        {"dataset": "d", "backbone": "c", "seed": 0, "trained_with": None, "a_best_epoch": 7, "b_best_epoch": 7},
        {"dataset": "d", "backbone": "c", "seed": 0, "trained_with": None, "a_best_epoch": 7, "b_best_epoch": 4}])
    # the last row: the same seed's pair retrained for the other protocol, whose B stopped elsewhere
    assert report.code_table(rows)[2:] == ["| d | b | aaaaaaaa, bbbbbbbb | 119-175 | 150 + unrecorded |",
                                           "| d | c | unrecorded | 7 | 4-7 |"]
    assert report.code_table(rows.drop(columns=["trained_with", "a_best_epoch", "b_best_epoch"]))[2:] == [
        "| d | b | unrecorded | unrecorded | unrecorded |", "| d | c | unrecorded | unrecorded | unrecorded |"]


def test_compatibility_rows_come_from_the_files_with_matching_columns(tmp_path):
    assert report.compatibility_section(tmp_path, Path(".")) == []  # no files, no section
    stat = {"mean": 0.25, "quantiles": {"0.05": 0.1, "0.25": 0.2, "0.5": 0.3, "0.75": 0.4, "0.95": 0.5}}
    layers = {"layer0": {name: stat for name in ("relative_distance", "entropy_gap", "soft_share", "soft_spread",
                                                 "hard_share")}}
    (tmp_path / "table3_compatibility").mkdir()
    write_json(tmp_path / "table3_compatibility" / "d-b-s0_valid.json", {"split": "valid", "users": 7,
                                                                         "layers": layers})
    lines = report.compatibility_section(tmp_path, Path("."))
    header = next(i for i, line in enumerate(lines) if line.startswith("| cell"))
    head, separator, row = lines[header : header + 3]
    assert head.count("|") == separator.count("|") == row.count("|") == 11
    assert row.startswith("| d-b-s0 | valid | layer0 | 7 | 0.3000 [0.1000, 0.5000] | 0.3000 [0.1000, 0.5000] | "
                          "0.2500 [0.1000, 0.5000] | 0.3000 [0.1000, 0.5000] | 0.2500 |")


def test_compatibility_statistics_of_a_generator_that_returns_the_static_head():
    from scripts.compatibility_maps import per_user

    torch.manual_seed(0)
    model = build_model(tiny_model_config("sasrec", dynamic=True, generator_window=5, code_size=8), 20).eval()
    with torch.no_grad():
        model.generator.maps.weight.zero_()
        model.generator.maps.bias.zero_()
        for weight in model.backbone.head.weight:
            weight.normal_(std=0.3)
    seqs = torch.randint(1, 21, (9, 6), generator=torch.Generator().manual_seed(0))
    stats = per_user(model, seqs, batch=4)  # three batches, the last one short
    layers = len(model.backbone.head.layer_shapes)
    assert all(len(stats[name]) == layers and all(len(v) == 9 for v in stats[name]) for name in stats)
    for index in range(layers):
        assert np.allclose(stats["relative_distance"][index], 0) and np.allclose(stats["entropy_gap"][index], 0)
        assert np.allclose(stats["soft_share"][index], 0.5)  # equal weights: an even split everywhere
        assert np.allclose(stats["soft_spread"][index], 0)
        assert np.allclose(stats["hard_share"][index], 0)  # ties go to the larger value: none is larger


def test_top_of_ranking_profile_agrees_with_full_evaluation_and_ranks_popularity_first(cyclic_data):
    from dynrec.evaluate import evaluate
    from dynrec.serve.bundle import training_popularity
    from scripts.top_of_ranking import PopularityScorer, profile

    torch.manual_seed(0)
    model = build_model(tiny_model_config("din"), cyclic_data.n_items).eval()
    counts = training_popularity(cyclic_data)
    counts[1:] += np.arange(cyclic_data.n_items)  # distinct counts: no ties in the popularity order
    stats = profile(model, cyclic_data, counts, batch=7)
    full = evaluate(model, cyclic_data, "test", ["full"], [10])["full"]
    assert stats["ndcg@10"] == pytest.approx(full["ndcg@10"], abs=1e-6)
    assert stats["uauc"] == pytest.approx(full["uauc"], abs=1e-6)
    assert stats["hits@10"] == round(full["hr@10"] * cyclic_data.n_users)
    popular = profile(PopularityScorer(counts), cyclic_data, counts, batch=7)
    assert popular["score_popularity_spearman"] == pytest.approx(1.0)
    assert popular["top10_popularity_percentile"] > stats["top10_popularity_percentile"]
    assert popular["distinct_items_in_top10"] <= 10 + 15  # ten most popular unseen; histories hold <= 15 items
    assert 0 < popular["top10_popularity_percentile"] <= 1


def test_most_popular_table_puts_model_a_means_beside_the_list(tmp_path):
    from scripts.most_popular import markdown, model_a_means

    table = tmp_path / "table3.csv"
    rows = [("d", "sasrec", "model-a", "full", "0.1"), ("d", "sasrec", "model-a", "full", "0.2"),
            ("d", "sasrec", "cki", "full", "0.9"), ("d", "din", "model-a", "sampled", "0.5")]
    table.write_text("dataset,backbone,method,protocol,ndcg@10\n" + "".join(",".join(r) + "\n" for r in rows))
    means = model_a_means(table)
    assert means[("d", "sasrec", "full")] == (pytest.approx(0.15), 2) and len(means) == 2
    text = markdown({"d": {"full": {"ndcg@10": 0.01}, "sampled": {"ndcg@10": 0.2}}}, means, "cmd")
    assert "| d | full | 0.0100 | not run | 0.1500 (2) | not run |" in text
    assert "| d | sampled | 0.2000 | not run | not run | 0.5000 (1) |" in text


def test_committed_outcomes_rebuild_the_paired_tests_once_the_run_caches_are_gone(table1, tmp_path, monkeypatch):
    work, out = table1
    archive = per_user.load(per_user.archive_path(out, "table1", "cyclic.txt", "sasrec", 0))
    rows = _rows(out / "table1.csv")
    assert set(archive) == {f"{r['method']}/{r['protocol']}" for r in rows}
    for row in rows:  # the committed means are the archived users' means
        values = per_user.metric_of(archive[f"{row['method']}/{row['protocol']}"], "ndcg@10")
        assert round(float(values.mean()), 6) == pytest.approx(float(row["ndcg@10"]), abs=1e-6)
    committed = tmp_path / "committed"
    committed.mkdir()
    for path in out.rglob("*"):
        if path.is_file():
            (committed / path.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (committed / path.relative_to(out)).write_bytes(path.read_bytes())
    tests_before = _rows(committed / "table1_tests.csv")
    with (committed / "table1_tests.csv").open("w") as f:  # as if only the header had been committed
        f.write(",".join(tests_before[0]) + "\n")
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained in cached-only mode"))
    gone = tables.Context(root=tmp_path / "no-caches", budget=tables.QUICK, cached_only=True)
    tables.reproduce_table("table1", [str(work / "cyclic.txt")], ["sasrec"], [0], gone, committed)
    assert _rows(committed / "table1_tests.csv") == tests_before  # same means, differences and p-values
    assert _rows(committed / "table1.csv") == rows


def test_a_cell_whose_committed_rows_other_code_trained_keeps_them_unless_replaced(table1, tmp_path, monkeypatch):
    """Committed rows of a pair that other code trained (a retrain, or a stale cached run in the run root) are
    neither replaced nor re-archived by a call that reads back the cached pair; replace_rows writes both."""
    work, out = table1
    committed = tmp_path / "committed"
    committed.mkdir()
    ours = _rows(out / "table1.csv")
    theirs = [{**row, "trained_with": "0ther000", "ndcg@10": "0.999"} for row in ours]
    runner.write_csv(committed / "table1.csv", theirs)
    saved = []
    monkeypatch.setattr(per_user, "save", lambda path, outcomes: saved.append(path.name) or True)
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained a cached run"))
    args = ("table1", [str(work / "cyclic.txt")], ["sasrec"], [0])
    tables.reproduce_table(*args, _context(work), committed)
    assert _rows(committed / "table1.csv") == theirs and saved == []
    tables.reproduce_table(*args, _context(work, replace_rows=True), committed)
    assert _rows(committed / "table1.csv") == ours and saved == ["cyclic.txt-sasrec-s0.npz"]


def test_side_by_side_summary_sets_the_pair_wall_time_against_its_runs_added(tmp_path):
    from scripts.side_by_side import side_by_side

    def run(name: str, seconds: list[float], wall: float, sessions: int = 1) -> Path:
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "result.json", {
            "epochs": len(seconds), "selection": {"best_epoch": 1}, "train_seconds": sum(seconds),
            "wall_seconds_this_session": wall, "history": [{"train_seconds": s} for s in seconds],
            "sessions": [{"machine": {"cpu": "x"}}] * sessions})
        return tmp_path / name

    summary = side_by_side(run("a", [5.0, 5.0, 5.0, 3.0, 4.0], 30.0), run("b", [5.0, 6.0, 4.0], 20.0))
    assert (summary["pair_wall_seconds"], summary["runs_added_seconds"], summary["added_over_wall"]) == (30, 50, 1.667)
    assert summary["longer_run_epoch_seconds_together"] == 5.0 and summary["longer_run_epoch_seconds_alone"] == 3.5
    assert summary["epochs_alone"] == 2 and [r["run"] for r in summary["runs"]] == ["b", "a"]
    with pytest.raises(SystemExit, match="2 sessions"):
        side_by_side(run("resumed", [1.0], 1.0, sessions=2), tmp_path / "a")
