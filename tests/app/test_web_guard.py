"""The request guards of bridge/web_guard.py on a bare ASGI app that records what reached it (issue #41): a URL
given as an API file input never reaches Gradio (which would download it), and each client's uploads stop at
its budget. The same guards run in front of the real server in test_app_attack.py."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bridge.web_guard import BodyLimit, NoRemoteFiles, UploadBudget


def _app(*guards):
    reached = []

    async def endpoint(request: Request):
        body = await request.body()
        reached.append((request.url.path, len(body)))
        return PlainTextResponse(f"ok {len(body)}")

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])], middleware=list(guards))
    return TestClient(app), reached


def _file(path: str) -> dict:
    return {"path": path, "url": None, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.txt"}


@pytest.mark.parametrize("path", ["http://127.0.0.1:9/x", "https://example.com/lib.csv", " HTTPS://example.com/"])
def test_a_url_as_a_file_input_never_reaches_the_app(path):
    client, reached = _app(Middleware(NoRemoteFiles))
    for body in ({"data": [_file(path), "prompt", ""]}, {"data": [[{"nested": _file(path)}]], "fn_index": 3}):
        reply = client.post("/gradio_api/call/batch", content=json.dumps(body))
        assert reply.status_code == 403 and "no remote files" in reply.text
    assert reached == []


def test_ordinary_calls_pass_with_their_body_intact():
    client, reached = _app(Middleware(BodyLimit), Middleware(NoRemoteFiles))
    body = json.dumps({"data": [_file("/tmp/gradio/abc/lib.csv") | {"url": "http://127.0.0.1:7860/gradio_api/file=x"},
                                "a photo of http://example.com on a sign", ""]})
    reply = client.post("/gradio_api/call/batch", content=body)
    assert reply.status_code == 200 and reply.text == f"ok {len(body)}"
    assert client.post("/gradio_api/call/translate", content=b"not json").status_code == 200
    assert reached == [("/gradio_api/call/batch", len(body)), ("/gradio_api/call/translate", 8)]


def test_each_client_uploads_at_most_its_budget_per_window(monkeypatch):
    import bridge.web_guard as guard

    now = [1000.0]
    monkeypatch.setattr(guard.time, "monotonic", lambda: now[0])
    client, reached = _app(Middleware(UploadBudget, budget=3_000, window=60))
    statuses = [client.post("/gradio_api/upload", content=b"x" * 900).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429] and len(reached) == 3
    reply = client.post("/gradio_api/upload", content=b"x" * 900)
    assert "upload budget of" in reply.text and "per 1 minutes" in reply.text
    assert client.post("/gradio_api/call/translate", content=b"{}").status_code == 200  # not an upload
    now[0] += 61  # the window has passed: the budget is back
    assert client.post("/gradio_api/upload", content=b"x" * 900).status_code == 200
