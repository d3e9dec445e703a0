"""`sd-bridge serve`: the Gradio app (app.py) on 127.0.0.1, behind the request guards of bridge/web_guard.py.

    1. check   the port is free, before anything is built or printed
    2. build   the app over one set of models (loaded on first use), in a Gradio cache of its own
    3. launch  every request body capped, no remote file fetched; SIGTERM shuts down as Ctrl-C does
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

from app import CSS, UPLOAD_WINDOW, ServeConfig, build_app

__all__ = ["ServeConfig", "run_serve", "check_port"]


def run_serve(cfg: ServeConfig, log=print, block: bool = True):
    check_port(cfg.host, cfg.port)  # before anything is built or printed: no URL for a server that never ran
    from starlette.middleware import Middleware

    from bridge.web_guard import JSON_BODY_BYTES, BodyLimit, NoRemoteFiles, UploadBudget

    _own_gradio_cache()
    demo = build_app(cfg)
    # Every request body is capped: JSON calls at 1 MiB, uploads at --max-file-size (Gradio caps only files); each
    # client uploads at most --upload-budget per UPLOAD_WINDOW; no remote URL is served or read as a file input
    # (bridge/web_guard.py says why). The first guard is the outermost: bodies are capped before they are read.
    upload_bytes = cfg.upload_bytes()
    guards = [Middleware(BodyLimit, max_bytes=JSON_BODY_BYTES, upload_bytes=upload_bytes),
              Middleware(UploadBudget, budget=cfg.upload_bytes(cfg.upload_budget), window=UPLOAD_WINDOW,
                         upload_bytes=upload_bytes),
              Middleware(NoRemoteFiles)]
    try:
        # show_error=False: an unforeseen error reaches the client as "Error", not as its message, which for
        # Gradio's own errors names server paths (its InvalidPathError quotes the working directory). The
        # app's own messages are gr.Error and always shown (app._user_errors).
        demo.launch(server_name=cfg.host, server_port=cfg.port, share=False, max_file_size=upload_bytes,
                    prevent_thread_lock=True, show_error=False, quiet=True, css=CSS, app_kwargs={"middleware": guards})
    except OSError as err:  # taken in the moment since the check; Gradio's own message points at an env var
        raise ValueError(f"cannot serve on {cfg.host}:{cfg.port} ({err}); choose another with --port") from None
    log(f"sd-bridge app on http://{cfg.host}:{cfg.port} (share off)")
    if not block:
        return demo
    # SIGTERM (systemd, docker stop, kill) shuts down as Ctrl-C does: Gradio deletes the files it cached and
    # atexit removes the Batch work files. By default SIGTERM ended the process with both left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    demo.block_thread()
    return 0


def _own_gradio_cache() -> Path:
    """Gradio caches uploads and results under GRADIO_TEMP_DIR; this server gets a fresh directory there,
    removed at exit. Gradio's own shutdown deletes the files it tracked but leaves their directories, and
    gr.File(type="filepath") leaves one empty temp file per upload (gradio 6.x) that nothing tracks: after 20
    Batch uploads and a shutdown, 20 such files and 3 directories stayed behind."""
    cache = Path(tempfile.mkdtemp(prefix="sd-bridge-serve-", dir=os.environ.get("GRADIO_TEMP_DIR")))
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read by Gradio when it builds the app and its components
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    return cache


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def check_port(host: str, port: int) -> None:
    """A clear one-line error when the port is taken, instead of Gradio's traceback."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f"port {port} on {host} is in use or not available ({err.strerror}); choose another "
                             "with --port") from None
