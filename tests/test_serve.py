"""Serving end to end: bundles (export, verification), then the real server in a subprocess on a free
localhost port, spoken to over HTTP with httpx: every endpoint, every bad-input answer, rankings equal to
the offline models', batching, overload and kill -9 durability of acknowledged events."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load_file, save_file

from dynrec.checkpoint import load_checkpoint, save_checkpoint
from dynrec.cli import main as cli
from dynrec.config import DataConfig, RunConfig
from dynrec.data.preprocess import build_sequences
from dynrec.data.readers import read_interactions
from dynrec.errors import CheckpointError
from dynrec.fusion import OnlineCKI
from dynrec.models import build_model
from dynrec.serve.bundle import file_sha256, load_bundle, tensor_sha256
from dynrec.serve.schemas import RecommendResponse
from tests.conftest import tiny_model_config, write_cyclic_sequences

ROOT = Path(__file__).resolve().parent.parent
MAX_LEN = 12


def _run(root: Path, dynamic: bool) -> Path:
    """A saved tiny SASRec run (random weights; generated heads far from the static one when dynamic)."""
    data = build_sequences(read_interactions(write_cyclic_sequences(root / "cyclic.txt")), "cyclic")
    cfg = RunConfig(data=DataConfig(dataset=str(root / "cyclic.txt")),
                    model=tiny_model_config("sasrec", max_len=MAX_LEN, dynamic=dynamic, generator_window=5,
                                            code_size=8))
    torch.manual_seed(0)
    model = build_model(cfg.model, data.n_items)
    with torch.no_grad():
        model.item_emb.weight.normal_()
        head = model.backbone.head if dynamic else model.head
        for weight in head.weight:
            weight.normal_(std=0.3)
        if dynamic:
            model.generator.maps.weight.mul_(50.0)
    save_checkpoint(root / "run", model, cfg, data)
    return root / "run"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """run and bundle directories of a dynamic and a static model, exported through the CLI."""
    out = {}
    for kind in ("dynamic", "static"):
        root = tmp_path_factory.mktemp(kind)
        out[f"{kind}_run"] = _run(root, kind == "dynamic")
        assert cli(["export", "--checkpoint", str(out[f"{kind}_run"]), "--out", str(root / "bundle")]) == 0
        out[kind] = root / "bundle"
    return out


@contextmanager
def running_server(bundle: Path, db: Path, *options: str):
    """`dynrec serve` in a subprocess on a free port (--port 0); yields (base url, process); always stopped."""
    log = db.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "dynrec.cli", "serve", "--bundle", str(bundle), "--port",
                                    "0", "--db", str(db), *options], stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"server did not start: {line!r} {log.read_text()}"
        url = f"http://127.0.0.1:{match.group(1)}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """The dynamic bundle served with a 20 ms batching window, so concurrent requests share a batch."""
    db = tmp_path_factory.mktemp("db") / "events.sqlite"
    with running_server(bundles["dynamic"], db, "--max-wait-ms", "20", "--max-batch", "64",
                        "--max-body-bytes", "20000") as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _offline_top(scorer, items: list[str], history: list[str], k: int, exclude_seen: bool = True,
                 candidates: list[str] | None = None) -> list[str]:
    """What the server should answer, computed with the offline model on the history alone (batch of 1)."""
    index = {raw: i for i, raw in enumerate(items)}
    seq = torch.tensor([[index[i] for i in history][-MAX_LEN:]])
    with torch.no_grad():
        scores = scorer.score_all(seq)[0].clone()
    if exclude_seen:
        scores[[index[i] for i in history]] = float("-inf")
    if candidates is not None:
        keep = torch.full_like(scores, float("-inf"))
        chosen = [index[c] for c in candidates]
        keep[chosen] = scores[chosen]
        scores = keep
    values, order = torch.topk(scores, k)
    return [items[i] for i, v in zip(order.tolist(), values.tolist(), strict=True) if v > float("-inf")]


def _metric(text: str, name: str) -> float:
    """The value of one sample line `name value` of a Prometheus text page (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


HISTORIES = [["3", "4", "5"], ["10"], ["7", "1", "30", "2", "9", "11", "12", "20", "21", "22"], ["28", "29", "30", "1"]]


def test_export_pins_every_file_and_tensor(bundles, tmp_path):
    bundle = bundles["dynamic"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "idmap.json", "popularity.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == file_sha256(bundle / name)
    tensors = load_file(str(bundle / "model.safetensors"))
    model, _, idmap = load_checkpoint(bundles["dynamic_run"])
    assert set(manifest["tensors"]) == set(tensors) == set(model.state_dict())
    name = "backbone.head.weight.0"
    assert manifest["tensors"][name] == {"shape": [16, 16], "dtype": "float32", "sha256": tensor_sha256(tensors[name])}
    data = build_sequences(read_interactions(bundles["dynamic_run"].parent / "cyclic.txt"), "cyclic")
    expected = np.zeros(data.n_items + 1, dtype=int)
    for user in range(data.n_users):
        np.add.at(expected, data.sequence(user)[:-2], 1)  # training part: the last two are valid and test targets
    assert json.loads((bundle / "popularity.json").read_text())["counts"] == expected.tolist()
    assert json.loads((bundle / "idmap.json").read_text())["items"] == idmap["items"]
    assert [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    again = ["export", "--checkpoint", str(bundles["dynamic_run"]), "--out", str(bundle)]
    assert cli(again) == 2  # refuses to overwrite
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "stale.txt").write_text("x")
    assert cli([*again[:-1], str(copy), "--force", "--cki", "hard"]) == 0
    assert not (copy / "stale.txt").exists()
    assert json.loads((copy / "config.json").read_text())["cki"] == {"hard": True, "bins": 10}
    assert load_bundle(copy).hard


def _retensor(bundle: Path, change) -> None:
    tensors = load_file(str(bundle / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(bundle / "model.safetensors"))


TAMPERING = {
    "value": (lambda b: _retensor(b, lambda t: t["backbone.head.weight.0"].add_(1e-3)),
              r"tensor 'backbone.head.weight.0' has sha256"),
    "shape": (lambda b: _retensor(b, lambda t: t.update({"backbone.head.bias.0": torch.zeros(17)})),
              r"tensor 'backbone.head.bias.0' has shape \[17\]"),
    "missing": (lambda b: _retensor(b, lambda t: t.pop("backbone.norm.weight")),
                r"tensor 'backbone.norm.weight' listed in manifest.json is missing"),
    "extra": (lambda b: _retensor(b, lambda t: t.update({"intruder": torch.zeros(2)})),
              r"tensor 'intruder' is not listed"),
    "dtype": (lambda b: _retensor(b, lambda t: t.update({"backbone.norm.bias": t["backbone.norm.bias"].double()})),
              r"tensor 'backbone.norm.bias' has dtype float64"),
    "idmap": (lambda b: (b / "idmap.json").write_text((b / "idmap.json").read_text() + " "),
              r"idmap.json: sha256 .* does not match"),
    "popularity": (lambda b: (b / "popularity.json").unlink(), r"popularity.json: missing"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_bundle_that_does_not_match_its_manifest_is_refused(bundles, tmp_path, case, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["dynamic"], copy)
    load_bundle(copy)  # intact: loads
    tamper, message = TAMPERING[case]
    tamper(copy)
    with pytest.raises(CheckpointError, match=message):
        load_bundle(copy)
    assert cli(["serve", "--bundle", str(copy), "--port", "0", "--db", str(tmp_path / "db")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_health_metrics_and_openapi(server):
    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["modes"] == ["static", "dynamic", "cki"]
    assert (health["default_mode"], health["n_items"], health["max_len"]) == ("cki", 30, MAX_LEN)
    schema = server.get("/openapi.json").json()
    assert {"/recommend", "/events", "/healthz", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"user_id", "history", "k", "exclude_seen", "mode", "candidates"} == set(body["properties"])
    assert "swagger" in server.get("/docs").text.lower()
    metrics = server.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert _metric(metrics.text, 'dynrec_requests_total{endpoint="/healthz",status="200"}') >= 1
    families = {family.name: family.type for family in text_string_to_metric_families(metrics.text)}
    assert families == {"dynrec_requests": "counter", "dynrec_request_seconds": "histogram",
                        "dynrec_batch_size": "histogram", "dynrec_batch_seconds": "histogram",
                        "dynrec_queue_depth": "gauge", "dynrec_recommendations": "counter"}
    assert _metric(metrics.text, "dynrec_queue_depth") == 0


async def _post_all(url: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


def test_every_mode_ranks_as_the_offline_model(server, bundles):
    """Requests of all modes and lengths sent at once (so they share batches) answer what the offline
    models answer for each history alone: static head, generated head, and the online CKI splice."""
    model, _, idmap = load_checkpoint(bundles["dynamic_run"])
    offline = {"static": model.backbone, "dynamic": model, "cki": OnlineCKI(model).eval()}
    bodies = [{"history": h, "k": 5, "mode": mode} for mode in offline for h in HISTORIES]
    answers = asyncio.run(_post_all(str(server.base_url), "/recommend", bodies))
    tops = {}
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        got = answer.json()
        RecommendResponse.model_validate(got)  # the answer keeps its documented schema
        assert got["mode"] == body["mode"] and not got["fallback"] and got["history_used"] == len(body["history"])
        tops[(body["mode"], tuple(body["history"]))] = [item["item"] for item in got["items"]]
        assert tops[(body["mode"], tuple(body["history"]))] == _offline_top(offline[body["mode"]], idmap["items"],
                                                                             body["history"], 5)
        assert not set(tops[(body["mode"], tuple(body["history"]))]) & set(body["history"])  # exclude_seen default
    assert any(tops[("cki", tuple(h))] != tops[("dynamic", tuple(h))] for h in HISTORIES)  # the splice matters
    assert any(tops[("cki", tuple(h))] != tops[("static", tuple(h))] for h in HISTORIES)
    default = server.post("/recommend", json={"history": HISTORIES[0], "k": 5}).json()
    assert default["mode"] == "cki" and [i["item"] for i in default["items"]] == tops[("cki", tuple(HISTORIES[0]))]


def test_candidates_rank_only_the_known_candidates(server, bundles):
    model, _, idmap = load_checkpoint(bundles["dynamic_run"])
    history, candidates = ["3", "4", "5"], ["4", "17", "9", "nope", "22", "1"]
    got = server.post("/recommend", json={"history": history, "candidates": candidates, "k": 10,
                                          "exclude_seen": False}).json()
    items = [item["item"] for item in got["items"]]
    known = [c for c in candidates if c != "nope"]
    assert items == _offline_top(OnlineCKI(model).eval(), idmap["items"], history, 10, False, known)
    assert sorted(items) == sorted(known) and got["unknown_candidates"] == ["nope"]
    scores = [item["score"] for item in got["items"]]
    assert scores == sorted(scores, reverse=True)
    excluded = server.post("/recommend", json={"history": history, "candidates": candidates, "k": 2}).json()
    assert [i["item"] for i in excluded["items"]] == [i for i in items if i != "4"][:2]


def test_bad_input_gets_a_documented_answer_never_a_500(server, bundles):
    model, _, idmap = load_checkpoint(bundles["dynamic_run"])
    cki = OnlineCKI(model).eval()
    # unknown ids: dropped and reported; the ranking is the known history's
    got = server.post("/recommend", json={"history": ["3", "x1", 4, "5", "x1"], "k": 5}).json()
    assert got["unknown_items"] == ["x1"] and got["history_used"] == 3
    assert [i["item"] for i in got["items"]] == _offline_top(cki, idmap["items"], ["3", "4", "5"], 5)
    # nothing known: the most popular training items, labelled
    counts = json.loads((bundles["dynamic"] / "popularity.json").read_text())["counts"]
    popular = [idmap["items"][i] for i in np.argsort(-np.array(counts[1:]), kind="stable")[:3] + 1]
    got = server.post("/recommend", json={"history": ["x2"], "k": 3}).json()
    assert (got["mode"], got["fallback"], got["history_used"]) == ("popularity", True, 0)
    assert [i["item"] for i in got["items"]] == popular and [i["score"] for i in got["items"]] == sorted(
        (float(c) for c in counts[1:]), reverse=True)[:3]
    # longer than max_len: the most recent max_len items are read
    long = [str(i) for i in range(1, 31)] * 2
    got = server.post("/recommend", json={"history": long, "k": 5, "exclude_seen": False}).json()
    assert got["truncated"] and got["history_used"] == MAX_LEN
    assert [i["item"] for i in got["items"]] == _offline_top(cki, idmap["items"], long[-MAX_LEN:], 5, False)
    # wrong requests
    invalid = [{"history": ["1"], "k": 0}, {"history": ["1"], "k": 31}, {"history": ["1"], "k": 5000},
               {"history": ["1"], "k": "5"}, {"history": ["1"], "mode": "magic"}, {"history": ["1"], "colour": 1},
               {"k": 5}, {"history": [["1"]]}, {"history": ["1"], "candidates": []}, {"user_id": ""}, [1, 2]]
    for body in invalid:
        answer = server.post("/recommend", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"]
    assert "catalogue's 30 items" in server.post("/recommend", json={"history": ["1"], "k": 31}).json()["detail"]
    headers = {"content-type": "application/json"}
    for raw in (b'{"history": ["1"', b"not json", b""):
        answer = server.post("/recommend", content=raw, headers=headers)
        assert answer.status_code == 400 and answer.json()["detail"][0]["type"] == "json_invalid"
    assert server.post("/events", json={"user_id": "u", "items": []}).status_code == 422
    assert server.get("/recommend").status_code == 405
    assert server.get("/nowhere").status_code == 404
    oversize = json.dumps({"history": ["1"] * 5000}).encode()  # > --max-body-bytes 20000
    answer = server.post("/recommend", content=oversize, headers=headers)
    assert answer.status_code == 413 and "20000 bytes" in answer.json()["detail"]
    chunked = server.post("/recommend", content=iter([oversize[:15000], oversize[15000:]]), headers=headers)
    assert chunked.status_code == 413  # no Content-Length: cut off while streaming
    assert server.post("/recommend", json={"history": ["1"], "k": 1}).status_code == 200  # still serving
    metrics = server.get("/metrics").text
    assert 'status="500"' not in metrics
    assert _metric(metrics, 'dynrec_requests_total{endpoint="/recommend",status="413"}') == 2
    assert _metric(metrics, 'dynrec_requests_total{endpoint="other",status="404"}') == 1


def test_events_become_the_history_of_later_recommendations(server):
    assert server.post("/events", json={"user_id": "alice", "items": ["3", 4]}).json() == \
        {"user_id": "alice", "stored": 2, "unknown_items": []}
    assert server.post("/events", json={"user_id": "alice", "items": ["zz", "5"]}).json()["unknown_items"] == ["zz"]
    stored = server.post("/recommend", json={"user_id": "alice", "k": 5}).json()
    given = server.post("/recommend", json={"history": ["3", "4", "5"], "k": 5}).json()
    assert stored["items"] == given["items"] and stored["stored_events"] == 4 and stored["unknown_items"] == ["zz"]
    both = server.post("/recommend", json={"user_id": "alice", "history": ["9"], "k": 5}).json()
    assert both["items"] == server.post("/recommend", json={"history": ["3", "4", "5", "9"], "k": 5}).json()["items"]
    nobody = server.post("/recommend", json={"user_id": "bob", "k": 5}).json()
    assert nobody["fallback"] and nobody["stored_events"] == 0


def test_concurrent_requests_share_a_forward_pass(server):
    before = server.get("/metrics").text
    answers = asyncio.run(_post_all(str(server.base_url), "/recommend",
                                    [{"history": HISTORIES[i % 4], "k": 3} for i in range(32)]))
    assert [a.status_code for a in answers] == [200] * 32
    after = server.get("/metrics").text
    passes = _metric(after, "dynrec_batch_size_count") - _metric(before, "dynrec_batch_size_count")
    served = _metric(after, "dynrec_batch_size_sum") - _metric(before, "dynrec_batch_size_sum")
    assert served == 32 and passes < 32  # every request went through the model, in fewer passes: some batch > 1


def test_a_static_bundle_answers_static_only(bundles, tmp_path):
    model, _, idmap = load_checkpoint(bundles["static_run"])
    with running_server(bundles["static"], tmp_path / "events.sqlite") as (url, _):
        health = httpx.get(f"{url}/healthz").json()
        assert health["modes"] == ["static"] and health["default_mode"] == "static"
        for mode in ("cki", "dynamic"):
            answer = httpx.post(f"{url}/recommend", json={"history": ["1"], "mode": mode})
            assert answer.status_code == 422 and "needs a dynamic bundle" in answer.json()["detail"]
        got = httpx.post(f"{url}/recommend", json={"history": HISTORIES[2], "k": 5}).json()
        assert got["mode"] == "static"
        assert [i["item"] for i in got["items"]] == _offline_top(model, idmap["items"], HISTORIES[2], 5)


def test_acknowledged_events_survive_kill_9(bundles, tmp_path):
    db = tmp_path / "events.sqlite"
    sent = {f"user{u}": [str((u * 7 + i) % 30 + 1) for i in range(5)] for u in range(6)}
    with running_server(bundles["dynamic"], db) as (url, process):
        for user, items in sent.items():
            for item in items:
                assert httpx.post(f"{url}/events", json={"user_id": user, "items": [item]}).status_code == 200
        process.kill()  # SIGKILL: no shutdown, no checkpoint of the WAL
        process.wait()
    rows = sqlite3.connect(db).execute("SELECT user_id, item FROM events ORDER BY id").fetchall()
    assert rows == [(user, item) for user, items in sent.items() for item in items]
    with running_server(bundles["dynamic"], db) as (url, _):
        for user, items in sent.items():
            got = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 5}).json()
            given = httpx.post(f"{url}/recommend", json={"history": items, "k": 5}).json()
            assert got["stored_events"] == 5 and got["items"] == given["items"]


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_a_full_queue_answers_503_with_retry_after(bundles, tmp_path, where):
    """With the model on the event loop (default) and on its own thread (--model-thread)."""
    options = ["--queue-size", "1", "--max-batch", "1", "--max-wait-ms", "0"]
    options += ["--model-thread"] if where == "thread" else []
    with running_server(bundles["dynamic"], tmp_path / "events.sqlite", *options) as (url, _):
        answers = asyncio.run(_post_all(url, "/recommend", [{"history": HISTORIES[2], "k": 5}] * 64))
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 503}, statuses
        rejected = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" and "overloaded" in a.json()["detail"] for a in rejected)
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, 'dynrec_requests_total{endpoint="/recommend",status="503"}') == len(rejected)
        assert httpx.post(f"{url}/recommend", json={"history": ["1"]}).status_code == 200  # recovers
