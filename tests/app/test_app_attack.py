"""The app under attack, as a real `sd-bridge serve` process on 127.0.0.1: path traversal on every file route,
oversized bodies and uploads, huge prompts beside a small request, concurrent load, and the temp files left
after Batch uploads and a shutdown. Each case was an open failure in the reliability issue."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.app_load import API, ROOT, Server, translator_per_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"))
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def test_every_file_route_refuses_traversal(server, client, tmp_path, tiny_cache):
    """A secret outside the app, the project's own files and the model cache: no file route serves them, by any
    spelling of the path. A file the app did produce is served, so the routes were really tried."""
    from gradio_client import handle_file

    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY-7f3a")
    cache_file = tiny_cache / "models" / "config.json"  # the model cache the server reads its presets from
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text('{"model_type": "canary-cache-3e1d"}')
    targets = {str(secret): b"CANARY-7f3a", str(ROOT / "app.py"): b"The sd-bridge Gradio app",
               str(ROOT / "pyproject.toml"): b"[project]", "/etc/passwd": b"root:", str(cache_file): b"canary-cache-3e1d"}
    routes = ["/gradio_api/file={}", "/gradio_api/file/{}", "/file={}", "/static/{}", "/assets/{}", "/svelte/{}",
              "/gradio_api/proxy={}", "/{}", "/gradio_api/custom_component/x/client/y/{}"]
    tried = 0
    for target, marker in targets.items():
        rel = target.lstrip("/")
        for spelling in (target, "../" * 12 + rel, "%2e%2e%2f" * 12 + rel, "..%2f" * 12 + rel, "....//" * 12 + rel,
                         target.replace("/", "%2f"), "..\\" * 12 + rel, "./" + "/".join([".."] * 12) + "/" + rel):
            for route in routes:
                status, body = server.request("GET", route.format(spelling))
                assert marker not in body, (route.format(spelling), status)
                assert status != 200 or b"<!doctype html>" in body[:2000].lower(), (route.format(spelling), status)
                tried += 1
    assert tried == len(targets) * 8 * len(routes)
    lib = tmp_path / "lib.txt"
    lib.write_text("a cat <lora:x:1>\n", encoding="utf-8")
    job = client.submit(handle_file(str(lib)), "prompt", "", api_name="/batch")
    job.result()
    path = next(Path(server.gradio_tmp).rglob("lib.migrated.txt"))  # the migrated file, in the server's cache
    status, body = server.request("GET", f"/gradio_api/file={path}")
    assert status == 200 and body.endswith(b"a cat\n")


@pytest.mark.parametrize("url", ["/gradio_api/file=http://127.0.0.1:{port}/config", "/gradio_api/file=https://example.com/x",
                                 "/gradio_api/file/http://127.0.0.1:{port}/config", "/gradio_api/file=%68ttps://example.com/",
                                 "/gradio_api/file=HTTP://example.com/"])
def test_file_routes_serve_no_remote_url(server, url):
    """Gradio once redirected `file=<URL>` anywhere (an open redirect); now it fetches public URLs itself, which
    would make this app a fetch proxy. It serves no remote file: 403 before any fetch."""
    status, body = server.request("GET", url.format(port=server.port))
    assert status == 403 and b"no remote files" in body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_are_refused_without_growing_the_server(server, chunked):
    """A 20 MB JSON body cost +4 GB RSS and 100 MB got the server OOM-killed; now every API route answers 413
    (the upload route 413 or 400: a JSON body is not multipart) and the server grows < 200 MB."""
    before = server.rss_mb()
    for path in API + ["/gradio_api/upload"]:
        for mb in (10, 100):
            status, _ = server.request("POST", path, body_bytes=mb << 20, chunked=chunked)
            assert status in ((413, 400) if path.endswith("/upload") else (413,)), (path, mb, status)
    assert server.rss_mb() - before < 200
    assert server.answers()


def test_an_upload_over_the_cap_is_refused(server, tmp_path):
    assert server.upload("big.txt", (10 << 20) + 1) == 413
    assert not list(Path(server.gradio_tmp).rglob("big.txt"))


def test_huge_prompts_do_not_hold_up_a_small_request(server, client):
    """Four 100 KB prompts filled every Translate slot for 3 minutes; now they are refused at once, and a small
    request sent behind them is answered (the benchmark prints how fast: benchmarks/app_load.py)."""
    big = "masterpiece, " * 8_000  # 104 KB
    jobs = [client.submit(big, "", api_name="/translate") for _ in range(4)]
    small = client.submit("a cat <lora:x:1>", "", api_name="/translate")
    assert small.result(timeout=20)[0] == "a cat"
    for job in jobs:
        with pytest.raises(Exception, match="the limit is 20,000"):
            job.result(timeout=20)


def test_fifty_concurrent_translates_all_succeed(server):
    """Eight at a time from eight clients: one shared gradio Client can cancel a call the server answered
    (`translator_per_thread` says how), which is the client's failure, not the app's."""
    prompts = [f"a cat number {k}, <lora:x:1>, (masterpiece:1.2)" for k in range(50)]
    translate = translator_per_thread(server.url)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(translate, prompts))
    assert results == [f"a cat number {k}, (masterpiece:1.2)" for k in range(50)]


def test_no_temp_files_after_20_batch_uploads_and_a_shutdown(tmp_path):
    """Each Batch upload left its migrated copy and an empty Gradio temp file; SIGTERM left them all."""
    from gradio_client import Client, handle_file

    srv = Server(tmp_path)
    try:
        lib = tmp_path / "lib.csv"
        lib.write_text("prompt\na cat <lora:x:1>\n", encoding="utf-8")
        c = Client(srv.url, verbose=False, download_files=False)
        for _ in range(20):
            c.predict(handle_file(str(lib)), "prompt", "", api_name="/batch")
        assert list(srv.tmp.rglob("*.migrated.csv")) or list(srv.gradio_tmp.rglob("*.migrated.csv"))
    finally:
        out = srv.stop(signal.SIGTERM)
    assert srv.proc.returncode == 0, out
    assert list(srv.tmp.iterdir()) == [] and list(srv.gradio_tmp.iterdir()) == []


def test_a_url_as_an_api_file_input_is_refused_and_errors_name_no_server_path(server, tmp_path):
    """Issue #41: a FileData whose path was a public URL was downloaded by the server, and Gradio's error for a
    path that was not uploaded quoted the server's working directory."""
    url = {"path": "https://example.com/library.csv", "meta": {"_type": "gradio.FileData"}, "orig_name": "l.csv"}
    status, text = server.call_api("batch", [url, "prompt", ""])
    assert status == 403 and "no remote files" in text
    secret = tmp_path / "not-uploaded.csv"
    secret.write_text("prompt\nCANARY-91c2\n")
    local = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "l.csv"}
    status, text = server.call_api("batch", [local, "prompt", ""])
    assert status == 200 and "event: error" in text, text
    for leak in (str(ROOT), str(tmp_path), "CANARY-91c2", str(server.gradio_tmp)):
        assert leak not in text, (leak, text)


def test_each_client_has_an_upload_budget(server):
    """Twenty 9 MB uploads in a second were all accepted and kept for an hour; now one client uploads at most
    --upload-budget (100mb) per window, then gets 429 and nothing more is written. Last in this module: it
    spends the module server's budget."""
    statuses = [server.upload(f"big{k}.txt", 9 << 20) for k in range(20)]
    accepted = statuses.count(200)
    assert 1 <= accepted <= 11 and set(statuses[accepted:]) == {429}, statuses
    kept = sum(p.stat().st_size for p in Path(server.gradio_tmp).rglob("big*.txt"))
    assert kept <= 100 << 20
