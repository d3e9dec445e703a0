"""A lossless parser and serializer for AUTOMATIC1111 / ComfyUI / NovelAI prompt syntax.

`parse(s)` returns a `Prompt` whose tree serializes back to exactly `s`, for every string: every node keeps
the raw text it was read from. Malformed input never raises; it is read the way A1111 reads it
(unbalanced brackets close implicitly at the end of their scope) and yields a `PromptWarning` with its
position. The translatable text leaves can be replaced and the tree serialized with every weight, tag,
escape and separator intact.

Constructs (A1111 `modules/prompt_parser.py` and DESIGN §3):
  (x) ×1.1 · [x] ÷1.1 · (x:1.3) explicit weight · nesting multiplies · escapes \\( \\) \\[ \\] \\\\
  BREAK (new 75-token chunk) · AND with an optional trailing `:w` per part (composable diffusion)
  [from:to:when] · [to:when] · [from::when] prompt editing (when < 1: fraction of steps, else a step)
  [a|b] alternation · <lora:name:w> <lyco:...> <hypernet:name:w> extra networks (any <type:args> kept)
  textual-inversion embeddings: known bare names (user-extendable), ComfyUI `embedding:name`
  wildcards __name__ and dynamic-prompt variants {a|b} · braces {x}: text, as A1111 reads them, or with
  `syntax="novelai"` NovelAI emphasis ×1.05 each (the source dialect is the user's choice: A1111 itself
  never weights braces, so weighting them by default changed what an A1111 prompt means)

A1111 quirks we follow: `:` and `|` are plain text outside the brackets that give them meaning; a
stray `)` or `]` is plain text; `AND` splits the prompt only at the top level (A1111 splits the raw text,
so an AND inside brackets is almost always a mistake and is warned about); a part's trailing `:w`
is its composable-diffusion weight even without AND.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Union

from bridge.syntax.a1111 import DEFAULT_STEPS, and_parts, edit_step, part_weight_start, schedule_parses, strip_networks

ROUND, SQUARE, BRACE = 1.1, 1 / 1.1, 1.05  # A1111 attention multipliers; NovelAI braces

# Embeddings seen in the SD1.5 prompt corpus (../shared/prompts/a1111.jsonl negatives) and the usual
# suspects; users extend the list (MigrationPolicy.known_embeddings / --embedding).
DEFAULT_EMBEDDINGS = (
    "EasyNegative", "EasyNegativeV2", "ng_deepnegative_v1_75t", "verybadimagenegative_v1.3",
    "verybadimagenegative_v1.2-6400", "verybadimagenegative_v1.1-6400", "badhandv4", "badhandsv5-neg",
    "bad-hands-5", "bad_prompt", "bad_prompt_version2", "bad_prompt_v2", "bad-artist", "bad-artist-anime",
    "bad-image-v2-39000", "negative_hand-neg", "FastNegativeV2", "BadDream", "UnrealisticDream",
    "realisticvision-negative-embedding", "Asian-Less-neg", "AuroraNegative", "CyberRealistic_Negative",
    "epiCNegative", "easynegative_v2",
)

_TEXT = re.compile(r"[^\\()\[\]{}<:|]+")
# `:1.2)` closing a round bracket. Stricter than A1111's `[.\d]+`, which crashes A1111 on "1.2.3".
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)")
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
# A1111 `re_extra_net` is `<(\w+):([^>]+)>`. Matched with it from every `<`, `[^>]+` scanned to the next `>`
# each time ("<a:" x 20,000 took 5.6 s), so the parser matches the head here and finds that `>` once.
_NETWORK_HEAD = re.compile(r"<\w+:")
# A1111 `re_weight` for the tail of an AND part; found from the last `:` (searching it from every space of a
# long run was quadratic).
_AND_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*$")
# A1111's re_attention reads `\(` `\)` `\[` `\]` `\\` as the escaped character, and any other backslash as a
# token of its own that `parse_prompt_attention` turns into "" (text[1:]): `fate\/stay night` encodes as
# `fate/stay night`, a trailing `\` as nothing.
_UNESCAPE = re.compile(r"\\([()\[\]\\]?)")

_ESCAPE = re.compile(r"([()\[\]\\])")
COMFY_EMBEDDING = re.compile(r"\bembedding:([\w.\-]+)")  # ComfyUI's spelling of an embedding; group 1: its name
# Extra-network kinds that carry SD1 weights (A1111 lora/lyco/hypernet; older LyCORIS tags locon/loha).
NETWORK_KINDS = ("lora", "lyco", "locon", "loha", "hypernet")


@dataclass(frozen=True)
class PromptWarning:
    """Something the user should know about a prompt: a machine code, a sentence, and where (char span)."""

    code: str
    message: str
    span: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "span": list(self.span) if self.span else None}


# ----------------------------------------------------------------------------------------------- nodes
@dataclass(slots=True)
class Text:
    """A translatable leaf. `raw` is exactly as written (escapes included); `value` is the unescaped text."""

    raw: str
    start: int = 0

    @property
    def value(self) -> str:
        return _UNESCAPE.sub(r"\1", self.raw) if "\\" in self.raw else self.raw

    @value.setter
    def value(self, text: str) -> None:
        if text != self.value:  # an unchanged leaf keeps its spelling: `fate\/stay` is not rewritten `fate\\/stay`
            self.raw = escape(text)


@dataclass(slots=True)
class Break:
    raw: str = "BREAK"
    start: int = 0


@dataclass(slots=True)
class And:
    raw: str = "AND"
    start: int = 0


@dataclass(slots=True)
class AndWeight:
    """The `:w` that ends an AND part (its composable-diffusion weight)."""

    raw: str
    start: int = 0

    @property
    def weight(self) -> float:
        return float(_AND_WEIGHT.match(self.raw).group(1))


@dataclass(slots=True)
class Network:
    """An extra-network tag `<kind:name[:args]>` (lora, lyco, hypernet, or any other kind, kept)."""

    raw: str
    start: int = 0

    @property
    def kind(self) -> str:
        return self.raw[1:].split(":", 1)[0]

    @property
    def args(self) -> list[str]:
        return self.raw[1:-1].split(":")[1:]

    @property
    def name(self) -> str:
        return self.args[0].strip()

    @property
    def weight(self) -> float | None:
        """The first numeric argument after the name (A1111: te multiplier), or None."""
        for arg in self.args[1:]:
            arg = arg.split("=", 1)[-1].strip()
            if _NUMBER.fullmatch(arg):
                return float(arg)
        return 1.0 if len(self.args) == 1 else None


@dataclass(slots=True)
class Embedding:
    """A textual-inversion embedding: a known bare name, or ComfyUI `embedding:name`."""

    raw: str
    start: int = 0

    @property
    def name(self) -> str:
        return self.raw.split(":", 1)[1] if self.raw.lower().startswith("embedding:") else self.raw


@dataclass(slots=True)
class Wildcard:
    """A wildcard `__name__` (dynamic prompts / A1111 wildcards extension); kept verbatim."""

    raw: str
    start: int = 0


@dataclass(slots=True)
class Stray:
    """A closing bracket with nothing to close: plain text to A1111, kept verbatim."""

    raw: str
    start: int = 0


@dataclass(slots=True)
class Emphasis:
    """`(x)`, `[x]`, `(x:w)` or NovelAI `{x}`. `close` is ")", "]", "}", the raw ":w)" text, or "" when the
    bracket was never closed (A1111 closes it at the end of its scope)."""

    open: str
    children: list
    close: str
    start: int = 0

    @property
    def factor(self) -> float:
        if self.open == "[":
            return SQUARE
        if self.open == "{":
            return BRACE
        if len(self.close) > 1:
            return float(_WEIGHT_CLOSE.match(self.close).group(1))
        return ROUND

    @property
    def explicit(self) -> bool:
        return len(self.close) > 1


@dataclass(slots=True)
class Edit:
    """Prompt editing `[from:to:when]` (parts = [from, to]), `[to:when]` ([to]), `[from::when]` ([from, []])."""

    parts: list
    when_raw: str
    start: int = 0

    @property
    def when(self) -> float:
        return float(self.when_raw)


@dataclass(slots=True)
class Alternation:
    """`[a|b|...]`: A1111 alternates the options every step."""

    options: list
    start: int = 0


@dataclass(slots=True)
class Variants:
    """Dynamic-prompts variants `{a|b|...}`: a template, resolved by the user's tooling; kept verbatim."""

    options: list
    close: str
    start: int = 0


Node = Union[Text, Break, And, AndWeight, Network, Embedding, Wildcard, Stray, Emphasis, Edit, Alternation, Variants]


@dataclass
class Prompt:
    """A parsed prompt: the source string, its node tree and the parse warnings."""

    source: str
    nodes: list
    warnings: list[PromptWarning] = field(default_factory=list)

    def serialize(self) -> str:
        return serialize(self.nodes)

    def copy(self) -> "Prompt":
        return Prompt(self.source, copy.deepcopy(self.nodes), list(self.warnings))


# ----------------------------------------------------------------------------------------- serialize
def _emit(nodes: Iterable, out: list[str]) -> None:
    for node in nodes:
        t = type(node)
        if t is Emphasis:
            out.append(node.open)
            _emit(node.children, out)
            out.append(node.close)
        elif t is Edit:
            out.append("[")
            for part in node.parts:
                _emit(part, out)
                out.append(":")
            out.append(node.when_raw)
            out.append("]")
        elif t is Alternation or t is Variants:
            out.append("[" if t is Alternation else "{")
            for i, option in enumerate(node.options):
                if i:
                    out.append("|")
                _emit(option, out)
            out.append("]" if t is Alternation else node.close)
        else:
            out.append(node.raw)


def serialize(nodes: Iterable) -> str:
    out: list[str] = []
    _emit(nodes, out)
    return "".join(out)


def escape(text: str) -> str:
    """Escape A1111's bracket characters so `text` stays plain text inside a prompt."""
    return _ESCAPE.sub(r"\\\1", text)


# -------------------------------------------------------------------------------------------- parse
@lru_cache(maxsize=32)
def _splitter(embeddings: frozenset[str]) -> re.Pattern:
    names = "|".join(re.escape(n) for n in sorted(embeddings, key=len, reverse=True))
    parts = [r"\bBREAK\b", r"\bAND\b", r"__[\w\-./*]+__", COMFY_EMBEDDING.pattern]
    if names:
        parts.append(rf"(?<![\w\-.])(?i:{names})(?![\w\-])")
    # Nothing right after a backslash is a token: the backslash escapes its first character.
    return re.compile(r"(?<!\\)(?:" + "|".join(parts) + ")")


@lru_cache(maxsize=32)
def _name_finder(embeddings: frozenset[str]) -> re.Pattern | None:
    names = "|".join(re.escape(n) for n in sorted(embeddings, key=len, reverse=True))
    return re.compile(rf"(?<![\w\-.:])(?i:{names})(?![\w\-])") if names else None


def embedding_name_spans(text: str, embeddings: Iterable[str]) -> list[tuple[int, int]]:
    """(start, end) of each known bare embedding name in plain (unescaped) text, as the parser finds them
    (not one already written `embedding:name`)."""
    finder = _name_finder(frozenset(embeddings))
    return [m.span() for m in finder.finditer(text)] if finder else []


# Brackets nest at most this deep; a deeper opening bracket is read as text (with a warning). The parser
# and every walk over the tree recurse per level, and real prompts nest a handful deep: without a bound,
# ~400 nested `[` or a long run of `(` raised RecursionError.
MAX_DEPTH = 64


SYNTAXES = ("a1111", "novelai")


class _Parser:
    def __init__(self, s: str, embeddings: frozenset[str], negative: bool = False, syntax: str = "a1111"):
        self.s = s
        self.negative = negative
        self.braces = syntax == "novelai"
        self.n = len(s)
        self.split = _splitter(embeddings)
        self.warnings: list[PromptWarning] = []
        self.depth = 0
        self.next_gt = -1  # the first `>` at or after the last network head looked at

    def warn(self, code: str, message: str, start: int, end: int | None = None) -> None:
        self.warnings.append(PromptWarning(code, message, (start, end if end is not None else start + 1)))

    def text(self, out: list, a: int, b: int, top: bool) -> None:
        """Append s[a:b] as Text, split around BREAK, AND, wildcards and embeddings."""
        if a >= b:
            return
        s = self.s
        pos = a
        for m in self.split.finditer(s, a, b):
            tok = m.group()
            if tok == "AND" and self.negative:
                continue  # A1111 splits only the prompt at AND; in a negative it is a word
            if tok == "AND" and not top:
                self.warn("and-in-brackets", "AND inside brackets: A1111 splits the whole prompt there, "
                          "breaking the brackets; kept as text", m.start(), m.end())
                continue
            if m.start() > pos:
                out.append(Text(s[pos : m.start()], pos))
            if tok == "BREAK":
                out.append(Break(tok, m.start()))
            elif tok == "AND":
                out.append(And(tok, m.start()))
            elif tok.startswith("__"):
                out.append(Wildcard(tok, m.start()))
            else:
                out.append(Embedding(tok, m.start()))
            pos = m.end()
        if pos < b:
            out.append(Text(s[pos:b], pos))

    def seq(self, i: int, ctx: str, opens: frozenset[str]) -> tuple[list, int, str | None]:
        """Parse until this context's closer or separator; return (nodes, index, what stopped it)."""
        s, n, top = self.s, self.n, ctx == "top"
        out: list = []
        mark = i  # start of the pending text run
        while i < n:
            m = _TEXT.match(s, i)
            if m:
                i = m.end()
                continue
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if c == ":":
                if ctx == "[" or (ctx == "(" and _WEIGHT_CLOSE.match(s, i)):
                    self.text(out, mark, i, top)
                    return out, i, ":"
                i += 1
                continue
            if c == "|":
                if ctx in ("[", "{"):
                    self.text(out, mark, i, top)
                    return out, i, "|"
                i += 1
                continue
            if c in ")]}":
                opener = "([{"[")]}".index(c)]
                self.text(out, mark, i, top)
                if ctx == opener:
                    return out, i, c
                if opener in opens:  # closes an enclosing bracket: this one closes implicitly
                    return out, i, None
                self.warn("stray-bracket", f"{c!r} closes nothing; A1111 reads it as text", i)
                out.append(Stray(c, i))
                i += 1
                mark = i
                continue
            if c == "<":
                end = self.network_end(i)
                if end is not None and self.negative:
                    self.warn("network-in-negative", "A1111 applies extra networks only from the prompt; in a "
                              "negative prompt this tag is read as text", i, end)
                    i = end
                    continue
                if end is None:
                    i += 1
                    continue
                self.text(out, mark, i, top)
                out.append(Network(s[i:end], i))
                i = mark = end
                continue
            # c is an opening bracket
            if self.depth >= MAX_DEPTH:
                if not any(w.code == "nesting-too-deep" for w in self.warnings):
                    self.warn("nesting-too-deep", f"brackets nest deeper than {MAX_DEPTH}; deeper ones are read "
                              "as text", i)
                i += 1
                continue
            self.text(out, mark, i, top)
            self.depth += 1
            node, i = (self.round if c == "(" else self.square if c == "[" else self.brace)(i, opens)
            self.depth -= 1
            if type(node) is Emphasis and node.open == "{" and not self.braces:
                # A1111 syntax: `{x}` is the text "{", x, "}" (what is inside still parses).
                _append_text(out, Text("{", node.start))
                for child in node.children:
                    _append_text(out, child) if type(child) is Text else out.append(child)
                if node.close:
                    _append_text(out, Text(node.close, i - 1))
            else:
                out.append(node)
            mark = i
        self.text(out, mark, i, top)
        return out, i, None

    def network_end(self, i: int) -> int | None:
        """End of the extra-network tag `<type:args>` at i (A1111 `re_extra_net`), or None. `[^>]+` cannot
        pass a `>`, so the tag ends at the first `>` after its head: found once per `>`, not once per `<`."""
        m = _NETWORK_HEAD.match(self.s, i)
        if not m:
            return None
        if self.next_gt < m.end():
            found = self.s.find(">", m.end())
            self.next_gt = found if found >= 0 else self.n
        return self.next_gt + 1 if m.end() < self.next_gt < self.n else None

    def _unclosed(self, c: str, start: int) -> None:
        self.warn("unclosed-bracket", f"{c!r} is never closed; A1111 closes it at the end of its scope", start)

    def round(self, i: int, opens: frozenset[str]) -> tuple[Node, int]:
        children, j, stop = self.seq(i + 1, "(", opens | {"("})
        if stop == ")":
            return Emphasis("(", children, ")", i), j + 1
        if stop == ":":
            m = _WEIGHT_CLOSE.match(self.s, j)
            return Emphasis("(", children, m.group(), i), m.end()
        self._unclosed("(", i)
        return Emphasis("(", children, "", i), j

    def _segments(self, i: int, ctx: str, opens: frozenset[str]) -> tuple[list, list, int, str | None]:
        segments, seps, pos = [], [], i + 1
        while True:
            children, j, stop = self.seq(pos, ctx, opens | {ctx})
            segments.append(children)
            if stop in (":", "|"):
                seps.append(stop)
                pos = j + 1
                continue
            return segments, seps, j, stop

    @staticmethod
    def _flatten(segments: list, seps: list, offsets: list[int]) -> list:
        """Segments joined back with their separators as text (when the brackets mean plain emphasis)."""
        out: list = []
        for k, seg in enumerate(segments):
            if k:
                _append_text(out, Text(seps[k - 1], offsets[k - 1]))
            for node in seg:
                if type(node) is Text:
                    _append_text(out, node)
                else:
                    out.append(node)
        return out

    def square(self, i: int, opens: frozenset[str]) -> tuple[Node, int]:
        segments, seps, j, stop = self._segments(i, "[", opens)
        closed = stop == "]"
        if closed and seps:
            if all(sep == "|" for sep in seps):
                return Alternation(segments, i), j + 1
            last = segments[-1]
            when = last[0].raw if len(last) == 1 and type(last[0]) is Text else None
            if all(sep == ":" for sep in seps) and len(seps) <= 2 and when is not None and _NUMBER.fullmatch(when):
                return Edit(segments[:-1], when, i), j + 1
        offsets = self._separator_offsets(i, segments, seps)
        children = self._flatten(segments, seps, offsets)
        if not closed:
            self._unclosed("[", i)
            return Emphasis("[", children, "", i), j
        return Emphasis("[", children, "]", i), j + 1

    def brace(self, i: int, opens: frozenset[str]) -> tuple[Node, int]:
        segments, seps, j, stop = self._segments(i, "{", opens)
        closed = stop == "}"
        if not closed and (self.braces or seps):
            self._unclosed("{", i)
        if seps:
            return Variants(segments, "}" if closed else "", i), j + 1 if closed else j
        return Emphasis("{", segments[0], "}" if closed else "", i), j + 1 if closed else j

    def _separator_offsets(self, i: int, segments: list, seps: list) -> list[int]:
        # Offsets of separators, recovered by walking the serialized segments (only for warnings' spans).
        offsets, pos = [], i + 1
        for seg in segments[:-1]:
            pos += len(serialize(seg))
            offsets.append(pos)
            pos += 1
        return offsets


def _append_text(out: list, node: Text) -> None:
    if out and type(out[-1]) is Text:
        out[-1] = Text(out[-1].raw + node.raw, out[-1].start)
    else:
        out.append(node)


def _split_and_weights(nodes: list) -> list:
    """Give each top-level AND part's trailing `:w` its own node (A1111 `re_weight`)."""
    out: list = []
    part_end = {k for k, node in enumerate(nodes) if type(node) is And} | {len(nodes)}
    for k, node in enumerate(nodes):
        if k + 1 in part_end and type(node) is Text:
            start = part_weight_start(node.raw)
            if start is not None and (start > 0 or k > 0 and type(nodes[k - 1]) is not And):
                if start > 0:
                    out.append(Text(node.raw[:start], node.start))
                out.append(AndWeight(node.raw[start:], node.start + start))
                continue
        out.append(node)
    return out


def parse(s: str, embeddings: Iterable[str] | None = None, negative: bool = False, syntax: str = "a1111") -> Prompt:
    """Parse `s` losslessly. `embeddings`: known textual-inversion names (default: DEFAULT_EMBEDDINGS).
    `syntax`: "a1111" reads `{x}` as text, "novelai" as emphasis ×1.05.

    `negative=True` reads a negative prompt as A1111 does: it takes extra networks only from the prompt and
    splits only the prompt at AND (modules/processing.py, `extra_networks.parse_prompts(prompts)`;
    prompt_parser `get_multicond_prompt_list` for prompts, `get_learned_conditioning` for negatives), so in a
    negative `<lora:x:1>` is text, AND is a word and a trailing `:1.2` is text."""
    if not isinstance(s, str):
        raise TypeError(f"prompt must be a str, got {type(s).__name__}")
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown prompt syntax {syntax!r}; choose one of {', '.join(SYNTAXES)}")
    names = frozenset(DEFAULT_EMBEDDINGS if embeddings is None else embeddings)
    parser = _Parser(s, names, negative, syntax)
    nodes, _, _ = parser.seq(0, "top", frozenset())
    if not negative and any(type(n) is Text and ":" in n.raw for n in nodes):
        nodes = _split_and_weights(nodes)
    if any(type(n) in (Edit, Alternation) for n, _, _ in walk(nodes)):
        parts = [s] if negative else [text for text, _ in and_parts(strip_networks(s))]
        if not all(schedule_parses(part) for part in parts):
            parser.warn("editing-ignored", "A1111 cannot parse this prompt's editing (a `|` outside [a|b], or a "
                        "backslash before nothing): it reads every [a:b:n] and [a|b] here as [emphasis] at all "
                        "steps", 0, len(s))
    return Prompt(s, nodes, parser.warnings)


# ------------------------------------------------------------------------------------------ queries
def walk(nodes: Iterable, weight: float = 1.0, translatable: bool = True) -> Iterator[tuple[Node, float, bool]]:
    """Every node with its effective weight (nesting multiplies) and whether its text may be translated."""
    for node in nodes:
        yield node, weight, translatable
        t = type(node)
        if t is Emphasis:
            yield from walk(node.children, weight * node.factor, translatable)
        elif t is Edit:
            for part in node.parts:
                yield from walk(part, weight, translatable)
        elif t is Alternation:
            for option in node.options:
                yield from walk(option, weight, translatable)
        elif t is Variants:
            for option in node.options:
                yield from walk(option, weight, False)


def leaves(nodes: Iterable) -> list[Text]:
    """The translatable text leaves, in order (not inside dynamic-prompt variants)."""
    return [node for node, _, ok in walk(nodes) if ok and type(node) is Text]


def replace_leaves(prompt: Prompt, new_values: Callable[[str], str] | list[str]) -> str:
    """Serialize `prompt` with its leaves' text replaced (by a function of the old text, or a list in
    leaf order); structure, weights, tags and escapes are kept. The input prompt is not modified."""
    work = prompt.copy()
    targets = leaves(work.nodes)
    if isinstance(new_values, list):
        if len(new_values) != len(targets):
            raise ValueError(f"{len(targets)} leaves but {len(new_values)} replacements")
        values = new_values
    else:
        values = [new_values(leaf.value) for leaf in targets]
    for leaf, value in zip(targets, values):
        leaf.value = value
    return work.serialize()


def weighted_spans(nodes: Iterable) -> list[dict]:
    """`{text, weight}` for every text leaf or embedding under emphasis, with its effective weight."""
    return [{"text": node.value if type(node) is Text else node.raw, "weight": round(w, 6)}
            for node, w, _ in walk(nodes) if type(node) in (Text, Embedding) and abs(w - 1.0) > 1e-9
            and (type(node) is not Text or node.raw.strip())]


def networks(nodes: Iterable) -> list[dict]:
    return [{"type": n.kind, "name": n.name, "weight": n.weight} for n, _, _ in walk(nodes) if type(n) is Network]


def embeddings(nodes: Iterable) -> list[str]:
    return [n.name for n, _, _ in walk(nodes) if type(n) is Embedding]


def segments(nodes: Iterable, weight: float = 1.0, out: list | None = None, step: int | None = None,
             steps: int = DEFAULT_STEPS) -> list:
    """What the text encoder reads at sampling step `step` of `steps` (default: the last), in order: (text,
    effective weight) pairs, with the Break and And nodes themselves marking chunk and part boundaries.
    Extra-network tags and AND weights are removed before encoding; editing and alternation follow A1111's
    schedule (`bridge.syntax.a1111`: `[from:to:when]` reads `from` up to step `edit_step(when)`, `[a|b]` reads option
    (step - 1) mod n), so this agrees with the encoder at that step; embeddings, wildcards and stray brackets
    are read as their text. Malformed brackets are read as this tree holds them: `bridge.syntax.a1111.attention` is
    A1111's own reading."""
    out = [] if out is None else out
    step = steps if step is None else step
    for node in nodes:
        t = type(node)
        if t is Text:
            out.append((node.value, weight))
        elif t in (Embedding, Wildcard, Stray):
            out.append((node.raw, weight))
        elif t is Variants:
            out.append((serialize([node]), weight))
        elif t in (Break, And):
            out.append(node)
        elif t is Emphasis:
            segments(node.children, weight * node.factor, out, step, steps)
        elif t is Edit:
            if step <= edit_step(node.when_raw.strip(), steps):
                segments(node.parts[0] if len(node.parts) == 2 else [], weight, out, step, steps)
            else:
                segments(node.parts[-1], weight, out, step, steps)
        elif t is Alternation:
            segments(node.options[(step - 1) % len(node.options)], weight, out, step, steps)
    return out


def chunk_texts(nodes: Iterable) -> list[list[str]]:
    """Per AND part, the texts of its BREAK chunks (brackets removed, networks dropped)."""
    parts: list[list[str]] = [[""]]
    for seg in segments(nodes):
        if type(seg) is And:
            parts.append([""])
        elif type(seg) is Break:
            parts[-1].append("")
        else:
            parts[-1][-1] += seg[0]
    return parts


def plain_text(nodes: Iterable) -> str:
    """What the text encoder reads (final step; first alternative), without weights, tags or BREAK/AND."""
    return " ".join(" ".join(c.split()) for part in chunk_texts(nodes) for c in part).strip()
