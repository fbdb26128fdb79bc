"""Open-loop load test of `dynrec serve` over HTTP: throughput, latency percentiles and errors per rate.

Starts the server on a bundle in a subprocess (a free localhost port, a fresh event store), then, from
this process, sends POST /recommend at fixed request rates: request i is due at start + i / rate whatever
the server's state (open loop), and its latency counts from that due time, so a server (or client) that
falls behind shows it in the percentiles instead of slowing the arrivals. Each request carries a history
of max_len ids drawn by training popularity (the model's longest input, the most expensive case).
The client speaks HTTP/1.1 itself over asyncio streams (keep-alive connections, opened as needed): httpx's
AsyncClient took a whole core to send 250 requests/s here (its pool's bookkeeping grows with the waiting
requests), which on a 2-core machine starves the server it is measuring. The tests use httpx.

Without a trained model, `--make-bundle DIR` builds one from an untrained dynamic SASRec shaped for ML-1M
(3,416 items; needs the ML-1M files for the id map and popularity): weights do not change the cost.
`--setting paper` is the DUET/CKI paper's setting (hidden 32, last 10 items, GRU generator, full form);
`full` is configs/ml-1m/sasrec.yaml (hidden 64, 200 items) with a low-rank generator.

    python benchmarks/serve_load.py --make-bundle runs/serve-bench/paper --rates 250 500 750 --seconds 10
    python benchmarks/serve_load.py --bundle BUNDLE [--server-args "--max-batch 64 --max-wait-ms 2"]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch

from dynrec import api
from dynrec.checkpoint import save_checkpoint, write_json
from dynrec.config import load_config
from dynrec.experiments.runner import PAPER_SETTING
from dynrec.machine import machine_info
from dynrec.models import build_model
from dynrec.train import data_for

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "paper": [*PAPER_SETTING, "model.generator_form=full"],
    "full": ["model.generator_form=lowrank", "model.generator_window=10"],
}


def make_bundle(out: Path, setting: str, data_dir: str | None) -> None:
    """An untrained ML-1M-shaped dynamic SASRec (seed 0), saved as a run and exported as a bundle to `out`."""
    overrides = [*SETTINGS[setting], "model.dynamic=true", "model.generator_source=gru"]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    cfg = load_config(ROOT / "configs/ml-1m/sasrec.yaml", overrides)
    data = data_for(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.n_items)
    run = out.parent / f"{out.name}-untrained-run"
    save_checkpoint(run, model, cfg, data)
    api.export(run, out, data_dir=data_dir, force=True)


def weights_note(config: dict) -> str:
    """How trained the bundle's source run was: finished (result.json), stopped before early stopping ended
    (trainer state only: its best epoch so far), or untrained (--make-bundle)."""
    source = Path(config["source_checkpoint"])
    if (source / "result.json").exists():
        return f"trained: {source}"
    if (source / "trainer_state.pt").exists():
        state = torch.load(source / "trainer_state.pt", weights_only=True)
        return (f"trained {state['epoch']} epochs, early stopping not reached: weights of the best epoch so far "
                f"({state['best_epoch']}, validation {state['best']}); {source}")
    return f"untrained ({source} has no result.json): timing only, weights do not change the cost"


def request_bodies(bundle: Path, mode: str, k: int, count: int = 2000, seed: int = 0) -> tuple[list[bytes], int]:
    """Serialized /recommend bodies with max_len-item histories drawn by training popularity; and max_len."""
    config = json.loads((bundle / "config.json").read_text())
    items = json.loads((bundle / "idmap.json").read_text())["items"]
    counts = np.array(json.loads((bundle / "popularity.json").read_text())["counts"][1:], dtype=float) + 1.0
    length = config["model"]["max_len"]
    rng = np.random.default_rng(seed)
    draws = rng.choice(np.arange(1, len(items)), size=(count, length), p=counts / counts.sum())
    bodies = [json.dumps({"history": [items[i] for i in row], "k": k, "mode": mode}).encode() for row in draws]
    return bodies, length


def start_server(bundle: Path, db: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "dynrec.cli", "serve", "--bundle", str(bundle), "--port", "0", "--db", str(db),
               *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    match = re.search(r"http://[^ ]+:(\d+)", process.stdout.readline() if ready else "")
    if not match:
        process.kill()
        raise SystemExit("the server did not start")
    url = f"http://127.0.0.1:{match.group(1)}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server did not answer /healthz")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_totals(url: str) -> tuple[float, float]:
    """(forward passes, requests through the model) so far, from the server's /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("dynrec_batch_size_count ", "dynrec_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("dynrec_batch_size_count", 0.0), values.get("dynrec_batch_size_sum", 0.0)


class Connections:
    """Keep-alive HTTP/1.1 connections to one host: a free one is reused, else a new one is opened. A connection
    idle for `max_idle` seconds is closed instead, before the server's keep-alive timeout (uvicorn: 5 s) could
    close it under a request."""

    def __init__(self, host: str, port: int, max_idle: float = 3.0) -> None:
        self.host, self.port, self.max_idle = host, port, max_idle
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < self.max_idle:
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> int:
        """Send one pre-built request; return the response status once its whole body has arrived."""
        reader, writer = await self._connection()
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        except BaseException:  # an error or a timeout's cancellation: the connection's state is unknown
            writer.close()
            raise
        if re.search(rb"(?i)connection: *close", head):
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


def raw_request(body: bytes) -> bytes:
    return (b"POST /recommend HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


async def drive(url: str, requests: list[bytes], rate: float, seconds: float, timeout: float = 10.0) -> dict:
    """Send rate * seconds requests on a fixed schedule; latency counts from each request's due time."""
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    connections = Connections(host, int(port))
    latencies: list[float] = []
    errors: Counter = Counter()
    lateness: list[float] = []

    async def one(raw: bytes, due: float) -> None:
        lateness.append(loop.time() - due)
        try:
            status = await asyncio.wait_for(connections.request(raw), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
            errors[type(error).__name__] += 1
            return
        if status == 200:
            latencies.append(loop.time() - due)
        else:
            errors[str(status)] += 1

    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        tasks.append(asyncio.create_task(one(requests[i % len(requests)], due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    connections.close()
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "target_rps": rate,
        "sent": total,
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "client_send_lag_p99_ms": round(float(np.percentile(np.array(lateness) * 1000, 99)), 2),
        "connections_opened": connections.opened,
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="a bundle written by dynrec export")
    source.add_argument("--make-bundle", type=Path, help="build an untrained ML-1M-shaped bundle here (timing only)")
    parser.add_argument("--setting", choices=list(SETTINGS), default="paper", help="with --make-bundle")
    parser.add_argument("--data-dir", help="where ml-1m lives (with --make-bundle)")
    parser.add_argument("--rates", type=float, nargs="+", default=[250, 500, 750])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds at the lowest rate first, not recorded (default 10: with 2, the first "
                             "window's p99 was 70-100 ms against about 20 ms later, while the client's "
                             "connection pool grew)")
    parser.add_argument("--mode", default="cki", choices=["static", "dynamic", "cki"])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--server-args", default="", help="extra `dynrec serve` options, one quoted string")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other jobs on the machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_load.json")
    args = parser.parse_args()

    bundle = args.bundle or args.make_bundle
    if args.make_bundle and not (bundle / "manifest.json").exists():
        make_bundle(bundle, args.setting, args.data_dir)
    bodies, length = request_bodies(bundle, args.mode, args.k)
    requests = [raw_request(body) for body in bodies]
    config = json.loads((bundle / "config.json").read_text())
    server_args = shlex.split(args.server_args)
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(bundle, Path(tmp) / "events.sqlite", server_args)
        try:
            asyncio.run(drive(url, requests, min(args.rates), args.warmup))
            rows = []
            for rate in args.rates:
                passes, served, cpu = *batch_totals(url), cpu_seconds(process.pid)
                row = asyncio.run(drive(url, requests, rate, args.seconds))
                passes_after, served_after = batch_totals(url)
                row["mean_batch"] = round((served_after - served) / max(passes_after - passes, 1), 2)
                row["server_cpu_cores"] = round((cpu_seconds(process.pid) - cpu) / row["seconds"], 2)
                row["load_average_1min"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            process.terminate()
            process.wait(30)
    write_json(args.out, {
        "command": shlex.join(["python", *sys.argv]),
        "bundle": {
            "path": str(bundle),
            "model": config["model"],
            "n_items": config["n_items"],
            "weights": weights_note(config),
        },
        "server": {"options": server_args, "defaults": "max-batch 64, max-wait-ms 2, queue-size 128, threads 1, "
                                                      "model on the event loop"},
        "requests": {"endpoint": "POST /recommend", "mode": args.mode, "k": args.k, "history_length": length,
                     "exclude_seen": True, "arrivals": "open loop, fixed interval 1/rate",
                     "latency": "from the scheduled send time to the end of the response",
                     "seconds_per_rate": args.seconds, "warmup_seconds": args.warmup,
                     "client": "HTTP/1.1 over asyncio streams, keep-alive, one connection per request in flight"},
        "note": args.note,
        "machine": machine_info(),
        "rates": rows,
    })


if __name__ == "__main__":
    main()
