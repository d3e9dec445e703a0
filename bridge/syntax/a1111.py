"""How AUTOMATIC1111 reads a prompt string, step by step, as its text encoder sees it.

`bridge.syntax.prompt` keeps a lossless tree for editing prompts; this module answers a different question: what
does A1111 encode at sampling step k? A1111 answers it with four passes over text, each on the output of
the one before, and malformed input comes out of them in ways no single tree can hold (`(a [b) c]` weights
"b" 1.0 and "c" 0.91, because round and square brackets are two independent stacks). So the encoder, the
token counter and `inspect` read prompts here, pass by pass (A1111 1.6+, modules/processing.py and
modules/prompt_parser.py):

  1. extra-network tags `<kind:args>` are removed from the prompt (never from the negative);
  2. the prompt is split at `\\bAND\\b` in the raw text (even inside brackets), and each part's trailing
     `:w` is its composable-diffusion weight: `1girl, (masterpiece:1.4` is part "1girl, (masterpiece" at 1.4;
  3. each part's prompt-editing / alternation schedule, from A1111's schedule grammar (parsed here by
     `_Schedule`): a number with a "." is a fraction of the steps, an integer a step, both capped at the step
     count, so `[b:1.5]` never switches; `[a|b]` changes every step; a part the grammar cannot parse is one
     text for all steps;
  4. each scheduled text is read for attention: `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` ×w, with round and square
     brackets on separate stacks, unclosed ones closing at the end, BREAK kept as a marker of weight -1 that
     the enclosing brackets multiply too (A1111's bug: `(b BREAK c)` encodes the word "break" at -1.1), and
     equal-weight neighbours merged.

The sampler's k-th model call (from 0) uses the first schedule entry whose end step is >= k
(`reconstruct_cond_batch`), so `[a:b:3]` draws "a" for calls 0-3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

DEFAULT_STEPS = 20  # A1111's default sampling steps: the schedule shown when no step count is given

_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # A1111 extra_networks re_extra_net
_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r":\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*")  # a part's trailing `:w`, from its colon
_ATTENTION = re.compile(r"\\[()\[\]\\]?|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)

# A1111 parses the schedule with a lark Earley grammar (prompt_parser.py `schedule_parser`): stray brackets and
# colons are text at the top level; `[a:b:n]`, `[b:n]`, `[a::n]` edit; `[a|b|...]` alternates; `(a)`, `(a:b)`,
# `[a]` nest; a `|` outside an alternation, or a backslash before nothing, fails the whole parse. Earley took
# 0.36 s per bracketed prompt of the corpus (a 10,000-row migration would spend an hour on it), so
# `_Schedule` parses the same language by recursive descent: at the top level a bracket that does not close
# into a valid construct is text, as Earley's literal alternative makes it. It equals the grammar run by lark
# on A1111's doctests and the shortest corpus prompts (tests/test_a1111_parity.py) and on all 187 bracketed
# corpus prompts (benchmarks/a1111_parity.py); on random bracket soup about 1% differ, where an edit touches
# a run of stray `]]` or `):` and Earley's ambiguity resolution reads the edit as text.
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")  # lark common.SIGNED_NUMBER
MAX_NESTING = 100  # deeper constructs fail (and read as text at the top level), not the Python stack


class _Fail(Exception):
    pass


class _Schedule:
    """The editing and alternation constructs of one text: (start, end, kind, parts, when) spans, nested."""

    def __init__(self, text: str):
        self.s = text
        self.memo: dict[int, tuple | None] = {}

    def top(self) -> list[tuple]:
        s, i, out = self.s, 0, []
        while i < len(s):
            c = s[i]
            if c in "([":
                node = self.construct(i, 0)
                if node is not None:
                    out.append(node)
                    i = node[1]
                    continue
            elif c == "|":
                raise _Fail
            elif c == "\\":
                i = self.escape(i)
                continue
            i += 1
        return out

    def escape(self, i: int) -> int:
        if i + 1 >= len(self.s) or self.s[i + 1] == "\n":  # plain's `\\.` needs a character after it
            raise _Fail
        return i + 2

    def construct(self, i: int, depth: int) -> tuple | None:
        if i not in self.memo:
            try:
                self.memo[i] = self._construct(i, depth)
            except _Fail:
                self.memo[i] = None
        return self.memo[i]

    def _construct(self, i: int, depth: int) -> tuple:
        if depth > MAX_NESTING:
            raise _Fail
        close = ")" if self.s[i] == "(" else "]"
        parts, seps, j = [], [], i + 1
        while True:
            items, end = self.prompt(j, depth)
            parts.append((items, j, end))
            j = end
            if j >= len(self.s):
                raise _Fail
            c = self.s[j]
            if c == close:
                break
            if c == ")" or c == "]":
                raise _Fail
            seps.append(c)
            j += 1
        end = j + 1
        nested = [node for items, _, _ in parts for node in items]
        if close == ")":
            if seps not in ([], [":"]):
                raise _Fail
            return (i, end, "text", nested, None)
        if not seps:
            return (i, end, "text", nested, None)
        if set(seps) == {"|"}:
            return (i, end, "alternate", parts, None)
        when_items, when_start, when_end = parts[-1]
        when = self.s[when_start:when_end]
        if set(seps) != {":"} or len(seps) > 2 or when_items or not _NUMBER.fullmatch(when):
            raise _Fail
        return (i, end, "scheduled", parts[:-1], when.strip())

    def prompt(self, i: int, depth: int) -> tuple[list, int]:
        """Constructs inside one prompt, up to the `:`, `|` or bracket that ends it."""
        s, out = self.s, []
        while i < len(s):
            c = s[i]
            if c in "([":
                node = self.construct(i, depth + 1)
                if node is None:
                    raise _Fail
                out.append(node)
                i = node[1]
            elif c in ")]:|":
                break
            elif c == "\\":
                i = self.escape(i)
            else:
                i += 1
        return out, i


Run = tuple[str, float]  # (text, weight)
# The marker `attention` reads BREAK as. Brackets multiply it, and A1111 then encodes the word "break" at that
# weight (its bug, kept): only the marker at exactly -1 is a chunk break.
BREAK: Run = ("BREAK", -1.0)


@dataclass(frozen=True)
class Part:
    """One AND part: its composable-diffusion weight and its schedule, [(end step, text at those steps)]."""

    weight: float
    schedule: list[tuple[int, str]]

    def text_at(self, call: int) -> str:
        """The text the sampler's `call`-th model call (0-based) encodes (A1111 `reconstruct_cond_batch`)."""
        return next((text for end, text in self.schedule if call <= end), self.schedule[-1][1])


def strip_networks(prompt: str) -> str:
    """Remove extra-network tags, as A1111 does to the prompt (not the negative) before anything else."""
    return _NETWORK.sub("", prompt)


def network_tags(prompt: str) -> list[str]:
    """The extra-network tags `strip_networks` removes, as written."""
    return [m.group(0) for m in _NETWORK.finditer(prompt)]


def part_weight_start(part: str) -> int | None:
    r"""Where an AND part's trailing `:w` starts (with the whitespace before its colon), or None. A1111's
    re_weight, `^((?:\s|.)*?)(?:\s*:\s*(number))?\s*$`, backtracks over the whole part from every position;
    the tail from the last colon must be the number, so anchoring there gives the same split in linear time."""
    colon = part.rfind(":")
    if colon < 0 or not _PART_WEIGHT.fullmatch(part, colon):
        return None
    start = colon
    while start > 0 and part[start - 1].isspace():
        start -= 1
    return start


def and_parts(prompt: str) -> list[tuple[str, float]]:
    """Split at AND in the raw text; each part's trailing `:w` is its weight (default 1.0)."""
    out = []
    for part in _AND.split(prompt):
        start = part_weight_start(part)
        if start is None:
            out.append((part.rstrip(), 1.0))  # re_weight's lazy text leaves the trailing whitespace out
        else:
            # The number as re_weight's group takes it: the spaces around it are any Unicode whitespace
            # (`\x1f` too), which float() would refuse.
            out.append((part[:start], float(_PART_WEIGHT.fullmatch(part, part.rfind(":")).group(1))))
    return out


def edit_step(when: str, steps: int) -> int:
    """The last step of a `[from:to:when]` edit's `from` text: a number with "." is a fraction of `steps`, an
    integer a step; capped at `steps` (A1111 1.6+ without hires)."""
    value = float(when)
    return min(steps, int(value * steps if "." in when else value))


@lru_cache(maxsize=4096)
def prompt_schedule(text: str, steps: int = DEFAULT_STEPS) -> list[tuple[int, str]]:
    """[(end step, text)] for one AND part over `steps` sampling steps (A1111
    `get_learned_conditioning_prompt_schedules`): editing and alternation resolved, brackets for emphasis kept."""
    nodes = _constructs(text) if "[" in text else None  # no editing or alternation without a `[`
    if nodes is None:
        return [(steps, text)]
    ends = {steps}
    _collect_ends(nodes, steps, ends)
    return [(end, _text_at(text, 0, len(text), nodes, end, steps)) for end in sorted(ends)]


@lru_cache(maxsize=4096)
def _constructs(text: str) -> list | None:
    """`_Schedule(text).top()`, or None where A1111's parse fails; once per text for the parser's warning, the
    schedule at every step count and every call of the encoder."""
    try:
        return _Schedule(text).top()
    except _Fail:
        return None


def schedule_parses(text: str) -> bool:
    """False when A1111 cannot parse `text`'s schedule (a `|` outside an alternation, a backslash before nothing
    or a newline): it then reads every `[a:b:n]` and `[a|b]` in it as plain emphasis, for every step."""
    return _constructs(text) is not None


def _collect_ends(nodes: list, steps: int, ends: set[int]) -> None:
    for start, end, kind, parts, when in nodes:
        if kind == "scheduled" and edit_step(when, steps) >= 1:
            ends.add(edit_step(when, steps))
        elif kind == "alternate":
            ends.update(range(1, steps + 1))
        for part in parts:
            _collect_ends(part[0] if kind != "text" else [part], steps, ends)


def _text_at(s: str, a: int, b: int, nodes: list, step: int, steps: int) -> str:
    """s[a:b] at `step`, with each editing / alternation construct in `nodes` replaced by its active part."""
    out, pos = [], a
    for start, end, kind, parts, when in nodes:
        out.append(s[pos:start])
        pos = end
        if kind == "text":  # emphasis: kept with its brackets, its nested constructs resolved
            out.append(_text_at(s, start, end, parts, step, steps))
            continue
        if kind == "scheduled":
            if step <= edit_step(when, steps):
                part = parts[0] if len(parts) == 2 else None  # `[to:when]` has no `from`: nothing before
            else:
                part = parts[-1]
        else:
            part = parts[(step - 1) % len(parts)]
        if part is not None:
            items, part_start, part_end = part
            out.append(_text_at(s, part_start, part_end, items, step, steps))
    out.append(s[pos:b])
    return "".join(out)


def attention(text: str) -> list[Run]:
    """(text, weight) runs of one scheduled text (A1111 `parse_prompt_attention`)."""
    res: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for run in res[start:]:
            run[1] *= factor

    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(res))
        elif token == "[":
            squares.append(len(res))
        elif weight is not None and rounds:
            multiply(rounds.pop(), _float(weight))
        elif token == ")" and rounds:
            multiply(rounds.pop(), 1.1)
        elif token == "]" and squares:
            multiply(squares.pop(), 1 / 1.1)
        else:
            for k, piece in enumerate(_BREAK.split(token)):
                if k:
                    res.append(list(BREAK))
                res.append([piece, 1.0])
    for start in rounds:
        multiply(start, 1.1)
    for start in squares:
        multiply(start, 1 / 1.1)
    return merge_runs(res or [("", 1.0)])


def merge_runs(runs: Iterable[Run]) -> list[Run]:
    """Equal-weight neighbours joined into one run (the last step of A1111's `parse_prompt_attention`)."""
    merged: list[list] = []
    for text, w in runs:
        if merged and merged[-1][1] == w:
            merged[-1][0] += text
        else:
            merged.append([text, w])
    return [(t, w) for t, w in merged]


def _float(number: str) -> float:
    # A1111's `[.\d]+` also matches "1.2.3", on which its float() raises and the generation fails; we read
    # the longest number it starts with instead of failing a whole migration.
    m = re.match(r"[+-]?(?:\d+\.?\d*|\.\d+)", number)
    return float(m.group()) if m else 1.0


def read(text: str, negative: bool = False, steps: int = DEFAULT_STEPS) -> list[Part]:
    """A prompt as A1111 reads it: its AND parts, each with its weight and schedule. A negative prompt keeps its
    tags and is one part (A1111 applies extra networks and AND only to the prompt)."""
    if negative:
        return [Part(1.0, prompt_schedule(text, steps))]
    return [Part(w, prompt_schedule(t, steps)) for t, w in and_parts(strip_networks(text))]


def schedule(text: str, steps: int = DEFAULT_STEPS, negative: bool = False) -> list[dict]:
    """The public view of `read` (and `inspect`'s "schedule"): per AND part, its weight and the text it encodes
    until each step, [{"until_step", "text"}] over `steps` steps."""
    return [{"weight": p.weight, "steps": [{"until_step": end, "text": t} for end, t in p.schedule]}
            for p in read(text, negative, steps)]


def runs_at(text: str, call: int, negative: bool = False, steps: int = DEFAULT_STEPS) -> list[Run | None]:
    """What the encoder reads at the sampler's `call`-th model call: (text, weight) runs, None between AND parts
    (each part is encoded on its own), ("BREAK", -1.0) at a BREAK."""
    out: list = []
    for k, part in enumerate(read(text, negative, steps)):
        if k:
            out.append(None)
        out.extend(attention(part.text_at(call)))
    return out


def calls_with_distinct_text(text: str, negative: bool = False, steps: int = DEFAULT_STEPS) -> list[int]:
    """The model calls (0-based) at which the encoded text can change: 0 and each schedule end + 1."""
    ends = {end for part in read(text, negative, steps) for end, _ in part.schedule}
    return sorted({0} | {end + 1 for end in ends if end + 1 < steps})
