"""Reading prompt records from the places users keep them.

Formats (chosen by extension, or `fmt`): text (one prompt per line), CSV/TSV (a header row; column flags
for prompt and negative prompt), JSONL, Parquet, a folder of PNGs carrying A1111 "parameters" metadata,
and a Hugging Face dataset name (loaded with `datasets`, which fails clearly offline). Errors name the
file, the line and the problem: a missing file, an unknown column, undecodable bytes, no prompts at all.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bridge.files import bad_bytes, text_lines

FORMATS = ("auto", "txt", "csv", "tsv", "jsonl", "parquet", "png", "hf")
_EXT = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class SourceError(ValueError):
    """A prompt source that cannot be read; the message names the file/line and the problem."""


@dataclass
class PromptRecord:
    prompt: str
    negative_prompt: str | None = None
    params: dict = field(default_factory=dict)  # A1111 generation parameters, when the source has them
    origin: str = ""  # "file:line" (or dataset row) it came from


def detect_format(spec: str) -> str:
    path = Path(spec).expanduser()
    if path.is_dir():
        return "png"
    if path.suffix.lower() in _EXT:
        return _EXT[path.suffix.lower()]
    if path.exists():
        raise SourceError(f"{spec}: unknown prompt file type {path.suffix!r}; use .txt, .csv, .tsv, .jsonl, "
                          f".parquet, a folder of PNGs, or pass --format")
    if "/" in spec and not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
        return "hf"  # owner/name: a Hugging Face dataset
    raise SourceError(f"prompt source not found: {spec}")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Decoded lines (any line end, UTF-8 or UTF-16) with 1-based numbers; bad bytes are an error naming the
    line."""
    for number, line in text_lines(path):
        if (reason := bad_bytes(line)) is not None:
            raise SourceError(f"{path}:{number}: {reason}")
        yield number, line


def _check_column(name: str | None, columns: list[str], where: str, required: bool) -> str | None:
    if name is None:
        return None
    if name not in columns:
        if required:
            raise SourceError(f"{where}: no column {name!r} (columns: {', '.join(map(str, columns)) or 'none'})")
        return None
    return name


def read_records(spec: str, prompt_column: str = "prompt", negative_column: str | None = None, fmt: str = "auto",
                 split: str = "train") -> Iterator[PromptRecord]:
    """Prompt records from `spec`, in source order. `negative_column=None` uses a `negative_prompt` column
    when there is one; a named column must exist."""
    fmt = detect_format(spec) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(spec).expanduser()
    if fmt != "hf" and not path.exists():
        raise SourceError(f"prompt source not found: {spec}")
    neg_required = negative_column is not None
    neg = negative_column or "negative_prompt"
    if fmt == "txt":
        for number, line in _lines(path):
            text = line.rstrip("\r\n")
            yield PromptRecord(text, None, {}, f"{path}:{number}")
    elif fmt in ("csv", "tsv"):
        yield from _read_csv(path, "\t" if fmt == "tsv" else ",", prompt_column, neg, neg_required)
    elif fmt == "jsonl":
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{number}: expected a JSON object per line")
            if prompt_column not in row:
                raise SourceError(f"{path}:{number}: no key {prompt_column!r} (keys: {', '.join(row)})")
            if neg_required and neg not in row:
                raise SourceError(f"{path}:{number}: no key {neg!r} (keys: {', '.join(row)})")
            params = row.get("parameters") if isinstance(row.get("parameters"), dict) else {}
            yield PromptRecord(_as_text(row[prompt_column]), _as_text(row.get(neg)), params, f"{path}:{number}")
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        pc = _check_column(prompt_column, table.column_names, str(path), True)
        nc = _check_column(neg, table.column_names, str(path), neg_required)
        prompts = table.column(pc).to_pylist()
        negatives = table.column(nc).to_pylist() if nc else [None] * len(prompts)
        for number, (p, n) in enumerate(zip(prompts, negatives)):
            yield PromptRecord(_as_text(p), _as_text(n), {}, f"{path}:row{number}")
    elif fmt == "png":
        yield from _read_pngs(path)
    else:
        yield from _read_hf(spec, split, prompt_column, neg, neg_required)


def _as_text(value) -> str | None:
    return None if value is None else str(value)


def _read_csv(path: Path, delimiter: str, prompt_column: str, neg: str, neg_required: bool):
    # Streamed: csv joins quoted multi-line fields across the decoded lines itself.
    reader = csv.DictReader((line for _, line in _lines(path)), delimiter=delimiter)
    columns = reader.fieldnames or []
    if not columns:
        raise SourceError(f"{path}: empty file (no header row)")
    pc = _check_column(prompt_column, columns, str(path), True)
    nc = _check_column(neg, columns, str(path), neg_required)
    try:
        for row in reader:
            if None in row:
                raise SourceError(f"{path}:{reader.line_num}: more fields than the header has")
            yield PromptRecord(row[pc] or "", row.get(nc) if nc else None, {}, f"{path}:{reader.line_num}")
    except csv.Error as err:
        raise SourceError(f"{path}:{reader.line_num}: broken CSV ({err})") from None


def _read_pngs(folder: Path):
    from PIL import Image

    from bridge.syntax.infotext import parse_infotext

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise SourceError(f"{folder}: no .png files")
    for file in files:
        try:
            with Image.open(file) as im:
                text = im.info.get("parameters")
        except OSError as err:
            raise SourceError(f"{file}: not a readable PNG ({err})") from None
        if not text:
            continue  # a PNG without A1111 metadata carries no prompt
        info = parse_infotext(text)
        yield PromptRecord(info.prompt, info.negative_prompt, info.params, str(file))


def _read_hf(name: str, split: str, prompt_column: str, neg: str, neg_required: bool):
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown dataset, unknown split
        raise SourceError(f"Hugging Face dataset {name!r} (split {split!r}) could not be loaded: "
                          f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Offline? It must be "
                          f"in the datasets cache (HF_HOME), or export it to a .jsonl/.parquet file") from None
    pc = _check_column(prompt_column, ds.column_names, name, True)
    nc = _check_column(neg, ds.column_names, name, neg_required)
    for number, row in enumerate(ds):
        yield PromptRecord(_as_text(row[pc]), _as_text(row[nc]) if nc else None, {}, f"{name}[{split}]:{number}")
