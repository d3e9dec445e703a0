"""A content-addressed cache of learned rewrites, so a prompt translated once is never generated again (#15).

Key = sha256(model key, what was asked, the input text). The model key hashes the adapter's weights and
metadata, the base rewriter preset and the dtype it ran in (`model_key`); what was asked is the prompt or
negative prefix, the rewrite format, the token limit and the embedding names the structure check knows.
Only greedy single-candidate rewrites are cached: they are a function of their input. (Sampled candidates
draw from a generator shared across a batch, so they depend on their neighbours.)

One SQLite file (WAL, so a migrate and a server can share it), `<sd-bridge cache>/translations.sqlite` by
default. Values are JSON [text, fallback, unfinished].

The cache can only save work, never break a run: a file that is damaged, foreign, read-only, on a full disk,
or not a file at all gives one `cache-unusable` warning, and the run goes on without the cache, generating
what it would have read, so its output is the same. A value that does not read as [text, bool, bool] is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

FILENAME = "translations.sqlite"
log = logging.getLogger("sd_bridge")


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
        self._lock = threading.Lock()  # one connection shared by the app's worker threads
        self._db = None
        self.problem: str | None = None
        self.hits = self.misses = 0
        try:
            if self.path.exists() and not self.path.is_file():  # a FIFO would block sqlite's first read
                raise OSError(f"{self.path} is not a regular file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")  # a file that is not a database fails here
            self._db.execute("CREATE TABLE IF NOT EXISTS rewrites (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("SELECT key, value FROM rewrites LIMIT 1").fetchall()  # a foreign table of that name
            self._db.commit()
        except (sqlite3.Error, OSError) as err:
            self._give_up(err)

    @property
    def usable(self) -> bool:
        return self._db is not None

    def _give_up(self, err: Exception) -> None:
        """From now on, no cache: warn once, close the file, and let every text be generated."""
        self.problem = f"{type(err).__name__}: {err}"
        log.warning("warning [cache-unusable] translation cache %s cannot be used (%s); going on without it "
                    "(the same output, nothing cached; --translation-cache off skips it)", self.path, self.problem)
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    @staticmethod
    def key(model: str, settings: list, text: str) -> str:
        return hashlib.sha256(json.dumps([model, settings, text], ensure_ascii=False).encode("utf-8")).hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, bool, bool]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[str, bool, bool]] = {}
        with self._lock:
            try:
                for lo in range(0, len(keys) if self.usable else 0, 500):  # 500: SQLite's bound-parameter limit
                    part = keys[lo : lo + 500]
                    rows = self._db.execute(f"SELECT key, value FROM rewrites WHERE key IN "
                                            f"({','.join('?' * len(part))})", part).fetchall()
                    found.update((k, v) for k, v in ((k, _value(v)) for k, v in rows) if v is not None)
            except (sqlite3.Error, OSError) as err:
                self._give_up(err)
                found = {}
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, tuple[str, bool, bool]]) -> None:
        with self._lock:
            if not self.usable:
                return
            try:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO rewrites (key, value) VALUES (?, ?)",
                                         [(k, json.dumps(list(v), ensure_ascii=False)) for k, v in items.items()])
            except (sqlite3.Error, OSError) as err:  # read-only, disk full, damaged
                self._give_up(err)

    def __len__(self) -> int:
        with self._lock:
            if not self.usable:
                return 0
            try:
                return self._db.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]
            except sqlite3.Error as err:
                self._give_up(err)
                return 0


def _value(raw) -> tuple[str, bool, bool] | None:
    """A stored value as (text, fallback, unfinished), or None when it is not one."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, bool) for v in value[1:])):
        return value[0], value[1], value[2]
    return None
