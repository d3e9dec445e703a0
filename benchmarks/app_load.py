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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.results import recorded

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT.parent / "shared" / "prompts"
API = ["/gradio_api/call/translate", "/gradio_api/call/compare", "/gradio_api/call/batch", "/gradio_api/call/png_info",
       "/gradio_api/queue/join", "/gradio_api/run/translate", "/gradio_api/api/translate"]
SMALL_TARGET_S, RSS_TARGET_MB = 2.0, 200


def translator_per_thread(url: str):
    """`translate(prompt)` with one gradio Client per calling thread. gradio_client 2.7 shares one SSE reader among
    the threads that call a Client, and a call can raise CancelledError though the server answered it: seen once in
    CI, where the failed event's queue still held the server's whole answer (success included) followed by the
    reader's end-of-stream marker, so the call had been cancelled by a marker from a stream that closed as it was
    submitted. A Client per thread keeps the load on the server just as concurrent and gives each thread a reader
    of its own."""
    from gradio_client import Client

    local = threading.local()

    def translate(prompt: str) -> str:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)
        return local.client.predict(prompt, "", api_name="/translate")[0]

    return translate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m bridge.cli serve` in its own process, with its own TMPDIR and GRADIO_TEMP_DIR (under `root`) to
    inspect, and its output in `root/server.log`. tests/app/test_app_attack.py uses it too."""

    def __init__(self, root: Path, *args: str):
        self.port, self.tmp, self.gradio_tmp, self.log = free_port(), root / "tmp", root / "gradio", root / "server.log"
        self.tmp.mkdir()
        self.gradio_tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp), "GRADIO_TEMP_DIR": str(self.gradio_tmp)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(self.port), *args],
                                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.time() + 120
        while not self.answers():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")
            time.sleep(0.3)

    def answers(self) -> bool:
        try:
            return self.request("GET", "/config")[0] == 200
        except OSError:
            return False

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024

    def request(self, method: str, path: str, body_bytes: int = 0, chunked: bool = False) -> tuple[int | None, bytes]:
        return raw_request(method, path, self.port, body_bytes, chunked)

    def call_api(self, api: str, data: list) -> tuple[int | None, str]:
        """POST an API call as raw JSON (as a script would, not as gradio_client writes it) and read its result
        stream: (status of the POST, the stream's text, or the refusal's body)."""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.url}gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                event = json.loads(reply.read())["event_id"]
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        with urllib.request.urlopen(f"{self.url}gradio_api/call/{api}/{event}", timeout=60) as reply:
            return 200, reply.read().decode(errors="replace")

    def upload(self, name: str, size: int) -> int | None:
        """Upload a file of `size` bytes as a browser does (multipart, with Content-Length); the status, also when
        the server refuses before reading the body."""
        boundary = "sdbridgeboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                f"Content-Type: text/plain\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        s.sendall((f"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                   f"{len(body)}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
        try:
            s.sendall(body)
        except OSError:  # refused before the body was read: the reply is already there
            pass
        reply = s.recv(64)
        s.close()
        return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None

    def stop(self, sig=signal.SIGTERM) -> str:
        """Send `sig`, wait for the exit, and return what the server printed."""
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        return self.log.read_text()


def raw_request(method: str, path: str, port: int, body_bytes: int = 0, chunked: bool = False
                ) -> tuple[int | None, bytes]:
    """Send exactly this request line (no client-side path normalisation) and a JSON-looking body of
    `body_bytes` bytes in 1 MiB pieces, declared by Content-Length or sent chunked; (status, response), with
    status None when the server closed without answering."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if body_bytes:
        head += "Content-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {body_bytes}\r\n"
    s.sendall((head + "\r\n").encode())
    piece, sent = b'{"data": ["' + b"a" * (1 << 20), 0
    try:
        while sent < body_bytes:
            chunk = piece[: min(len(piece), body_bytes - sent)]
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            sent += len(chunk)
        if chunked and body_bytes:
            s.sendall(b"0\r\n\r\n")
    except OSError:  # the server refused and closed while the body was still going out
        pass
    data = b""
    try:
        while chunk := s.recv(1 << 16):
            data += chunk
    except OSError:
        pass
    s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as err:  # noqa: BLE001 - counted as an error
        result = err
    return time.perf_counter() - start, result


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@recorded("app_load")
def main(argv=None) -> dict:
    from gradio_client import Client

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    prompts = [json.loads(line)["prompt"] for line in (PROMPTS / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = (prompts * (args.requests // len(prompts) + 1))[: args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            client = Client(server.url, verbose=False)
            translate = translator_per_thread(server.url)
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
            before = server.rss_mb()
            statuses = [server.request("POST", path, body_bytes=mb << 20)[0] for path in API for mb in (10, 100)]
            growth = server.rss_mb() - before
        finally:
            server.stop()
    print(f"translate, one at a time: median {statistics.median(alone) * 1000:.0f} ms over {len(alone)} requests")
    print(f"{args.requests} requests at concurrency {args.concurrency}: {errors} errors, p50 {pct(lat, 50) * 1000:.0f} ms, "
          f"p95 {pct(lat, 95) * 1000:.0f} ms, {args.requests / wall:.1f} req/s; "
          f"p50 vs one at a time: {pct(lat, 50) / statistics.median(alone):.1f}x")
    print(f"four 100 KB prompts: {refused}/4 refused; the small request behind them answered "
          f"{small!r} in {small_s:.2f} s (target <= {SMALL_TARGET_S:.0f} s)")
    print(f"10 MB and 100 MB bodies to {len(API)} API routes: {sum(s == 413 for s in statuses)}/{len(statuses)} refused "
          f"with 413; server RSS growth {growth:+.0f} MB (target < {RSS_TARGET_MB} MB)")
    return {"alone_median_ms": statistics.median(alone) * 1000, "requests": args.requests,
            "concurrency": args.concurrency, "errors": errors, "p50_ms": pct(lat, 50) * 1000,
            "p95_ms": pct(lat, 95) * 1000, "requests_per_s": args.requests / wall,
            "p50_vs_alone": pct(lat, 50) / statistics.median(alone), "big_refused": refused,
            "small_behind_big_s": small_s, "oversized_refused_413": sum(s == 413 for s in statuses),
            "oversized_requests": len(statuses), "rss_growth_mb": growth}


if __name__ == "__main__":
    main()
