"""HTTP API load test: N concurrent clients for T seconds against `geovl serve`, micro-batching on vs off.

Each configuration starts its own server process (`geovl serve`, loopback) so the clients (threads in this
process) do not share a GIL with it. Every client sends one EuroSAT image per request with the EuroSAT label set,
back to back, for the whole window. Reported side by side: requests/s, p50/p99 latency, 503s, and the mean
forward-batch size the server reports.

    python benchmarks/api_load.py                       # 32 clients, 60 s each, geovl-rs-tiny
    python benchmarks/api_load.py --clients 8 --seconds 10 --model random:geovl-micro
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eurosat_rgb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(model: str, port: int, max_batch: int, max_wait_ms: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "geovl", "serve", "--model", model, "--port", str(port), "--max-batch",
           str(max_batch), "--max-wait-ms", str(max_wait_ms), "--queue-size", "4096"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def _find(body: Any, key: str) -> list[Any]:
    """The list under ``key`` anywhere in a JSON response (the timing block holds ``batch_sizes``)."""
    if isinstance(body, dict):
        if key in body and isinstance(body[key], list):
            return list(body[key])
        for value in body.values():
            found = _find(value, key)
            if found:
                return found
    return []


def _run(url: str, images: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    batches: list[int] = []
    rejected = [0]
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = k
            while time.monotonic() < stop:
                data = images[i % len(images)]
                i += clients
                t = time.perf_counter()
                r = http.post(f"{url}/v1/classify", files={"images": ("tile.jpg", data, "image/jpeg")},
                              data={"label_set": "eurosat", "top_k": "1"})
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                        batches.extend(int(b) for b in _find(r.json(), "batch_sizes"))
                    elif r.status_code == 503:
                        rejected[0] += 1
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "rps": len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "ok": len(lat),
        "rejected": rejected[0],
        "errors": errors[0],
        "mean_batch": statistics.mean(batches) if batches else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="geovl-rs-tiny")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=int, default=10)
    args = ap.parse_args()
    files = sorted(args.images.rglob("*.jpg"))[:256]
    if not files:
        raise SystemExit(f"no .jpg images under {args.images}; pass --images DIR")
    images = [f.read_bytes() for f in files]
    print(f"# API load, {date.today()}, {platform.machine()}, {os.cpu_count()} cores, model {args.model}, "
          f"{args.clients} clients x {args.seconds:.0f} s, 1 image per request, label set eurosat")
    print("| server | requests/s | p50 ms | p99 ms | mean forward batch | 503s | other errors |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name, max_batch, wait in (("micro-batching off (max batch 1)", 1, 0),
                                  (f"micro-batching on (max batch {args.max_batch}, wait {args.max_wait_ms} ms)",
                                   args.max_batch, args.max_wait_ms)):
        port = _free_port()
        proc = _start(args.model, port, max_batch, wait)
        try:
            _run(f"http://127.0.0.1:{port}", images, args.clients, min(3.0, args.seconds))  # warm-up
            r = _run(f"http://127.0.0.1:{port}", images, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results[max_batch] = r
        print(f"| {name} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} | "
              f"{r['rejected']} | {r['errors']} |", flush=True)
    speedup = results[args.max_batch]["rps"] / results[1]["rps"]
    print(f"\nmicro-batching throughput gain: {speedup:.2f}x")


if __name__ == "__main__":
    main()
