"""Cached experiment runs: the cache key, reuse without retraining, the seed summary, and outputs merged into
the committed rows one worker at a time."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from dynrec import api, cli
from dynrec.config import load_config
from dynrec.experiments import dynamic, runner
from dynrec.experiments.cache import read_arrays, read_record, write_record


def test_config_key_ignores_placement_but_not_content():
    a = load_config(None, ["out_dir=x", "train.threads=2"])
    b = load_config(None, ["out_dir=y", "train.threads=1"])
    c = load_config(None, ["train.seed=1"])
    assert runner.config_key(a) == runner.config_key(b) != runner.config_key(c)
    # a key added later counts only when set away from its default, so earlier runs keep their keys
    assert runner.config_key(load_config(None, ["train.cover=last"])) == runner.config_key(b)
    assert runner.config_key(load_config(None, ["train.cover=all"])) != runner.config_key(b)
    assert runner.config_key(load_config(None, ["model.generator_dropout=0.0"])) == runner.config_key(b)
    assert runner.config_key(load_config(None, ["model.generator_dropout=0.2"])) != runner.config_key(b)
    assert runner.config_key(load_config(None, ["train.lr_decays=0", "train.lr_decay_factor=0.1"])) == \
        runner.config_key(b)
    assert runner.config_key(load_config(None, ["train.lr_decays=1"])) != runner.config_key(b)


def test_the_first_cached_record_wins_and_both_writers_get_it_back(tmp_path):
    stem = tmp_path / "tables" / "pair" / "model-a-sampled-0123456789"
    first = write_record(stem, {"ndcg": 0.5, "seconds": 4.393}, {"ndcg": np.array([0.5, 0.25])})
    # a second process that computed the same entry (another table sharing the pair) keeps the first record
    second = write_record(stem, {"ndcg": 0.5, "seconds": 4.963}, {"ndcg": np.array([0.5, 0.25])})
    assert first == second == read_record(stem) == {"ndcg": 0.5, "seconds": 4.393}
    np.testing.assert_array_equal(read_arrays(stem, "ndcg"), [0.5, 0.25])
    assert sorted(p.name for p in stem.parent.iterdir()) == [f"{stem.name}.json", f"{stem.name}.npz"]  # no tmp


def test_config_key_of_a_run_started_from_another_ignores_how_its_path_is_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    spellings = ["runs/a", "./runs/a", str(tmp_path / "runs" / "a"), "runs/../runs/a"]
    keys = {runner.config_key(load_config(None, [f"train.init_from={path}"])) for path in spellings}
    other = runner.config_key(load_config(None, ["train.init_from=runs/b"]))
    assert len(keys) == 1 and other not in keys


def test_a_finished_run_is_read_back_not_retrained(tmp_path, cyclic_file, monkeypatch):
    cfg = load_config(None, [f"data.dataset={cyclic_file}", "model.hidden_size=8", "model.max_len=6",
                             "model.head_hidden=[8]", "train.epochs=1", "eval.sampled_negatives=10"])
    first = runner.run_cached(cfg, tmp_path, "t")
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("retrained a cached run"))
    again = load_config(None, [f"data.dataset={cyclic_file}", "model.hidden_size=8", "model.max_len=6",
                               "model.head_hidden=[8]", "train.epochs=1", "eval.sampled_negatives=10"])
    assert runner.run_cached(again, tmp_path, "t")["test"] == first["test"]


def test_a_run_under_a_larger_budget_goes_on_from_the_smaller_budgets_run(tmp_path, cyclic_file, monkeypatch, capsys):
    base = [f"data.dataset={cyclic_file}", "model.hidden_size=8", "model.max_len=6", "model.head_hidden=[8]",
            "eval.sampled_negatives=10"]
    monkeypatch.setattr(runner, "EARLIER_BUDGETS", ((1, 3),))
    small = runner.run_cached(load_config(None, [*base, "train.patience=1", "train.epochs=3"]), tmp_path / "a", "t")
    continued = runner.run_cached(load_config(None, [*base, "train.patience=4", "train.epochs=8"]), tmp_path / "a", "t")
    assert "continuing" in capsys.readouterr().out
    fresh = runner.run_cached(load_config(None, [*base, "train.patience=4", "train.epochs=8"]), tmp_path / "b", "t")
    assert "continuing" not in capsys.readouterr().out  # nothing earlier under tmp_path / "b"

    def curve(result: dict) -> list[dict]:
        return [{k: v for k, v in record.items() if k != "train_seconds"} for record in result["history"]]

    assert len(small["history"]) <= 3 < len(continued["history"])
    assert curve(continued) == curve(fresh) and curve(continued)[: len(small["history"])] == curve(small)
    assert continued["test"] == fresh["test"] and continued["selection"] == fresh["selection"]
    assert continued["config"]["train"]["patience"] == 4  # the run's own config, not the earlier budget's


def test_the_dynamic_model_on_the_static_backbone_waits_for_its_static_twin(tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, progress=False):
        trained.append((cfg.model.dynamic, cfg.train.freeze_backbone, cfg.train.init_from))
        result = {"test": {"sampled": {"ndcg@5": 0.5}}, "epochs": 3, "seconds_per_epoch": 1.0,
                  "selection": {"best_epoch": 2}}
        (Path(cfg.out_dir)).mkdir(parents=True)
        (Path(cfg.out_dir) / runner.RESULT).write_text(json.dumps(result))
        return result

    monkeypatch.setattr(runner, "train", fake_train)
    dynamic.static_vs_dynamic(["ml-1m"], ["sasrec"], [0], "paper", tmp_path, variants=("dynamic-on-a",))
    assert trained == []  # no static twin yet: nothing to start from
    rows = dynamic.static_vs_dynamic(["ml-1m"], ["sasrec"], [0], "paper", tmp_path, variants=("static", "dynamic-on-a"))
    static_dir = next(tmp_path.glob("ml-1m-sasrec-paper-static-s0-*"))
    assert trained == [(False, False, None), (True, True, str(static_dir))]
    assert [r["variant"] for r in rows] == ["static", "dynamic-on-a"]
    assert {r["trained_with"] for r in rows} == {"unrecorded"}  # these fake results do not name their code
    assert {(r["epochs"], r["best_epoch"]) for r in rows} == {(3, 2)}
    assert "| ml-1m | sasrec | dynamic-on-a vs static | | +0.0% |" in dynamic.summary_markdown(rows, "sampled")


def test_the_api_runs_the_grid_and_writes_its_page(tmp_path, monkeypatch):
    scores = {(False, False): 0.4, (True, False): 0.5, (True, True): 0.6}  # static, dynamic, dynamic-on-a
    trained = []

    def fake_train(cfg, progress=False):
        trained.append(cfg.out_dir)
        result = {"test": {"sampled": {"ndcg@5": scores[cfg.model.dynamic, cfg.train.freeze_backbone]}},
                  "epochs": 1, "seconds_per_epoch": 1.0}
        Path(cfg.out_dir).mkdir(parents=True)
        (Path(cfg.out_dir) / runner.RESULT).write_text(json.dumps(result))
        return result

    monkeypatch.setattr(runner, "train", fake_train)
    rows = api.experiment_dynamic(["ml-1m"], ["sasrec"], [0], root=tmp_path / "runs", out_dir=tmp_path / "out")
    assert [(r["variant"], r["ndcg@5"]) for r in rows] == [("static", 0.4), ("dynamic", 0.5), ("dynamic-on-a", 0.6)]
    page = (tmp_path / "out" / "dynamic_paper.md").read_text()
    assert "| ml-1m | sasrec | dynamic vs static | | +25.0% |" in page
    assert "| ml-1m | sasrec | dynamic-on-a vs static | | +50.0% |" in page
    assert (tmp_path / "out" / "dynamic_paper.csv").read_text().count("\n") == 4  # header + 3 rows
    # the command line is the same call: runs read back (no retraining), the same page
    assert cli.main(["experiment", "dynamic", "--datasets", "ml-1m", "--backbones", "sasrec", "--seeds", "0",
                     "--root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "dynamic_paper.md").read_text() == page
    assert len(trained) == 3


def test_outputs_merge_into_the_committed_rows(tmp_path):
    def row(dataset, variant, value):
        return {"dataset": dataset, "backbone": "sasrec", "variant": variant, "setting": "paper",
                "protocol": "sampled", "seed": 0, "ndcg@5": value}

    dynamic.write_outputs([row("ml-1m", "static", 0.4), row("ml-1m", "dynamic", 0.5)], "paper", tmp_path)
    dynamic.write_outputs([row("beauty", "static", 0.2), row("ml-1m", "dynamic", 0.6)], "paper", tmp_path)
    rows = runner.read_csv(tmp_path / "dynamic_paper.csv")
    assert [(r["dataset"], r["variant"], float(r["ndcg@5"])) for r in rows] == [
        ("ml-1m", "static", 0.4), ("ml-1m", "dynamic", 0.6), ("beauty", "static", 0.2)]  # kept, replaced, added
    page = (tmp_path / "dynamic_paper.md").read_text()
    assert "| ml-1m | sasrec | dynamic vs static | | +50.0% |" in page and "| beauty | sasrec | static | 1 |" in page


def test_a_worker_waits_while_another_merges_into_the_same_outputs(tmp_path):
    row = {"dataset": "ml-1m", "backbone": "sasrec", "variant": "static", "setting": "paper", "protocol": "sampled",
           "seed": 0, "ndcg@5": 0.4}
    with runner.outputs_lock(tmp_path):  # as if another worker were merging
        writer = threading.Thread(target=dynamic.write_outputs, args=([row], "paper", tmp_path))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and not (tmp_path / "dynamic_paper.csv").exists()
    writer.join(timeout=10)
    assert not writer.is_alive() and len(runner.read_csv(tmp_path / "dynamic_paper.csv")) == 1


def test_summary_reports_mean_std_and_relative_change():
    rows = [{"dataset": "d", "backbone": "b", "variant": v, "protocol": "sampled", "seed": s, "ndcg@5": x}
            for v, s, x in [("static", 0, 0.1), ("static", 1, 0.3), ("dynamic", 0, 0.3), ("dynamic", 1, 0.5)]]
    table = dynamic.summary_markdown(rows, "sampled")
    assert "| d | b | static | 2 | 0.2000 ± 0.1414 |" in table
    assert "| d | b | dynamic | 2 | 0.4000 ± 0.1414 |" in table
    assert "| d | b | dynamic vs static | | +100.0% |" in table
    assert "| d | b | static | 1 | 0.1000 |" in dynamic.summary_markdown(rows[:1], "sampled")  # no ± 0 for one seed
    unequal = dynamic.summary_markdown(rows[:3], "sampled")  # static over seeds 0 and 1, dynamic over seed 0 only
    assert "| d | b | dynamic vs static | seed 0 | +200.0% |" in unequal  # 0.3 / 0.1: the common seed, not 0.3 / 0.2


def test_a_worker_trains_only_its_variants(tmp_path, monkeypatch):
    trained = []

    def fake_train(cfg, progress=False):
        trained.append(cfg.model.dynamic)
        return {"test": {"sampled": {"ndcg@5": 0.5}}, "epochs": 1, "seconds_per_epoch": 1.0}

    monkeypatch.setattr(runner, "train", fake_train)
    rows = dynamic.static_vs_dynamic(["ml-1m"], ["sasrec"], [0], "paper", tmp_path, variants=("static",))
    assert trained == [False]  # the dynamic runs were neither trained nor invented
    assert [(r["variant"], r["ndcg@5"]) for r in rows] == [("static", 0.5)]
    with pytest.raises(ValueError, match="unknown variants"):
        dynamic.static_vs_dynamic(["ml-1m"], ["sasrec"], [0], "paper", tmp_path, variants=("dinamic",))


def test_the_paper_grid_does_not_follow_the_yamls_training_cover():
    paper, _ = dynamic.twin_config("ml-1m", "sasrec", 0, "paper", "static", 1)
    full, _ = dynamic.twin_config("ml-1m", "sasrec", 0, "full", "static", 1)
    assert full.train.cover == "all"  # configs/ml-1m/sasrec.yaml trains on every target
    assert paper.train.cover == "last"  # pinned: the paper-setting runs keep their cache keys


def test_the_low_rank_twin_differs_from_the_joint_twin_by_its_generated_form_only():
    joint, joint_tag = dynamic.twin_config("douban-book", "gru4rec", 1, "paper", "dynamic", 1)
    low, low_tag = dynamic.twin_config("douban-book", "gru4rec", 1, "paper", "dynamic-lowrank", 1)
    assert (joint.model.generator_form, low.model.generator_form) == ("full", "lowrank")
    assert low.model.dynamic and low_tag == "paper-dynamic-lowrank" != joint_tag
    low.model.generator_form = "full"
    assert low == joint  # same data, seed, budget and backbone: only the generated heads' form differs
    assert "dynamic-lowrank" not in dynamic.DEFAULT_VARIANTS  # a grid trains it only when asked


def test_the_epoch0_variant_is_the_generator_on_a_with_its_start_selectable_and_a_key_of_its_own():
    root = Path("runs/experiments")
    on_a, tag = dynamic.variant_config("douban-book", "gru4rec", 1, "paper", "dynamic-on-a", 1, root)
    start, start_tag = dynamic.variant_config("douban-book", "gru4rec", 1, "paper", "dynamic-on-a-epoch0", 1, root)
    assert (on_a.train.select_start, start.train.select_start) == (False, True)
    assert start.train.freeze_backbone and start.train.init_from == on_a.train.init_from
    assert (tag, start_tag) == ("paper-dynamic-on-a", "paper-dynamic-on-a-epoch0")
    assert runner.config_key(start) != runner.config_key(on_a)
    assert runner.config_key(on_a) == "d3df81abfc"  # its key from before train.select_start: cached runs stay valid
    start.train.select_start = False
    assert start == on_a
    assert "dynamic-on-a-epoch0" not in dynamic.DEFAULT_VARIANTS


def test_generator_settings_change_only_their_overrides_and_keep_the_grid_run_as_default():
    from scripts.generator_settings import setting_config

    root = Path("runs/experiments")
    grid, grid_tag = dynamic.variant_config("douban-book", "gru4rec", 2, "paper", "dynamic-on-a-epoch0", 1, root)
    default, default_tag = setting_config("douban-book", "gru4rec", 2, "default", [], 1, root)
    slow, slow_tag = setting_config("douban-book", "gru4rec", 2, "lr1e-4", ["train.lr=0.0001"], 1, root)
    assert (default, default_tag) == (grid, grid_tag)  # the default setting reads the grid's own run back
    assert slow_tag == "paper-dynamic-on-a-epoch0-lr1e-4" and slow.train.lr == 0.0001
    assert runner.config_key(slow) != runner.config_key(grid)
    slow.train.lr = grid.train.lr
    assert slow == grid  # same start, data, seed and budget: only the override differs


def test_generator_settings_summary_averages_seeds_and_lists_the_selected_epochs():
    from scripts.generator_settings import summary

    def row(setting, seed, start, test):
        return {"dataset": "beauty", "backbone": "sasrec", "setting": setting, "seed": str(seed), "best_epoch": seed,
                "valid_epoch0": start, "valid_epoch1": start - 0.01, "valid_best": start,
                "test_sampled_ndcg@10": test, "test_full_ndcg@10": test / 10}

    lines = summary([row("wd1", 0, 0.35, 0.20), row("default", 1, 0.40, 0.30), row("default", 0, 0.20, 0.10)])
    assert lines.splitlines()[2:] == [  # default first; the higher mean best validation is the one chosen
        "| beauty | sasrec | default | 2 | 0.3000 | 0.2900 | 0.3000 | 0, 1 | 0.2000 | 0.0200 |  |",
        "| beauty | sasrec | wd1 | 1 | 0.3500 | 0.3400 | 0.3500 | 0 | 0.2000 | 0.0200 | yes |",
    ]


def test_generator_settings_keep_a_committed_row_other_code_trained_unless_replaced(tmp_path):
    from scripts.generator_settings import write_outputs

    def row(build, test):
        return {"dataset": "beauty", "backbone": "sasrec", "seed": 0, "setting": "wd1", "best_epoch": 0,
                "valid_epoch0": 0.3, "valid_epoch1": 0.29, "valid_best": 0.3, "test_sampled_ndcg@10": test,
                "test_full_ndcg@10": 0.02, "trained_with": build, "cpu": "test cpu"}

    out = tmp_path / "settings"
    write_outputs([row("aaaa", 0.2)], out)
    write_outputs([row("bbbb", 0.1)], out)  # a retrain by other code: the committed row stays
    assert [r["test_sampled_ndcg@10"] for r in runner.read_csv(out.with_suffix(".csv"))] == ["0.2"]
    write_outputs([row("bbbb", 0.1)], out, replace=True)
    assert [r["test_sampled_ndcg@10"] for r in runner.read_csv(out.with_suffix(".csv"))] == ["0.1"]
    assert "| beauty | sasrec | wd1 | 1 | 0.3000 | 0.2900 | 0.3000 | 0 | 0.1000 | 0.0200 | yes |" in \
        out.with_suffix(".md").read_text()


def test_the_paper_setting_trains_every_dataset_with_patience_20_within_300_epochs():
    names = ("ml-1m", "beauty", "douban-music", "douban-book")
    configs = {name: dynamic.twin_config(name, "din", 0, "paper", "static", 1)[0] for name in names}
    assert {(cfg.train.patience, cfg.train.epochs) for cfg in configs.values()} == {(20, 300)}  # not the yamls' 5
    quick, _ = dynamic.twin_config("douban-music", "sasrec", 0, "paper", "static", 1, ("train.patience=1",))
    assert quick.train.patience == 1  # the tables' extra overrides still come last


def test_merge_rows_keeps_tests_over_more_or_other_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A paired test replaces only committed tests over a subset of its seeds (in place): one over more seeds
    stays instead of it, one over other seeds stays beside it; a plain row is always replaced."""
    path = tmp_path / "tests.csv"
    key = ("cell",)
    runner.write_csv(path, [{"cell": "a", "seeds": 3, "pooled_seeds": "0 1 2", "p": 0.01},
                            {"cell": "b", "seeds": 1, "pooled_seeds": "0", "p": 0.2},
                            {"cell": "c", "seeds": 1, "p": 0.4},  # written before the pooled_seeds column
                            {"cell": "d", "seeds": 1, "pooled_seeds": "1", "p": 0.7},
                            {"cell": "e", "seeds": 3, "p": 0.8}])
    fewer = {"cell": "a", "seeds": 1, "pooled_seeds": "2", "p": 0.5}
    other = {"cell": "b", "seeds": 1, "pooled_seeds": "1", "p": 0.3}
    newer = {"cell": "c", "seeds": 1, "pooled_seeds": "0", "p": 0.6}
    wider = {"cell": "d", "seeds": 2, "pooled_seeds": "1 2", "p": 0.9}
    unrecorded_more = {"cell": "e", "seeds": 2, "pooled_seeds": "0 1", "p": 0.1}
    merged = runner.merge_rows(path, [fewer, other, newer, wider, unrecorded_more], key, keep_pooled=True)
    assert [(row["cell"], row.get("pooled_seeds")) for row in merged] == [
        ("a", "0 1 2"), ("b", "0"), ("c", "0"), ("d", "1 2"), ("e", None), ("b", "1")]
    assert float(merged[0]["p"]) == 0.01 and merged[2] == newer and merged[3] == wider and merged[5] == other
    out = capsys.readouterr().out
    assert "kept the committed row ('b',), pooled over seeds 0, beside this call's over seeds 1; seeds 0 were " \
           "not read back" in out and "--seeds 0 1 --cached-only" in out
    assert "replaced the committed row ('c',), pooled over seeds unrecorded, by one over seeds 0" in out
    assert "replaced the committed row ('d',), pooled over seeds 1, by one over seeds 1 2" in out
    assert "kept the committed row ('e',), pooled over seeds unrecorded (this call read back seeds 0 1)" in out
    runner.write_csv(path, merged)
    again = runner.merge_rows(path, [other], key, keep_pooled=True)
    assert [row.get("pooled_seeds") for row in again if row["cell"] == "b"] == ["0", "1"]  # a rerun adds nothing
    plain = runner.merge_rows(path, [fewer], key)
    assert plain[0] == fewer and [row["cell"] for row in plain] == ["a", "b", "c", "d", "e", "b"]


def test_rows_of_runs_other_code_trained_stay_unless_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A committed run's rows stay when this call's run of the same cell was trained by other code (a cached
    retrain left in the run root would otherwise replace them unseen): logged once per run, with the flag
    that writes it. The same code, rows that predate the record, or `replace` write this call's rows."""
    def run(variant: str, build: str | None, ndcg: float) -> list[dict]:
        return [{"dataset": "d", "backbone": "sasrec", "variant": variant, "setting": "paper", "protocol": protocol,
                 "seed": 0, "ndcg@10": ndcg, **({"trained_with": build} if build else {})}
                for protocol in ("full", "sampled")]

    path = tmp_path / "dynamic_paper.csv"
    runner.write_csv(path, run("static", "aaaa1111", 0.3) + run("dynamic", "aaaa1111", 0.2)
                     + run("dynamic-on-a", None, 0.1))

    def merged() -> dict[str, tuple[str, ...]]:
        rows = runner.read_csv(path)
        assert len(rows) == 6
        return {row["variant"]: (row["ndcg@10"], row.get("trained_with")) for row in rows}

    calls = run("static", "bbbb2222", 0.7) + run("dynamic", "aaaa1111", 0.25) + run("dynamic-on-a", "bbbb2222", 0.4)
    dynamic.write_outputs(calls, "paper", tmp_path)
    assert merged() == {"static": ("0.3", "aaaa1111"), "dynamic": ("0.25", "aaaa1111"),
                        "dynamic-on-a": ("0.4", "bbbb2222")}
    out = capsys.readouterr().out
    assert out.count("kept the committed rows") == 1
    assert "dynamic_paper.csv: kept the committed rows of ('d', 'sasrec', 'static', 'paper', '0'), trained with " \
           "aaaa1111: this call's runs were trained with bbbb2222; --replace-rows writes this call's" in out
    assert "| d | sasrec | static | 1 | 0.3000 |" in (tmp_path / "dynamic_paper.md").read_text()
    dynamic.write_outputs(calls[:2], "paper", tmp_path, replace=True)
    assert merged()["static"] == ("0.7", "bbbb2222")
    assert "replaced the committed rows of ('d', 'sasrec', 'static', 'paper', '0'), trained with aaaa1111" \
           in capsys.readouterr().out
    assert "| d | sasrec | static | 1 | 0.7000 |" in (tmp_path / "dynamic_paper.md").read_text()


def test_write_csv_keeps_an_existing_files_column_order(tmp_path: Path) -> None:
    """Rewriting a file with rows whose keys come in another order keeps its header (so a commit touches only the
    changed rows), appends new columns and drops columns no row has any more."""
    path = tmp_path / "rows.csv"
    runner.write_csv(path, [{"a": 1, "b": 2, "gone": 0}, {"a": 3, "b": 4, "gone": 0}])
    runner.write_csv(path, [{"b": 5, "new": 6, "a": 7}, {"a": 3, "b": 4}])
    assert path.read_text().splitlines() == ["a,b,new", "7,5,6", "3,4,"]
