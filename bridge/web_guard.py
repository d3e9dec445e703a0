"""Guards in front of the Gradio app: a cap on the bytes of one request body, and no remote URLs on file routes.

Body size. Gradio caps uploaded *files* (`max_file_size`), but nothing capped the JSON body of an API call: a
20 MB body cost the server +4 GB RSS and a 100 MB one got it OOM-killed. `BodyLimit` refuses a body over the cap
with 413 before the app reads it: at once when `Content-Length` says so, else (chunked) as soon as the bytes
received pass the cap. Uploads get their own, larger cap. Passed to FastAPI through Gradio's `app_kwargs`, so
it wraps every route.

Remote files. `/gradio_api/file=<http(s) URL>` once redirected anywhere (an open redirect, CVE-2024-4940,
gradio #13593); the Gradio locked here (6.31) instead fetches the URL itself, through safehttpx (public
addresses only), and streams it back, which makes any Gradio app a fetch proxy for public URLs. This app
never serves a remote file, so `NoRemoteFiles` refuses such requests with 403.
"""

from __future__ import annotations

import re

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
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _REMOTE_FILE.search(scope["path"]):  # the path, already %-decoded
            return await _reply(send, 403, b"this app serves no remote files")
        return await self.app(scope, receive, send)
