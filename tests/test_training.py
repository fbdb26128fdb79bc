"""Training end to end on a tiny learnable dataset: it learns, selects on validation, and resumes exactly."""

from __future__ import annotations

import importlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dynrec
from dynrec import machine
from dynrec.checkpoint import STATE, TEST_OUTCOMES, WEIGHTS, load_checkpoint, wait_for_run
from dynrec.config import load_config
from dynrec.data.preprocess import build_sequences
from dynrec.data.readers import read_interactions
from dynrec.errors import CheckpointError, ConfigError
from dynrec.evaluate import evaluate
from dynrec.models import build_model
from dynrec.models.base import training_positions
from dynrec.train import loss_scale, train, training_batches, training_tensors, trim_padding

TINY = ["model.hidden_size=16", "model.num_heads=1", "model.max_len=10", "model.head_hidden=[16]",
        "model.dropout=0.0", "train.batch_size=16", "train.lr=0.01", "train.patience=100", "eval.batch_size=32",
        "eval.sampled_negatives=10"]


def _cfg(tmp_path, cyclic_file, *extra):
    return load_config(None, [f"data.dataset={cyclic_file}", f"out_dir={tmp_path / 'run'}", *TINY, *extra])


@pytest.mark.parametrize(
    ("model", "mode", "loss"),
    [("sasrec", "sequence", "ce"), ("gru4rec", "sequence", "bce"), ("din", "window", "bce"),
     ("sasrec", "window", "ce")],
)
def test_models_learn_the_cyclic_pattern(tmp_path, cyclic_file, model, mode, loss):
    epochs = 40 if model == "din" else 15
    cfg = _cfg(tmp_path, cyclic_file, f"model.name={model}", f"train.mode={mode}", f"train.loss={loss}",
               f"train.epochs={epochs}")
    result = train(cfg, progress=False)
    # 30 items: a random ranking gets NDCG@10 about 0.1 (full) ; the pattern is deterministic
    assert result["test"]["full"]["hr@10"] > 0.8, result["test"]
    assert result["test"]["sampled"]["auc"] > 0.9
    assert result["selection"]["split"] == "valid"
    best = max(r["valid_full_ndcg@10"] for r in result["history"])
    assert result["selection"]["best_value"] == pytest.approx(best)
    for key in ("dataset", "machine", "config", "protocols", "seconds_per_epoch", "valid", "test"):
        assert key in result
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test"] == result["test"]
    data = build_sequences(read_interactions(cyclic_file), "cyclic")
    per_user = data.split_end("train") - data.offsets[:-1] - 1  # targets with an item before them
    window = cfg.model.max_len
    expected = per_user.sum() if mode == "window" else np.minimum(per_user, window).sum()
    assert result["training_targets"] == expected
    assert result["training_rows"] == (expected if mode == "window" else data.n_users)


def test_results_record_the_code_they_were_made_with():
    info = machine.machine_info()["dynrec"]
    assert info["version"] == dynrec.__version__
    checkout = Path(dynrec.__file__).resolve().parent.parent
    if shutil.which("git") and (checkout / ".git").exists():
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert info["commit"] == head and len(head) == 40
        assert isinstance(info["dirty"], bool)


def test_results_record_the_cpu_generation_and_kernel_level(tmp_path, monkeypatch, request):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                       "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel\t\t: 17\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                           *a, **k))
    machine.cpu_fields.cache_clear()  # read once per process: read the fake file now, the real one afterwards
    request.addfinalizer(machine.cpu_fields.cache_clear)
    assert machine.cpu_id() == "AuthenticAMD cpu family 25 model 1 stepping 1"  # the first CPU only
    assert machine.cpu_model() == "AMD EPYC"
    info = machine.machine_info()
    assert info["cpu_id"] == machine.cpu_id()
    assert info["cpu_capability"] in {"DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"} or \
        info["cpu_capability"].startswith(("SVE", "NEON"))


def test_rows_name_the_commits_that_trained_them():
    clean = {"machine": {"dynrec": {"version": "0", "commit": "a" * 40, "dirty": False}}}
    dirty = {"machine": {"dynrec": {"version": "0", "commit": "b" * 40, "dirty": True}}}
    assert machine.trained_with(clean, clean) == "aaaaaaaa"
    assert machine.trained_with(clean, dirty) == "aaaaaaaa+bbbbbbbb-dirty"
    assert machine.trained_with({"machine": {}}, clean) == "unrecorded+aaaaaaaa"
    resumed = {"machine": clean["machine"], "sessions": [{"from_epoch": 0, **dirty}, {"from_epoch": 5, **clean}]}
    assert machine.trained_with(resumed) == "bbbbbbbb-dirty+aaaaaaaa"  # every session, not only the last


def test_covering_the_whole_history_trains_on_every_target(tmp_path, cyclic_file):
    data = build_sequences(read_interactions(cyclic_file), "cyclic")
    per_user = data.split_end("train") - data.offsets[:-1] - 1
    assert (per_user > 10).any()  # some histories are longer than max_len, so the option matters here
    last = training_tensors(_cfg(tmp_path, cyclic_file), data)
    full = training_tensors(_cfg(tmp_path, cyclic_file, "train.cover=all"), data)
    assert training_positions(*last).sum() == np.minimum(per_user, 10).sum()
    assert training_positions(*full).sum() == per_user.sum() > training_positions(*last).sum()
    with pytest.raises(ConfigError, match=r"train\.cover: unknown cover 'some'"):
        train(_cfg(tmp_path, cyclic_file, "train.cover=some"), progress=False)


def test_init_seed_gives_another_seed_the_same_initial_weights_and_nothing_else(tmp_path, cyclic_file, monkeypatch):
    built = []

    def recording_build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(importlib.import_module("dynrec.train"), "build_model", recording_build)  # the module
    results = [train(_cfg(tmp_path / name, cyclic_file, "train.epochs=1", *extra), progress=False)
               for name, extra in [("a", ["train.seed=0"]), ("b", ["train.seed=100", "train.init_seed=0"]),
                                   ("c", ["train.seed=100"])]]
    a, b, c = built
    assert all(torch.equal(a[k], b[k]) for k in a)  # B starts from A's weights
    assert not all(torch.equal(a[k], c[k]) for k in a)  # without init_seed, seed 100 draws its own
    assert results[0]["history"][0]["loss"] != results[1]["history"][0]["loss"]  # but its data order differs


HOLD_LOCK = """
import sys, time
from pathlib import Path
from dynrec.checkpoint import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_process_at_a_time_trains_in_a_run_dir(tmp_path, cyclic_file):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f"process {holder.pid} is training this run"):
            train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)
        threading.Timer(0.5, holder.kill).start()  # killed, not closed: the OS still drops its lock
        tic = time.perf_counter()
        wait_for_run(tmp_path / "run")  # what a second worker does before training a shared run
        assert time.perf_counter() - tic >= 0.4
    finally:
        holder.kill()
        holder.wait()
    assert train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)["epochs"] == 1


def test_checkpoint_round_trip_scores_identically(tmp_path, cyclic_file, cyclic_data):
    result = train(_cfg(tmp_path, cyclic_file, "train.epochs=2"), progress=False)
    model, _, idmap = load_checkpoint(tmp_path / "run")
    assert idmap["items"][1:] == cyclic_data.item_ids[1:].tolist()
    first = evaluate(model, cyclic_data, "test", ["full", "sampled"], batch_size=32, sampled_negatives=10)
    again = evaluate(load_checkpoint(tmp_path / "run")[0], cyclic_data, "test", ["full"])["full"]
    assert first["full"] == again
    with np.load(tmp_path / "run" / TEST_OUTCOMES) as kept:  # the run's per-user test metrics, for paired tests
        assert sorted(kept.files) == sorted(f"{p}/{m}" for p in ("full", "sampled") for m in first["_per_user"][p])
        for protocol in ("full", "sampled"):
            for metric, values in first["_per_user"][protocol].items():
                np.testing.assert_array_equal(kept[f"{protocol}/{metric}"], values)
                assert round(float(values.mean()), 6) == result["test"][protocol][metric]


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path, cyclic_file):
    train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)
    config_path = tmp_path / "run" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"]["model"]["hidden_size"] = 32
    config_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"item_emb\.weight' has shape"):
        load_checkpoint(tmp_path / "run")


def test_din_refuses_sequence_mode(tmp_path, cyclic_file):
    with pytest.raises(ConfigError, match="DIN"):
        train(_cfg(tmp_path, cyclic_file, "model.name=din", "train.mode=sequence"), progress=False)


def test_resume_refuses_a_changed_config(tmp_path, cyclic_file):
    train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)
    with pytest.raises(CheckpointError, match=r"model\.hidden_size"):
        train(_cfg(tmp_path, cyclic_file, "train.epochs=2", "model.hidden_size=8"), progress=False)


def test_a_stalled_run_restarts_from_its_best_weights_at_a_lower_rate(tmp_path, cyclic_file):
    """lr_decays: after `patience` checks without gain the run reloads its best weights and trains on at
    lr x factor; a tiny factor leaves those weights as they were, so validation repeats the best score."""
    cfg = _cfg(tmp_path, cyclic_file, "train.epochs=40", "train.patience=2", "train.lr_decays=1",
               "train.lr_decay_factor=1.0e-9")
    result = train(cfg, progress=False)
    [decay] = result["lr_decays"]
    scores = {r["epoch"]: r["valid_full_ndcg@10"] for r in result["history"]}
    assert decay["after_epoch"] == decay["from_best_epoch"] + 2 and decay["lr"] == pytest.approx(0.01 * 1e-9)
    assert scores[decay["after_epoch"]] <= scores[decay["from_best_epoch"]]  # it had stalled
    after = [scores[e] for e in range(decay["after_epoch"] + 1, result["epochs"] + 1)]
    assert after == pytest.approx([scores[decay["from_best_epoch"]]] * 2)  # two more checks, then it stops
    state = torch.load(tmp_path / "run" / STATE, weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 1e-9)
    best = load_file(str(tmp_path / "run" / WEIGHTS))  # the last epoch's weights are still the best epoch's
    assert all(torch.allclose(state["model"][name], best[name], atol=1e-6) for name in best)


def _epoch_scores(result: dict) -> list[tuple]:
    """Each epoch's loss and validation score (the timings differ between runs)."""
    return [(r["epoch"], r["loss"], r["valid_full_ndcg@10"]) for r in result["history"]]


def test_a_stopped_run_given_a_decay_continues_as_if_it_had_had_it_all_along(tmp_path, cyclic_file):
    settings = ["train.epochs=40", "train.patience=2", "train.lr_decay_factor=0.5"]
    whole = train(_cfg(tmp_path / "whole", cyclic_file, *settings, "train.lr_decays=1"), progress=False)
    stopped = train(_cfg(tmp_path / "split", cyclic_file, *settings), progress=False)
    assert stopped["lr_decays"] == [] and stopped["epochs"] < whole["epochs"]
    resumed = train(_cfg(tmp_path / "split", cyclic_file, *settings, "train.lr_decays=1"), progress=False)
    assert _epoch_scores(resumed) == _epoch_scores(whole) and resumed["lr_decays"] == whole["lr_decays"] != []
    ours, theirs = (load_file(str(path / "run" / WEIGHTS)) for path in (tmp_path / "split", tmp_path / "whole"))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    with pytest.raises(ConfigError, match=r"lr_decay_factor=1\.5"):
        train(_cfg(tmp_path / "bad", cyclic_file, "train.lr_decays=1", "train.lr_decay_factor=1.5"), progress=False)


def _run_cli(out: Path, cyclic_file: Path, epochs: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "dynrec.cli", "train", "--no-progress", "--set", f"data.dataset={cyclic_file}",
            "--set", f"out_dir={out}", "--set", f"train.epochs={epochs}", "--set", "model.dropout=0.2",
            "--set", "train.threads=1"]  # two runs side by side: two-thread torch processes thrash on 2 cores
    for item in (t for t in TINY if not t.startswith("model.dropout")):
        args += ["--set", item]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_killed_run_resumes_to_the_same_weights(tmp_path, cyclic_file):
    epochs = 30
    reference = _run_cli(tmp_path / "reference", cyclic_file, epochs)
    interrupted = _run_cli(tmp_path / "interrupted", cyclic_file, epochs)
    state = tmp_path / "interrupted" / STATE
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.is_file() and torch.load(state, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    stopped_at = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= stopped_at < epochs, "the run must be killed part-way"
    resumed = _run_cli(tmp_path / "interrupted", cyclic_file, epochs)
    output = resumed.communicate(timeout=300)[0].decode()
    assert reference.wait(timeout=300) == 0 and resumed.returncode == 0, output
    assert f"resuming {tmp_path / 'interrupted'} at epoch {stopped_at}" in output
    ours = load_file(str(tmp_path / "interrupted" / WEIGHTS))
    theirs = load_file(str(tmp_path / "reference" / WEIGHTS))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    a = json.loads((tmp_path / "interrupted" / "result.json").read_text())
    b = json.loads((tmp_path / "reference" / "result.json").read_text())
    assert a["test"] == b["test"] and a["epochs"] == b["epochs"] == epochs
    assert [session["from_epoch"] for session in a["sessions"]] == [0, stopped_at]  # both sessions named
    assert [session["from_epoch"] for session in b["sessions"]] == [0]
    assert all(session["machine"]["dynrec"] == b["machine"]["dynrec"] for session in a["sessions"])


def test_resume_accepts_a_state_saved_before_a_config_key_existed(tmp_path, cyclic_file):
    train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)
    path = tmp_path / "run" / STATE
    state = torch.load(path, weights_only=True)
    del state["config"]["model"]["dynamic"]  # as written by a version without that key
    torch.save(state, path)
    result = train(_cfg(tmp_path, cyclic_file, "train.epochs=2"), progress=False)
    assert result["epochs"] == 2
    del state["sessions"]  # and one saved before training sessions were recorded
    torch.save(state, path)
    result = train(_cfg(tmp_path, cyclic_file, "train.epochs=2"), progress=False)
    assert [s["from_epoch"] for s in result["sessions"]] == [0, 1]
    assert machine.trained_with(result).startswith("unrecorded+")  # the first epoch's code is not known


def test_resume_at_another_thread_count_says_so(tmp_path, cyclic_file, capsys):
    """Weights are bit for bit only at one thread count, so a run resumed at another one names the change."""
    train(_cfg(tmp_path, cyclic_file, "train.epochs=1"), progress=False)
    path = tmp_path / "run" / STATE
    state = torch.load(path, weights_only=True)
    threads = state["sessions"][0]["machine"]["torch_threads"]
    capsys.readouterr()
    train(_cfg(tmp_path, cyclic_file, "train.epochs=2"), progress=False)
    assert "note:" not in capsys.readouterr().out  # same machine, same threads: nothing to say
    state = torch.load(path, weights_only=True)
    state["sessions"][-1]["machine"]["torch_threads"] = threads + 1  # as if epoch 2 had trained at another count
    torch.save(state, path)
    train(_cfg(tmp_path, cyclic_file, "train.epochs=3"), progress=False)
    out = capsys.readouterr().out
    assert f"continues with torch_threads {threads + 1} -> {threads}" in out
    assert "cpu_id" not in out


def test_uniform_loss_scale_averages_over_all_positions(cyclic_data):
    """Scaled batch means, averaged over the epoch's batches, equal the mean over every target position."""
    cfg = load_config(None, ["data.dataset=cyclic", *TINY])
    torch.manual_seed(0)
    model = build_model(cfg.model, cyclic_data.n_items).eval()
    inputs, targets = training_tensors(cfg, cyclic_data)
    batches = training_batches(inputs, 16, torch.Generator().manual_seed(0))
    per_batch = float(((inputs > 0) & (targets > 0)).sum()) / len(batches)
    scales = [loss_scale(inputs[b], targets[b], per_batch, "uniform") for b in batches]
    assert min(scales) < 0.8 and max(scales) > 1.2  # buckets of short and of long rows: the scale matters
    assert all(loss_scale(inputs[b], targets[b], per_batch, "batch") == 1.0 for b in batches)
    scaled = [model.training_loss(*trim_padding(inputs[b], targets[b]), "ce") * scale
              for b, scale in zip(batches, scales, strict=True)]
    overall = model.training_loss(inputs, targets, "ce")
    assert torch.allclose(torch.stack(scaled).mean(), overall, atol=1e-5)


def test_length_batching_groups_similar_lengths_and_random_batching_does_not(cyclic_data):
    cfg = load_config(None, ["data.dataset=cyclic", *TINY])
    inputs, _ = training_tensors(cfg, cyclic_data)
    lengths = (inputs > 0).sum(1).float()

    def spread(by_length: bool) -> float:
        batches = training_batches(inputs, 8, torch.Generator().manual_seed(0), by_length)
        assert sorted(torch.cat(batches).tolist()) == list(range(len(inputs)))  # every row once
        return float(torch.stack([lengths[b].max() - lengths[b].min() for b in batches]).mean())

    assert spread(True) <= 1.0 < spread(False)


def test_tuning_curves_table_shows_late_epochs_and_each_tested_protocol():
    from scripts.tuning_curves import markdown

    history = [{"epoch": e, "valid_sampled_ndcg@10": e / 1000} for e in range(1, 151)]
    finished = {"label": "long", "history": history,
                "test": {"sampled": {"ndcg@10": 0.25, "hr@10": 0.4}, "full": {"ndcg@10": 0.05, "hr@10": 0.1}}}
    running = {"label": "short", "history": history[:20]}
    lines = markdown([finished, running]).splitlines()
    assert "| 150 | 0.1500 | - |" in lines  # epochs past 100 are shown
    assert lines[-4] == "| run | epochs so far | best valid (epoch) | test full NDCG@10 | test full HR@10 | " \
                        "test sampled NDCG@10 | test sampled HR@10 |"
    assert lines[-2] == "| long | 150 | 0.1500 (150) | 0.0500 | 0.1000 | 0.2500 | 0.4000 |"
    assert lines[-1].startswith("| short | 20 | 0.0200 (20) | not finished |")


def test_tuning_curves_keep_runs_whose_directories_are_gone(tmp_path):
    from scripts.tuning_curves import collect

    kept = {"label": "old", "run_dir": str(tmp_path / "gone"), "finished": True, "history": [{"epoch": 1}]}
    assert collect([("old", tmp_path / "gone")], [kept]) == [kept]
    with pytest.raises(SystemExit, match=r"gone: no result\.json"):
        collect([("renamed", tmp_path / "gone")], [kept])


def test_tuning_curves_read_a_committed_result_json_in_place_of_a_run_directory(tmp_path):
    from scripts.tuning_curves import collect

    result = {"config": {"seed": 1}, "history": [{"epoch": 1, "valid_full_ndcg@10": 0.07}],
              "selection": {"best_epoch": 1}, "test": {"full": {"ndcg@10": 0.06}}, "machine": {"cores": 2}}
    path = tmp_path / "ml-1m_sasrec_full_seed1.json"
    path.write_text(json.dumps(result))
    [run] = collect([("adopted, seed 1", path)], [])
    assert run["finished"] and run["run_dir"] == str(path)
    assert run["history"] == result["history"] and run["test"] == result["test"]


def test_foundation_table_lists_extra_seeds_under_their_row_with_mean_and_sd(tmp_path, monkeypatch):
    import scripts.render_results as render

    def result(seed: int, ndcg: float, hr: float) -> dict:
        test = {"ndcg@10": ndcg, "hr@10": hr, "ndcg@5": 0.1, "hr@5": 0.2}
        return {"dataset": {"name": "ml-1m"}, "model": "sasrec", "config": {"model": {"hidden_size": 64}}, "seed": seed,
                "test": {"full": test}, "epochs": 9, "selection": {"best_epoch": 4}, "seconds_per_epoch": 1.0,
                "machine": {"torch_threads": 1}, "train_seconds": 600.0}

    results = tmp_path / "docs/results"
    results.mkdir(parents=True)
    runs = [("ml-1m_sasrec_full.json", 0, 0.17, 0.30), ("ml-1m_sasrec_full_seed1.json", 1, 0.19, 0.32)]
    for name, seed, ndcg, hr in runs:
        (results / name).write_text(json.dumps(result(seed, ndcg, hr)))
    monkeypatch.setattr(render, "ROOT", tmp_path)
    lines = render.foundation_table()
    rows = [line for line in lines if line.startswith("| ml-1m | sasrec") and "not run yet" not in line]
    assert [row.split(" | ")[2:4] for row in rows] == [["64", "0"], ["64", "1"]]  # hidden, seed; extra seed below
    assert "not run yet" in lines[lines.index(rows[1]) + 1]  # the next configured row (its file is absent)
    assert lines[-1].endswith("hidden 64 (full) over seeds 0, 1: NDCG@10 0.1800 +- 0.0141, HR@10 0.3100 +- 0.0141.")
