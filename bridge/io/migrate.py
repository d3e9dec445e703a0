"""`sd-bridge migrate IN --out OUT`: translate a whole prompt library, streaming, resumable, atomic.

Formats: text (one prompt per line), CSV/TSV (every column and its order kept; values with quotes and
newlines round-trip), JSONL (every key kept), a folder of A1111 infotext `.txt` files, and a folder of
PNGs (their "parameters" metadata; translated infotext is written as sidecar `.txt` files, images are
never touched). Tabular outputs gain `translated_prompt`, `translated_negative_prompt`, `warnings`,
`tokens_before`, `tokens_after` and `strategy`.

A row that cannot be read or translated goes to `OUT.errors.jsonl` with its reason and does not stop the
run. Memory stays flat: rows are read, translated and written in chunks. The output grows in
`OUT.partial`; after each chunk it is flushed and a journal (`OUT.journal`) records how many rows and bytes
are done, so a killed run, rerun with the same arguments, truncates the partial file to the journal and
goes on: no row lost, none duplicated. The final rename is atomic. The input is never overwritten unless
`--in-place`, which keeps a backup. Exit status: 0 all rows migrated, 3 finished with row errors, 2 usage.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from bridge.config import (config_to_dict, first_difference, json_summary_field, log_plan, print_json_summary)
from bridge.files import atomic_write, bad_bytes, file_encoding, sniff_encoding, text_lines
from bridge.syntax.policy import MigrationPolicy, migrate_parameters

# A JSONL row's A1111 generation parameters, as a dict (A1111's infotext keys): written back fitted to the target
# as `translated_parameters`.
PARAMETERS = "parameters"
ADDED = ["translated_prompt", "translated_negative_prompt", "warnings", "tokens_before", "tokens_after", "strategy"]
EXIT_OK, EXIT_USAGE, EXIT_ROW_ERRORS = 0, 2, 3


@dataclass
class MigrateConfig(MigrationPolicy):
    """Translate a prompt library file (or folder) for the target model, resumably."""

    input: Path | None = field(default=None, metadata={"help": "library: .txt, .csv, .tsv, .jsonl, or a folder of "
                                                                "infotext .txt / PNG files", "positional": "?"})
    out: Path | None = field(default=None, metadata={"help": "output file (folder for folder inputs)"})
    format: Literal["auto", "txt", "csv", "tsv", "jsonl", "infotext", "png"] = field(
        default="auto", metadata={"help": "input format (auto: from the extension / folder contents)"})
    prompt_column: str = field(default="prompt", metadata={"help": "column/key of the prompt"})
    negative_column: str | None = field(default=None, metadata={
        "help": "column/key of the negative prompt (default: `negative_prompt` when present)"})
    adapter: Path | None = field(default=None, metadata={"help": "adapter directory, or a shipped adapter's name "
                                                                  "(toy) (default: syntax strategy)"})
    target: str | None = field(default=None, metadata={"help": "target preset (default: the adapter's, else sd2-base)"})
    device: str = field(default="cpu", metadata={"help": "device for the rewriter"})
    translation_cache: str = field(default="auto", metadata={
        "help": "file of adapter rewrites kept across runs (auto: translations.sqlite in the sd-bridge cache "
                "directory; off: none): a prompt translated before by the same adapter is not generated again"})
    chunk_rows: int = field(default=256, metadata={"help": "rows translated and committed together"})
    max_chars: int = field(default=20_000, metadata={"help": "a prompt or negative prompt longer than this is a "
                                                                   "row error"})
    in_place: bool = field(default=False, metadata={"help": "replace the input (a .bak copy is kept)"})
    dry_run: bool = field(default=False, metadata={"help": "read and count rows, write nothing"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "off_help": "no progress bar (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        super().__post_init__()
        if self.input is None:
            raise ValueError("give the library to migrate: sd-bridge migrate IN --out OUT")
        self.input = Path(self.input)
        if self.out is not None:
            self.out = Path(self.out)
        if self.in_place:
            if self.out is not None and self.out.resolve() != self.input.resolve():
                raise ValueError("--in-place writes over the input; do not also give a different --out")
            self.out = self.input
        elif self.out is None and not self.dry_run:
            raise ValueError("--out is required (or --in-place to replace the input, keeping a .bak)")
        elif self.out is not None and self.out.resolve() == self.input.resolve():
            raise ValueError(f"--out is the input {self.input}; use --in-place to overwrite it (a .bak is kept)")
        if self.chunk_rows < 1 or self.max_chars < 1:
            raise ValueError("chunk_rows and max_chars must be >= 1")
        if self.out is not None and not self.in_place:
            derived = {_part(self.out), _errors_path(self.out), _part(_errors_path(self.out)), _journal_path(self.out)}
            if self.input.resolve() in {d.resolve() for d in derived}:
                raise ValueError(f"the input {self.input} is a file this run would write for --out {self.out} "
                                 "(partial output, errors or journal); rename it or choose another --out")


class UsageError(ValueError):
    """The whole input cannot be migrated (missing, empty, no prompt column): exit 2."""


@dataclass
class Row:
    index: int  # data row number, 0-based
    line: int  # first physical line (1-based), or 0
    data: object = None  # the parsed record (dict / str / InfoText)
    prompt: str | None = None
    negative: str | None = None
    error: str | None = None
    raw: str = ""
    skip: str | None = None  # a file with nothing to migrate (a PNG without A1111 metadata): counted, not an error


def detect(cfg: MigrateConfig) -> str:
    path = cfg.input
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    if cfg.format != "auto":
        if path.is_dir() and cfg.format not in ("png", "infotext"):
            raise UsageError(f"{path} is a folder; --format {cfg.format} reads a file (folders: png or infotext)")
        if path.is_file() and cfg.format == "png":
            raise UsageError(f"{path} is a file; --format png reads a folder of PNGs")
        return cfg.format
    if path.is_dir():
        if any(p.suffix.lower() == ".png" for p in path.iterdir()):
            return "png"
        if any(p.suffix.lower() == ".txt" for p in path.iterdir()):
            return "infotext"
        raise UsageError(f"{path}: no .png or .txt files to migrate")
    ext = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if path.suffix.lower() not in ext:
        raise UsageError(f"{path}: unknown library type {path.suffix!r}; use .txt/.csv/.tsv/.jsonl or --format")
    if ext[path.suffix.lower()] == "txt" and is_infotext_file(path):
        return "infotext"
    return ext[path.suffix.lower()]


INFOTEXT_BYTES = 1 << 20


def is_infotext_file(path: Path) -> bool:
    """Whether a .txt file is one A1111 infotext record (A1111's "Save" writes such a file beside each image)
    rather than a prompt per line: small, and its last line, and no other, is a parameters line that starts
    with `Steps:` as A1111 writes it. A library of prompts has no such line; read as one, an infotext's
    `Negative prompt:` and parameters lines were migrated as prompts (issue #43)."""
    from bridge.syntax.infotext import parse_infotext

    if path.stat().st_size > INFOTEXT_BYTES:
        return False
    data = path.read_bytes()
    try:
        text = data.decode(sniff_encoding(data[:4096]))
    except UnicodeDecodeError:
        return False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    steps = [k for k, line in enumerate(lines) if line.startswith("Steps: ")]
    return steps == [len(lines) - 1] and "Steps" in parse_infotext(text).params


# ------------------------------------------------------------------------------------------- readers
def _check(row: Row, max_chars: int) -> Row:
    if row.error is None:
        if not isinstance(row.prompt, str):
            row.error = f"prompt is {type(row.prompt).__name__}, not text"
        elif row.negative is not None and not isinstance(row.negative, str):
            row.error = f"negative prompt is {type(row.negative).__name__}, not text"
        else:
            row.error = bad_bytes(row.prompt, row.negative)
            for what, text in (("prompt", row.prompt), ("negative prompt", row.negative)):
                if row.error is None and text is not None and len(text) > max_chars:
                    row.error = f"{what} has {len(text):,} characters (limit --max-chars {max_chars:,})"
    return row


def read_txt(cfg: MigrateConfig) -> Iterator[Row]:
    for k, (number, line) in enumerate(text_lines(cfg.input)):
        text = line.rstrip("\r\n")
        yield _check(Row(k, number, text, text, None, raw=text[:200]), cfg.max_chars)


def read_jsonl(cfg: MigrateConfig) -> Iterator[Row]:
    neg_key = cfg.negative_column or "negative_prompt"
    for k, (number, line) in enumerate(text_lines(cfg.input)):
        row = Row(k, number, raw=line[:200].rstrip("\n"))
        if not line.strip():
            row.error = "empty line"
        elif reason := bad_bytes(line):
            row.error = reason
        else:
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                row.error = f"not valid JSON ({err.msg} at column {err.colno})"
            except RecursionError:
                row.error = "JSON nested too deeply to read"
            else:
                if not isinstance(data, dict):
                    row.error = "not a JSON object"
                elif unwritable := _unwritable(data):
                    row.error = unwritable
                elif cfg.prompt_column not in data:
                    row.error = f"no key {cfg.prompt_column!r}"
                elif cfg.negative_column is not None and cfg.negative_column not in data:
                    row.error = f"no key {cfg.negative_column!r}"
                else:
                    row.data, row.prompt, row.negative = data, data[cfg.prompt_column], data.get(neg_key)
        yield _check(row, cfg.max_chars)


def _unwritable(data: dict) -> str | None:
    """Why a parsed row could not be written back as UTF-8 JSON, if it could not: a `\\ud800` escape decodes to
    a lone surrogate that no UTF-8 encoder accepts, in whichever key it sits."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as err:
        return f"a value holds a lone surrogate ({err.object[err.start:err.end]!a}), which UTF-8 cannot encode"
    except RecursionError:
        return "JSON nested too deeply to write back"
    return None


def read_csv(cfg: MigrateConfig, delimiter: str) -> Iterator[Row]:
    lines = text_lines(cfg.input)
    counter = {"line": 0}

    def feed():
        for number, line in lines:
            counter["line"] = number
            yield line

    reader = csv.reader(feed(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{cfg.input}: empty file (no header row)") from None
    if cfg.prompt_column not in header:
        raise UsageError(f"{cfg.input}: no column {cfg.prompt_column!r} (columns: {', '.join(header)})")
    neg = cfg.negative_column or "negative_prompt"
    if cfg.negative_column is not None and neg not in header:
        raise UsageError(f"{cfg.input}: no column {neg!r} (columns: {', '.join(header)})")
    clash = [c for c in ADDED if c in header]
    if clash:
        raise UsageError(f"{cfg.input}: already has column(s) {clash}; was it migrated before?")
    yield Row(-1, 1, header)  # the header, for the writer
    pi, ni = header.index(cfg.prompt_column), header.index(neg) if neg in header else None
    k = 0
    while True:
        start = counter["line"] + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield Row(k, start, error=f"broken CSV ({err})")
            k += 1
            continue
        row = Row(k, start, fields, raw=delimiter.join(fields)[:200])
        if reason := bad_bytes(*fields):
            row.error = reason
        elif len(fields) != len(header):
            row.error = f"{len(fields)} fields where the header has {len(header)}"
        else:
            row.prompt, row.negative = fields[pi], fields[ni] if ni is not None else None
        yield _check(row, cfg.max_chars)
        k += 1


def read_files(cfg: MigrateConfig, kind: str) -> Iterator[Row]:
    from bridge.syntax.infotext import parse_infotext

    suffix = ".png" if kind == "png" else ".txt"
    files = [cfg.input] if cfg.input.is_file() else sorted(p for p in cfg.input.iterdir() if p.suffix.lower() == suffix)
    if not files:
        raise UsageError(f"{cfg.input}: no {suffix} files")
    for k, file in enumerate(files):
        row = Row(k, 0, raw=file.name)
        try:
            if not file.is_file():  # a named pipe would block the read forever, a device never end
                row.error = "not a regular file (a named pipe, socket or device)"
            elif kind == "png":
                from PIL import Image

                with Image.open(file) as im:
                    text = im.info.get("parameters")
                if not text:  # an image saved without metadata carries no prompt: nothing to migrate, no failure
                    row.skip = "no A1111 'parameters' metadata"
            else:
                data = file.read_bytes()
                text = data.decode(sniff_encoding(data[:4096]))
        except UnicodeDecodeError as err:
            row.error = f"undecodable bytes at byte {err.start}"
        except OSError as err:
            row.error = f"unreadable: {err}"
        except Exception as err:  # Pillow: a text chunk over its limit (ValueError), a broken PNG (SyntaxError)
            row.error = f"unreadable PNG ({type(err).__name__}: {err})"
        if row.error is None and row.skip is None:
            info = parse_infotext(text)
            row.data, row.prompt, row.negative = (file, info), info.prompt, info.negative_prompt
        yield _check(row, cfg.max_chars) if row.skip is None else row


# ------------------------------------------------------------------------------------------- writers
def _cell(value) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else ("" if value is None else str(value))


def added_values(t) -> dict:
    return {"translated_prompt": t.translated_prompt, "translated_negative_prompt": t.translated_negative_prompt,
            "warnings": [{k: w[k] for k in ("code", "message", "field")} for w in t.warnings],
            "tokens_before": t.tokens_before, "tokens_after": t.tokens_after, "strategy": t.strategy}


class _TextSink:
    """Appends to OUT.partial and OUT.errors.partial; `commit` makes the journal point past what is written."""

    def __init__(self, out: Path, journal: dict | None):
        self.out, self.part, self.err_part = out, _part(out), _part(_errors_path(out))
        resume = journal is not None
        self.fh = open(self.part, "r+b" if resume else "wb")
        self.err = open(self.err_part, "r+b" if resume else "wb")
        if resume:  # drop whatever was written after the last commit
            self.fh.truncate(journal["out_bytes"])
            self.err.truncate(journal["err_bytes"])
            self.fh.seek(journal["out_bytes"])
            self.err.seek(journal["err_bytes"])

    def write(self, text: str) -> None:
        self.fh.write(text.encode("utf-8", errors="surrogateescape"))

    def error(self, row: Row) -> None:
        rec = {"row": row.index, "line": row.line, "error": row.error,
               "raw": row.raw.encode("utf-8", "replace").decode("utf-8")}
        self.err.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))

    def flush(self) -> tuple[int, int]:
        for f in (self.fh, self.err):
            f.flush()
            os.fsync(f.fileno())
        return self.fh.tell(), self.err.tell()

    def close(self) -> None:
        self.fh.close()
        self.err.close()


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def keep_backup(path: Path) -> Path:
    """Copy `path` to the first free of IN.bak, IN.bak.1, IN.bak.2, ...: a backup is never overwritten, so a
    second --in-place run keeps the original in IN.bak and the first run's output in IN.bak.1."""
    backup, n = path.with_name(path.name + ".bak"), 0
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.bak.{n}")
    shutil.copy2(path, backup)
    return backup


def _errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.jsonl")


def _journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


def _run_key(cfg: MigrateConfig, kind: str) -> str:
    st = cfg.input.stat()
    relevant = {k: v for k, v in config_to_dict(cfg).items() if k not in ("progress", "dry_run", "device", "json")}
    return hashlib.sha256(json.dumps([kind, st.st_size, st.st_mtime_ns, relevant], sort_keys=True,
                                     default=str).encode()).hexdigest()


def _rows(cfg: MigrateConfig, kind: str) -> Iterator[Row]:
    if kind == "txt":
        return read_txt(cfg)
    if kind == "jsonl":
        return read_jsonl(cfg)
    if kind in ("csv", "tsv"):
        return read_csv(cfg, "\t" if kind == "tsv" else ",")
    return read_files(cfg, kind)


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _total_rows(cfg: MigrateConfig, kind: str) -> int:
    """Rows the progress bar counts to: files in a folder; lines of a txt/jsonl file (binary lines, as
    `text_lines` reads them); records of a CSV, read by its own reader, because a quoted field may hold line
    breaks (counting lines ended a bar at 5000/8350)."""
    if kind in ("png", "infotext"):
        if cfg.input.is_file():
            return 1
        return sum(1 for p in cfg.input.iterdir() if p.suffix.lower() == (".png" if kind == "png" else ".txt"))
    if kind in ("csv", "tsv"):
        return sum(1 for r in _rows(cfg, kind) if r.index >= 0)
    return sum(1 for _ in text_lines(cfg.input))


def migrate(cfg: MigrateConfig, log) -> int:
    """Migrate one library file or folder; raises UsageError when the whole input cannot be migrated."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from bridge.translator import Translator

    started = time.perf_counter()
    kind = detect(cfg)
    if cfg.input.is_file():
        if cfg.out is not None and not cfg.in_place and cfg.out.is_dir():
            raise UsageError(f"--out {cfg.out} is a directory; a {kind} library is migrated into a file: name one")
        if cfg.input.stat().st_size == 0:
            raise UsageError(f"{cfg.input}: empty file, nothing to migrate")
        if (encoding := file_encoding(cfg.input)).startswith("utf-16"):
            log(f"{cfg.input} is UTF-16 text ({encoding}); the output is written as UTF-8")
        if kind == "infotext" and cfg.format == "auto":
            log(f"reading {cfg.input} as one A1111 infotext record (--format txt reads a prompt per line)")
    # 1. Dry run: read every row, count, write nothing.
    if cfg.dry_run:
        counts = Counter("skipped" if r.skip else "error" if r.error else "ok" for r in _rows(cfg, kind)
                         if r.index >= 0)
        counts = {"input": str(cfg.input), "format": kind, "rows": sum(counts.values()), "readable": counts["ok"],
                  "row_errors": counts["error"], **({"skipped": counts["skipped"]} if kind == "png" else {})}
        log_plan(cfg, log, counts)
        return EXIT_OK
    translator = Translator.from_pretrained(cfg.adapter, cfg.target, MigrationPolicy.of(cfg), device=cfg.device,
                                            cache=cfg.translation_cache)
    with logging_redirect_tqdm():  # library warnings go through the bar instead of landing inside it
        if kind in ("png", "infotext"):
            return _migrate_files(cfg, kind, translator, log, started)
        return _migrate_file(cfg, kind, translator, log, started)


def _progress(cfg: MigrateConfig, kind: str, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=_total_rows(cfg, kind) if cfg.progress else None, initial=done, unit="row", desc="migrate",
                disable=not cfg.progress, dynamic_ncols=True)


def _migrate_file(cfg: MigrateConfig, kind: str, translator, log, started: float) -> int:
    """One library file: streamed in chunks, each committed to the journal, so a rerun resumes."""
    # 2. Resume from the journal when it belongs to this input and these settings.
    out, key = cfg.out, _run_key(cfg, kind)
    jpath = _journal_path(out)
    journal = json.loads(jpath.read_text()) if jpath.exists() else None
    if journal is not None and (journal.get("key") != key or not _part(out).exists()):
        journal = None  # another run's leftovers: start over
    done = journal["rows"] if journal else 0
    errors = journal["errors"] if journal else 0
    warn_counts: Counter = Counter(journal["warnings"] if journal else {})
    sink = _TextSink(out, journal)
    writer = None
    if done:
        log(f"resuming {out}: {done} rows already migrated")
    bar = _progress(cfg, kind, done)
    try:
        rows = _rows(cfg, kind)
        if kind in ("csv", "tsv"):
            header = next(rows)
            writer = csv.writer(_SinkText(sink), delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
            if journal is None:
                writer.writerow(header.data + ADDED)
        for chunk in _chunks(rows, cfg.chunk_rows):
            chunk = [r for r in chunk if r.index >= done]
            if not chunk:
                continue
            # 3. Translate the chunk's good rows in one batch; errors go to the errors file.
            good = [r for r in chunk if r.error is None]
            try:
                results = translator.translate([r.prompt for r in good], [r.negative for r in good])
            except Exception:  # a batch failure: find the failing rows one by one, keep the others
                results = []
                for r in good:
                    try:
                        results.extend(translator.translate([r.prompt], [r.negative]))
                    except Exception as row_err:  # noqa: BLE001 - a row error, reported and skipped
                        r.error = f"translation failed: {type(row_err).__name__}: {row_err}"
                        results.append(None)
            by_index = {r.index: t for r, t in zip(good, results)}
            for r in chunk:
                t = by_index.get(r.index)
                if r.error is not None or t is None:
                    sink.error(r)
                    errors += 1
                    continue
                params = None
                if kind == "jsonl" and isinstance(r.data.get(PARAMETERS), dict):  # fitted as an infotext's are
                    params, param_warnings = migrate_parameters(r.data[PARAMETERS], translator.target, cfg)
                    t = dataclasses.replace(t, warnings=t.warnings + [{**w.to_dict(), "field": PARAMETERS}
                                                                      for w in param_warnings])
                for w in t.warnings:
                    warn_counts[w["code"]] += 1
                _write_row(kind, r, t, sink, writer, params)
            # 4. Commit: data flushed to disk first, then the journal that points past it.
            out_bytes, err_bytes = sink.flush()
            done = chunk[-1].index + 1
            atomic_write(jpath, json.dumps({"key": key, "rows": done, "out_bytes": out_bytes, "err_bytes": err_bytes,
                                            "errors": errors, "warnings": dict(warn_counts)}))
            bar.update(len(chunk))
    finally:
        bar.close()
        sink.close()
    # 5. Finish atomically: backup (in place), rename the partial output, the errors file, drop the journal.
    if cfg.in_place:
        keep_backup(cfg.input)
    os.replace(sink.part, out)
    err_file = _errors_path(out)
    if errors:
        os.replace(sink.err_part, err_file)
    else:
        sink.err_part.unlink(missing_ok=True)
        err_file.unlink(missing_ok=True)
    jpath.unlink(missing_ok=True)
    return _summary(cfg, log, done, errors, warn_counts, translator, out, err_file, started)


class _SinkText:
    """A file-like `write(str)` for csv.writer that appends to the sink."""

    def __init__(self, sink: _TextSink):
        self.sink = sink

    def write(self, text: str) -> int:
        self.sink.write(text)
        return len(text)


def _write_row(kind: str, row: Row, t, sink: _TextSink, writer, params: dict | None = None) -> None:
    values = added_values(t)
    if kind == "txt":
        sink.write(t.translated_prompt.replace("\n", " ") + "\n")
    elif kind == "jsonl":
        extra = {} if params is None else {"translated_parameters": params}
        sink.write(json.dumps({**row.data, **values, **extra}, ensure_ascii=False) + "\n")
    else:
        writer.writerow(list(row.data) + [_cell(values[c]) for c in ADDED])


FOLDER_SETTINGS = "migrate.settings.json"


def _check_folder_settings(cfg: MigrateConfig, kind: str, out: Path) -> None:
    """A folder migration records the settings that decide its files in OUT; a rerun into the same OUT with
    other settings would mix files written under both, so it is refused with the differing setting named."""
    skip = ("progress", "dry_run", "device", "json", "chunk_rows", "in_place", "out", "input")
    now = {"format": kind, **{k: v for k, v in config_to_dict(cfg).items() if k not in skip}}
    path = out / FOLDER_SETTINGS
    if path.is_file() and not cfg.in_place:
        before = json.loads(path.read_text(encoding="utf-8"))
        diff = first_difference(before, now, keys=sorted(set(before) | set(now)))
        if diff is not None:
            key, old, new = diff
            raise UsageError(f"{out} holds files migrated with {key}={old!r}; this run has {key}={new!r}: choose "
                             f"another --out, or delete {out} to start over")
    if not cfg.in_place:
        atomic_write(path, json.dumps(now, indent=2, sort_keys=True, default=str) + "\n")


def _migrate_files(cfg: MigrateConfig, kind: str, translator, log, started: float) -> int:
    """Folders: one sidecar .txt of translated infotext per input file, each written atomically; a rerun
    skips files already written. A single infotext file: its translation, written atomically to --out. The
    generation parameters are fitted to the target (`migrate_parameters`)."""
    from bridge.syntax.infotext import format_infotext

    out, single = cfg.out, cfg.input.is_file()
    if cfg.in_place and kind == "png":
        raise UsageError("--in-place does not apply to a PNG folder: images are never rewritten; give --out")
    if not single:
        out.mkdir(parents=True, exist_ok=True)
        _check_folder_settings(cfg, kind, out)
    target_of = (lambda file: out) if single else (lambda file: out / (file.stem + ".txt"))  # noqa: E731
    errors, skipped, done, warn_counts = [], [], 0, Counter()
    bar = _progress(cfg, kind, 0)
    for chunk in _chunks(read_files(cfg, kind), cfg.chunk_rows):
        # A rerun into a folder --out skips files already written; in place, every file is the input: migrate it
        # again (its backup is kept, as for a single file).
        todo = [r for r in chunk if r.error is None and r.skip is None
                and (cfg.in_place or single or not target_of(Path(r.raw)).exists())]
        results = translator.translate([r.prompt for r in todo], [r.negative for r in todo]) if todo else []
        for r, t in zip(todo, results):
            file, info = r.data
            info.prompt, info.negative_prompt = t.translated_prompt, t.translated_negative_prompt
            info.params, param_warnings = migrate_parameters(info.params, translator.target, cfg)
            for w in t.warnings + [w.to_dict() for w in param_warnings]:
                warn_counts[w["code"]] += 1
            if cfg.in_place:
                keep_backup(file)
            atomic_write(target_of(file), format_infotext(info))
        errors += [r for r in chunk if r.error is not None]
        skipped += [r for r in chunk if r.skip is not None]
        done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    if skipped:
        names = ", ".join(r.raw for r in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        log(f"skipped {len(skipped)} file(s) with nothing to migrate ({skipped[0].skip}): {names}")
    err_file = _errors_path(out) if single else out / "migrate.errors.jsonl"
    if errors:
        err_file.write_text("".join(json.dumps({"row": r.index, "file": r.raw, "error": r.error}) + "\n"
                                    for r in errors), encoding="utf-8")
    return _summary(cfg, log, done - len(skipped), len(errors), warn_counts, translator, out, err_file, started,
                    skipped=len(skipped))


def _summary(cfg, log, rows, errors, warn_counts, translator, out, err_file, started, skipped: int = 0) -> int:
    seconds, strategy, cache = time.perf_counter() - started, translator.strategy, translator.cache
    log(f"migrated {rows - errors}/{rows} rows into {out} in {seconds:.1f}s ({translator.describe})")
    if cache is not None:
        log(f"translation cache {cache.path}: {cache.hits} rewrite(s) read back, {cache.misses} generated")
    if warn_counts:
        log("warnings: " + ", ".join(f"{code} x{n}" for code, n in warn_counts.most_common()))
    if errors:
        log(f"{errors} row(s) failed; reasons in {err_file}")
    print_json_summary(cfg, {"input": str(cfg.input), "output": str(out), "rows": rows, "migrated": rows - errors,
                             "row_errors": errors, "errors_file": str(err_file) if errors else None,
                             **({"skipped": skipped} if skipped else {}),
                             "strategy": strategy, "warnings": dict(warn_counts.most_common()),
                             "seconds": round(seconds, 2),
                             "translation_cache": None if cache is None else {
                                 "path": str(cache.path), "hits": cache.hits, "generated": cache.misses}})
    return EXIT_ROW_ERRORS if errors else EXIT_OK
