"""`sd-bridge translate "PROMPT" [--negative N] [--adapter DIR] [--json]`; prompts from stdin when none is given.

Results go to stdout, one line per prompt: the translation, and with `--negative` the translated negative after
a tab (TSV), or one JSON object per prompt with `--json`. Warnings, extra candidates and token counts go to
stderr, each prefixed with its input line when prompts come from stdin.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bridge.syntax.policy import MigrationPolicy


@dataclass
class TranslateConfig(MigrationPolicy):
    """Translate prompts for the target model (one argument, or one prompt per stdin line)."""

    prompt: str | None = field(default=None, metadata={"help": "the prompt (default: read one per line from stdin)",
                                                        "positional": "?"})
    negative: str | None = field(default=None, metadata={"help": "negative prompt (with a single prompt)"})
    adapter: Path | None = field(default=None, metadata={"help": "adapter directory from `sd-bridge train`, or a "
                                                                  "shipped adapter's name (toy); none: the syntax "
                                                                  "strategy (default: toy for --target toy-sd2, "
                                                                  "else the syntax strategy)"})
    target: str | None = field(default=None, metadata={"help": "target preset (default: the adapter's, else sd2-base)"})
    candidates: int = field(default=1, metadata={"help": "candidates per prompt (sampled; needs an adapter)"})
    seed: int = field(default=0, metadata={"help": "seed for sampled candidates"})
    device: str = field(default="cpu", metadata={"help": "device for the rewriter"})
    batch_size: int = field(default=32, metadata={"help": "leaves per generation batch"})
    translation_cache: str = field(default="auto", metadata={
        "help": "file of adapter rewrites kept across runs (auto: translations.sqlite in the sd-bridge cache "
                "directory; off: none)"})
    json: bool = field(default=False, metadata={"help": "one JSON object per prompt (JSON lines) instead of "
                                                                "TSV"})

    def __post_init__(self):
        super().__post_init__()
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if self.negative is not None and self.prompt is None:
            raise ValueError("--negative goes with a PROMPT argument; for stdin input use `sd-bridge migrate`")


def run_translate(cfg: TranslateConfig, log=print, stdin=None) -> int:
    from bridge.models import presets
    from bridge.translator import Translator

    if cfg.prompt is not None:
        prompts, negatives = [cfg.prompt], [cfg.negative]
    else:
        stream = stdin or sys.stdin
        if stream.isatty():
            raise ValueError("give a PROMPT argument, or pipe prompts in (one per line)")
        prompts = _read_lines(stream)
        negatives = [None] * len(prompts)
    # A toy target translates with the shipped toy adapter unless told otherwise: a learned translation is what
    # a person trying toy prompts came to see (#39).
    adapter = cfg.adapter if cfg.adapter is not None else presets.default_adapter(
        cfg.target and presets.pipeline(cfg.target).name)
    translator = Translator.from_pretrained(adapter, cfg.target, MigrationPolicy.of(cfg), device=cfg.device,
                                            batch_size=cfg.batch_size, cache=cfg.translation_cache)
    results = translator.translate(prompts, negatives, num_candidates=cfg.candidates, sample=cfg.candidates > 1,
                                   seed=cfg.seed)
    for n, r in enumerate(results, 1):
        where = "" if cfg.prompt is not None else f"line {n}: "
        if _SURROGATE.search(r.prompt):
            print(f"warning: {where}bytes that are not UTF-8 are shown as U+FFFD", file=sys.stderr)
        if cfg.json:
            log(_valid(json.dumps(r.to_dict(), ensure_ascii=False)))
        else:
            log(_tsv_line(r, where, with_negative=negatives[n - 1] is not None))
        for c in r.candidates[1:]:
            print(f"{where}candidate: {_valid(c)}", file=sys.stderr)
        for w in r.warnings:  # per line in piped mode too: a script's user reads them on the terminal
            print(f"{where}warning [{w['code']}] {w['message']}", file=sys.stderr)
        if cfg.prompt is not None:
            print(f"tokens per chunk: {r.tokens_before} -> {r.tokens_after} ({r.strategy})", file=sys.stderr)
    return 0


def _tsv_line(r, where: str, with_negative: bool) -> str:
    """The translation, and the negative's after a tab when one was given: one line per prompt, so
    `paste`, `cut -f2` and a line-by-line reader line up with the input. A tab or newline inside a prompt
    would break that, so it is shown as a space, with a warning; `--json` keeps every character."""
    fields = [r.translated_prompt] + ([r.translated_negative_prompt or ""] if with_negative else [])
    if any(_SEPARATOR.search(f) for f in fields):
        print(f"warning: {where}a tab or line break in the translation is shown as a space (--json keeps it)",
              file=sys.stderr)
    return "\t".join(_valid(_SEPARATOR.sub(" ", f)) for f in fields)


_SEPARATOR = re.compile(r"[\t\r\n]")


# Undecodable input bytes are read as lone surrogates (surrogateescape), so one bad byte neither stops the
# read nor, printed as U+FFFD, makes the output invalid UTF-8 (a strict stdout would raise on it).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _read_lines(stream) -> list[str]:
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return [line.rstrip("\r\n") for line in stream]
    return [line.decode("utf-8", "surrogateescape").rstrip("\r\n") for line in raw]


def _valid(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
