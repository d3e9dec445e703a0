"""Guards in front of the Gradio app: a cap on the bytes of one request body, and no remote URLs on file routes.

Body size. Gradio caps uploaded *files* (`max_file_size`), but nothing capped the JSON body of an API call: a
20 MB body cost the server +4 GB RSS and a 100 MB one got it OOM-killed. `BodyLimit` refuses a body over the cap
with 413 before the app reads it: at once when `Content-Length` says so, else (chunked) as soon as the bytes
received pass the cap. Uploads get their own, larger cap. Passed to FastAPI through Gradio's `app_kwargs`, so
it wraps every route.

Remote files. `/gradio_api/file=<http(s) URL>` once redirected anywhere (an open redirect, CVE-2024-4940,
gradio #13593); the Gradio locked here (6.31) instead fetches the URL itself, through safehttpx (public
addresses only), and streams it back, which makes any Gradio app a fetch proxy for public URLs. An API call can
do the same through a file *input*: a FileData whose `path` is a URL is downloaded into the cache before the
function runs (gradio/processing_utils.py, `_move_to_cache`: only a non-URL path is checked to be an upload).
This app never serves or reads a remote file, so `NoRemoteFiles` refuses both with 403 before Gradio sees them.

Upload budget. Gradio keeps every upload until `delete_cache` ages it out, and one client sent twenty 9 MB
files in 0.9 s. `UploadBudget` lets each client address upload at most `budget` bytes per `window` seconds
(429 beyond it), the same window after which the app deletes uploads, so one client holds at most `budget`
bytes of the server's disk.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time

from starlette.exceptions import HTTPException

JSON_BODY_BYTES = 1 << 20  # two 20,000-character prompts are < 0.5 MB of JSON even with every character \u-escaped


class BodyLimit:
    def __init__(self, app, max_bytes: int = JSON_BODY_BYTES, upload_bytes: int = 10 << 20,
                 upload_suffix: str = "/upload"):
        self.app, self.max_bytes, self.upload_bytes, self.upload_suffix = app, max_bytes, upload_bytes, upload_suffix

    def limit(self, path: str) -> int:
        # An upload's multipart envelope adds headers and a boundary to the file: allow 64 KiB of it.
        return self.upload_bytes + (64 << 10) if path.rstrip("/").endswith(self.upload_suffix) else self.max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _reply(send, 400, b"bad Content-Length")
            if int(declared) > limit:
                return await _reply(send, 413, f"request body over {limit:,} bytes".encode())
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked, or more bytes than Content-Length said
                    raise HTTPException(413, f"request body over {limit:,} bytes")
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as err:  # raised in a reader the app's own handlers did not turn into a response
            if err.status_code != 413 or started:
                raise
            await _reply(send, 413, err.detail.encode())


async def _reply(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


_REMOTE_FILE = re.compile(r"/file[=/]\s*https?:", re.IGNORECASE)


class NoRemoteFiles:
    def __init__(self, app, upload_suffix: str = "/upload"):
        self.app, self.upload_suffix = app, upload_suffix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _REMOTE_FILE.search(scope["path"]):  # the path, already %-decoded
            return await _reply(send, 403, b"this app serves no remote files")
        if scope["method"] != "POST" or scope["path"].rstrip("/").endswith(self.upload_suffix):
            return await self.app(scope, receive, send)
        # An API call's JSON body, read whole (BodyLimit, outside this guard, has capped it) and replayed.
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if _names_a_remote_file(body):
            return await _reply(send, 403, b"this app reads no remote files: upload the file instead")
        pending = collections.deque(messages)

        async def replay():
            return pending.popleft() if pending else await receive()

        return await self.app(scope, replay, send)


def _names_a_remote_file(body: bytes) -> bool:
    """Whether a JSON body holds a file object (a dict with a string `path`) whose path is an http(s) URL."""
    if b"http" not in body.lower():
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON: Gradio refuses it itself
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and path.strip().lower().startswith(("http://", "https://")):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class UploadBudget:
    def __init__(self, app, budget: int = 100 << 20, window: float = 900.0, upload_bytes: int = 10 << 20,
                 upload_suffix: str = "/upload"):
        # An upload that declares no length is charged the most one upload may be (BodyLimit's cap).
        self.app, self.budget, self.window, self.upload_bytes = app, budget, window, upload_bytes
        self.upload_suffix = upload_suffix
        self._spent: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def _used(self, client: str, now: float) -> int:
        if len(self._spent) > 10_000:  # many addresses: forget those with nothing left in the window
            self._spent = {c: d for c, d in self._spent.items() if d and now - d[-1][0] <= self.window}
        spent = self._spent.setdefault(client, collections.deque())
        while spent and now - spent[0][0] > self.window:
            spent.popleft()
        return sum(n for _, n in spent)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].rstrip("/").endswith(self.upload_suffix):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        size = int(declared) if declared.isdigit() and int(declared) else self.upload_bytes
        with self._lock:
            now = time.monotonic()
            used = self._used(client, now)
            if used + size > self.budget:
                wait = self.window - (now - self._spent[client][0][0]) if self._spent[client] else self.window
                return await _reply(send, 429, f"upload budget of {self.budget >> 20} MB per {self.window / 60:g} "
                                               f"minutes used; try again in {wait / 60:.0f} minutes".encode())
            self._spent[client].append((now, size))  # charged up front: parallel uploads cannot all pass
        return await self.app(scope, receive, send)
