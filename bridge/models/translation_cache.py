"""A content-addressed cache of learned rewrites, so a prompt translated once is never generated again (#15).

Key = sha256(model key, what was asked, the input text). The model key hashes the adapter's weights and
metadata, the base rewriter preset and the dtype it ran in (`model_key`); what was asked is the prompt or
negative prefix, the rewrite format, the token limit and the embedding names the structure check knows.
Only greedy single-candidate rewrites are cached: they are a function of their input. (Sampled candidates
draw from a generator shared across a batch, so they depend on their neighbours.)

One SQLite file (WAL, so a migrate and a server can share it), `<sd-bridge cache>/translations.sqlite` by
default. Values are JSON [text, fallback, unfinished].
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

FILENAME = "translations.sqlite"


def model_key(adapter: Path, base, dtype: str) -> str:
    """What decides a rewrite besides its input: the adapter's files and the base model it loads onto."""
    h = hashlib.sha256()
    for name in ("adapter_model.safetensors", "adapter_config.json", "sd_bridge_adapter.json"):
        path = Path(adapter) / name
        if path.is_file():
            h.update(name.encode() + b"\0")
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    h.update(json.dumps([base.name, base.revision, base.hub_id, base.local_path, str(dtype)]).encode())
    return h.hexdigest()


def resolve(setting: str | Path | None) -> Path | None:
    """"auto" -> the default file in the sd-bridge cache directory; "off" or None -> no cache; else a path."""
    if setting is None or str(setting) == "off":
        return None
    if str(setting) == "auto":
        from bridge.models.loading import cache_dir

        return cache_dir() / FILENAME
    return Path(setting)


class TranslationCache:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection shared by the app's worker threads
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rewrites (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()
        self.hits = self.misses = 0

    @staticmethod
    def key(model: str, settings: list, text: str) -> str:
        return hashlib.sha256(json.dumps([model, settings, text], ensure_ascii=False).encode("utf-8")).hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, bool, bool]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[str, bool, bool]] = {}
        with self._lock:
            for lo in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                part = keys[lo : lo + 500]
                rows = self._db.execute(f"SELECT key, value FROM rewrites WHERE key IN ({','.join('?' * len(part))})",
                                        part).fetchall()
                found.update((k, tuple(json.loads(v))) for k, v in rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, tuple[str, bool, bool]]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO rewrites (key, value) VALUES (?, ?)",
                                 [(k, json.dumps(list(v), ensure_ascii=False)) for k, v in items.items()])

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]
