"""Cleaning a prompt list before it costs renders: normalise, drop empties, dedupe, filter, deny-list.

Every dropped prompt is counted under its reason, so a summary can say what was dropped and why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bridge.io.sources import PromptRecord
from bridge.syntax.tokens import token_budget


def normalize_whitespace(text: str) -> str:
    """One space between words, none at the ends (newlines are whitespace to CLIP)."""
    return " ".join(text.split())


def load_deny_list(path: Path) -> re.Pattern | None:
    """One term per line (# comments allowed); matched case-insensitively as whole words."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"deny-list file not found: {path}")
    terms = [t.strip() for t in Path(path).read_text(encoding="utf-8").splitlines()]
    terms = [t for t in terms if t and not t.startswith("#")]
    if not terms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)


@dataclass
class CleanReport:
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


def clean_records(records: Iterable[PromptRecord], min_tokens: int = 1, max_tokens: int | None = None,
                  deny: re.Pattern | None = None, ignore_negative: bool = False) -> tuple[list[PromptRecord], CleanReport]:
    """Normalised, deduplicated records in source order, and the report of what was dropped and why.

    Token counts are CLIP tokens of what the encoder reads (weights, tags and BREAK removed), summed over
    chunks. Duplicates are judged on the normalised prompt (first occurrence kept).
    """
    report = CleanReport()
    seen: set[str] = set()
    candidates: list[PromptRecord] = []
    for rec in records:
        report.read += 1
        prompt = normalize_whitespace(rec.prompt or "")
        if not prompt:
            report.dropped["empty"] += 1
            continue
        if prompt in seen:
            report.dropped["duplicate"] += 1
            continue
        seen.add(prompt)
        if deny is not None and deny.search(prompt):
            report.dropped["deny_list"] += 1
            continue
        negative = None if ignore_negative or rec.negative_prompt is None else normalize_whitespace(rec.negative_prompt)
        candidates.append(PromptRecord(prompt, negative or None, rec.params, rec.origin))
    kept = []
    for rec in candidates:
        counts, _ = token_budget(rec.prompt, truncates=True)
        total = sum(counts)
        if total < min_tokens:
            report.dropped["too_few_tokens"] += 1
        elif max_tokens is not None and total > max_tokens:
            report.dropped["too_many_tokens"] += 1
        else:
            kept.append(rec)
    report.kept = len(kept)
    return kept, report





def read_prompt_file(spec: str, prompt_column: str = "prompt", negative_column: str | None = None,
                     limit: int | None = None) -> list[PromptRecord]:
    """The cleaned records of a prompt file (the first `limit`), as eval and sweep read held-out prompts; an
    empty file is an error that names it."""
    from bridge.io.sources import read_records

    records, _ = clean_records(read_records(spec, prompt_column, negative_column))
    if not records:
        raise ValueError(f"no prompts in {spec}")
    return records[:limit] if limit else records
