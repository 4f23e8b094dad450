"""The demo's speed as a user meets it: first start (embed + index the gallery), second start (cache reused), and
text-search latency measured through the Gradio HTTP endpoint (not the Python call), side by side with the bare
Python search on the same gallery.

    python benchmarks/demo_latency.py                      # the default gallery (../shared/data: ~14k images)
    python benchmarks/demo_latency.py --images DIR --queries 100

Each start is a fresh ``geovl demo`` process, timed until it prints its URL. The first start uses an empty cache
folder; the second reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

QUERIES = ("a river crossing farmland", "an airport with planes", "dense residential area", "a harbour with boats",
           "a dense forest", "a highway", "a beach", "industrial buildings", "a baseball field", "a parking lot",
           "storage tanks", "a golf course", "a bridge over a river", "a desert", "snow covered mountains")


def start_demo(args: argparse.Namespace, cache: Path, port: int) -> tuple[subprocess.Popen[str], float, str]:
    """Start ``geovl demo``; returns the process, seconds until it printed its URL, and the URL."""
    cmd = [sys.executable, "-m", "geovl", "demo", "--cache-dir", str(cache), "--port", str(port), "--quiet"]
    for images in args.images:
        cmd += ["--images", images]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "open http" in line:
            return proc, time.perf_counter() - t0, line.rsplit("open ", 1)[1].strip().rstrip("/")
    raise RuntimeError(f"geovl demo exited with {proc.wait()} before printing its URL")


def http_search(client: httpx.Client, url: str, query: str, k: int) -> float:
    """One text search through Gradio's HTTP API (POST the call, read its event stream to the end); seconds."""
    t0 = time.perf_counter()
    r = client.post(f"{url}/gradio_api/call/search", json={"data": [query, k, "", "", "", ""]})
    r.raise_for_status()
    event = r.json()["event_id"]
    with client.stream("GET", f"{url}/gradio_api/call/search/{event}") as stream:
        body = "".join(stream.iter_text())
    if "event: complete" not in body:
        raise RuntimeError(f"search failed: {body[:300]}")
    return time.perf_counter() - t0


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def python_latency(args: argparse.Namespace, cache: Path, queries: list[str]) -> list[float]:
    """The same searches as Python calls on the same cached gallery (no HTTP, no Gradio)."""
    from geovl.demo.app import prepare
    from geovl.demo.config import DemoConfig

    search = prepare(DemoConfig(images=list(args.images), cache_dir=str(cache), progress=False))
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search.text(q, args.k)
        times.append(time.perf_counter() - t0)
    search.resources.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", action="append", default=[], help="collections (default: the demo's default)")
    ap.add_argument("--queries", type=int, default=60, help="timed searches (after 5 warm-up ones)")
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--port", type=int, default=7871)
    ap.add_argument("--keep-cache", default=None, help="reuse this cache folder instead of a fresh temporary one")
    args = ap.parse_args()
    cache = Path(args.keep_cache) if args.keep_cache else Path(tempfile.mkdtemp(prefix="geovl-demo-bench-"))
    queries = [QUERIES[i % len(QUERIES)] for i in range(args.queries)]
    try:
        proc, first, url = start_demo(args, cache, args.port)
        stop(proc)
        proc, second, url = start_demo(args, cache, args.port)
        try:
            with httpx.Client(timeout=60) as client:
                for q in QUERIES[:5]:
                    http_search(client, url, q, args.k)
                http = [http_search(client, url, q, args.k) for q in queries]
        finally:
            stop(proc)
        py = python_latency(args, cache, queries)
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    info = json.loads(next(cache.glob("*/gallery.json")).read_text()) if args.keep_cache else {}
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    print(f"gallery: {', '.join(args.images) or 'default'} {info.get('count', '')}")
    print(f"first start (embed + index): {first:.1f} s   target < 120 s")
    print(f"second start (cache reused): {second:.1f} s   target < 10 s")
    print(f"text search through Gradio HTTP: p50 {ms(http, 50):.0f} ms, p90 {ms(http, 90):.0f} ms, "
          f"p99 {ms(http, 99):.0f} ms over {len(http)} queries   target p50 < 300 ms")
    print(f"same searches as Python calls:   p50 {ms(py, 50):.1f} ms, p90 {ms(py, 90):.1f} ms")
    print(f"HTTP / Python p50 ratio: {np.median(http) / np.median(py):.1f}x")


if __name__ == "__main__":
    main()
