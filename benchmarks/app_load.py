"""The Gradio app under load and attack: `sd-bridge serve` in its own process on 127.0.0.1.

Issue #16 asks, with work bounded per request:
- 50 concurrent Translate requests (real prompts) at client concurrency 8: 0 errors, p50/p95 latency, reported
  against one request at a time measured in the same run;
- four 100 KB prompts sent at once, then a small request: the small one answered within 2 s;
- 10 MB and 100 MB JSON bodies to each API route: refused, server RSS growth < 200 MB.

    uv run python -m benchmarks.app_load [--requests 50] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = Path(__file__).resolve().parents[1].parent / "shared" / "prompts"
API = ["/gradio_api/call/translate", "/gradio_api/call/compare", "/gradio_api/call/batch", "/gradio_api/call/png_info",
       "/gradio_api/queue/join", "/gradio_api/run/translate", "/gradio_api/api/translate"]
SMALL_TARGET_S, RSS_TARGET_MB = 2.0, 200


def start_server(tmp: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)],
                            env={**os.environ, "GRADIO_TEMP_DIR": str(tmp)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.3)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) / 1024


def post_body(port: int, path: str, size: int) -> int | None:
    """POST a `size`-byte JSON body (declared by Content-Length); the status, or None when the server hung up."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
              f"Content-Length: {size}\r\n\r\n".encode())
    piece = b"a" * (1 << 20)
    try:
        for _ in range(size >> 20):
            s.sendall(piece)
    except OSError:
        pass
    try:
        reply = s.recv(64)
    except OSError:
        reply = b""
    s.close()
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as err:  # noqa: BLE001 - counted as an error
        result = err
    return time.perf_counter() - start, result


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv=None) -> None:
    from gradio_client import Client

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    prompts = [json.loads(line)["prompt"] for line in (PROMPTS / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = (prompts * (args.requests // len(prompts) + 1))[: args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp))
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            translate = lambda p: client.predict(p, "", api_name="/translate")[0]  # noqa: E731
            translate("warm up: load the translator")
            # 1. One at a time: the baseline of the same run.
            alone = [timed(translate, p)[0] for p in prompts[:20]]
            # 2. All at once, `concurrency` in flight.
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                loaded = list(pool.map(lambda p: timed(translate, p), prompts))
            wall = time.perf_counter() - start
            errors = sum(isinstance(r, Exception) for _, r in loaded)
            lat = [t for t, _ in loaded]
            # 3. Four 100 KB prompts, then a small request behind them.
            big = "masterpiece, " * 8_000
            jobs = [client.submit(big, "", api_name="/translate") for _ in range(4)]
            small_s, small = timed(translate, "a cat <lora:x:1>")
            refused = sum(isinstance(timed(j.result)[1], Exception) for j in jobs)
            # 4. Oversized bodies.
            before = rss_mb(proc.pid)
            statuses = [post_body(port, path, mb << 20) for path in API for mb in (10, 100)]
            growth = rss_mb(proc.pid) - before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"translate, one at a time: median {statistics.median(alone) * 1000:.0f} ms over {len(alone)} requests")
    print(f"{args.requests} requests at concurrency {args.concurrency}: {errors} errors, p50 {pct(lat, 50) * 1000:.0f} ms, "
          f"p95 {pct(lat, 95) * 1000:.0f} ms, {args.requests / wall:.1f} req/s; "
          f"p50 vs one at a time: {pct(lat, 50) / statistics.median(alone):.1f}x")
    print(f"four 100 KB prompts: {refused}/4 refused; the small request behind them answered "
          f"{small!r} in {small_s:.2f} s (target <= {SMALL_TARGET_S:.0f} s)")
    print(f"10 MB and 100 MB bodies to {len(API)} API routes: {sum(s == 413 for s in statuses)}/{len(statuses)} refused "
          f"with 413; server RSS growth {growth:+.0f} MB (target < {RSS_TARGET_MB} MB)")


if __name__ == "__main__":
    main()
