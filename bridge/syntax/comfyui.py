"""ComfyUI's prompt dialect: how ComfyUI reads a prompt's weights, and conversion to and from A1111's.

ComfyUI's CLIPTextEncode reads a prompt with comfy/sd1_clip.py (`escape_important`, `parse_parentheses`,
`token_weights`, `SDTokenizer.tokenize_with_weights`), which differs from A1111 in ways that change weights:

- only round brackets weigh: `(x)` x1.1, nesting multiplies, but `(x:w)` *sets* the weight to w, so
  `((a:1.2))` is 1.2 (A1111: 1.32);
- `[x]`, `{x}`, BREAK, AND, `[a:b:n]`, `[a|b]` and `<lora:x:1>` are plain text;
- the only escapes are `\\(` and `\\)`; any other backslash is text (`\\[` is a backslash and a bracket);
- brackets are counted, not matched: a group is what lies between a `(` at depth 0 and the `)` that brings the
  depth back to 0. An unclosed `(` makes its group text unless the text happens to end in `)`, and a stray `)`
  at depth 0 makes every bracket after it text until the count is back to 0;
- an embedding is a space-separated word that starts with `embedding:` (`embedding:name,` also tries `name`).

So an A1111 library needs converting before ComfyUI draws what A1111 drew. `from_a1111` writes A1111's own
reading (`bridge.syntax.a1111`, the same passes the encoder uses) as ComfyUI text: every run of equal weight once,
as `(text:w)` with its absolute weight, brackets escaped, embeddings as `embedding:name`. What ComfyUI cannot
say in a prompt (BREAK, AND, prompt editing, alternation, extra-network tags) is warned about. The result is
read back with ComfyUI's rules, and a conversion whose weights differ says so. `to_a1111` is the reverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from bridge.syntax import a1111
from bridge.syntax.a1111 import BREAK, Run, merge_runs
from bridge.syntax.prompt import DEFAULT_EMBEDDINGS, PromptWarning, embedding_name_spans, escape

EMBEDDING = "embedding:"  # ComfyUI SDTokenizer.embedding_identifier
# ComfyUI `escape_important`: `\)` then `\(` become two-character placeholders, so offsets do not move.
_OPEN, _CLOSE = "\0\2", "\0\1"
_COMFY_ESCAPE = re.compile(r"([()])")
_WORD_EMBEDDING = re.compile(r"(?<!\S)embedding:")  # the prefix where it starts a word


@dataclass
class Conversion:
    """A prompt written in another dialect, with what could not be carried over."""

    prompt: str
    warnings: list[PromptWarning] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading
def _groups(s: str) -> list[str]:
    """ComfyUI `parse_parentheses`: top-level pieces, each a `(…)` group or the text between groups."""
    out, current, depth = [], "", 0
    for c in s:
        if c == "(":
            if depth == 0 and current:
                out.append(current)
                current = ""
            current += c
            depth += 1
        elif c == ")":
            depth -= 1
            current += c
            if depth == 0:
                out.append(current)
                current = ""
        else:
            current += c
    if current:
        out.append(current)
    return out


def _comfy_float(text: str) -> float | None:
    try:
        return float(text)  # Python's float, as ComfyUI calls it: " 1.2 ", "1e1" and "inf" are weights too
    except ValueError:
        return None


def _weights(s: str, weight: float, out: list[Run]) -> None:
    """ComfyUI `token_weights` on placeholder-escaped text."""
    for piece in _groups(s):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, w = piece[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0 and (value := _comfy_float(inner[colon + 1:])) is not None:
                inner, w = inner[:colon], value
            _weights(inner, w, out)
        else:
            out.append((piece, weight))


def attention(text: str) -> list[Run]:
    """(text, weight) runs as ComfyUI reads `text`, escapes resolved, equal-weight neighbours merged."""
    out: list[Run] = []
    _weights(text.replace("\\)", _CLOSE).replace("\\(", _OPEN), 1.0, out)
    return merge_runs((piece.replace(_CLOSE, ")").replace(_OPEN, "("), w) for piece, w in out) or [("", 1.0)]


def char_weights(runs: Iterable[Run]) -> list[tuple[str, float]]:
    """Each non-space character with its weight, `embedding:` prefixes dropped: two readings agree on a prompt
    when these are equal (spaces carry no tokens, and where the words split does not change a weight)."""
    out = []
    for text, w in runs:
        if (text, w) == BREAK:
            continue
        out += [(c, w) for c in _WORD_EMBEDDING.sub("", text).lower() if not c.isspace()]  # CLIP lower-cases
    return out


def same_weights(a: Iterable[Run], b: Iterable[Run], tolerance: float = 1e-5) -> bool:
    x, y = char_weights(a), char_weights(b)
    return len(x) == len(y) and all(c == d and abs(v - w) <= tolerance * max(1.0, abs(v))
                                    for (c, v), (d, w) in zip(x, y))


# ---------------------------------------------------------------------------------------- A1111 -> ComfyUI
def _number(w: float) -> str:
    return f"{w:.6g}"  # 1.1 * 1.1 = 1.2100000000000002 is written 1.21


def _comfy_text(text: str, names: frozenset[str]) -> str:
    """Plain text for ComfyUI: brackets escaped, embeddings spelled `embedding:name` as a word of their own
    (ComfyUI splits words at spaces and newlines only; a run always starts a word)."""
    out, pos = [], 0
    for start, end in embedding_name_spans(text, names):
        out.append(_COMFY_ESCAPE.sub(r"\\\1", text[pos:start]))
        if start > 0 and text[start - 1] not in " \n":
            out.append(" ")
        out.append(EMBEDDING + text[start:end])
        rest = re.match(r"[^ \n]*", text[end:]).group()
        if rest.strip(","):  # ComfyUI tries `name,` without its commas, but not `name.` or `name)`
            out.append(" ")
        pos = end
    out.append(_COMFY_ESCAPE.sub(r"\\\1", text[pos:]))
    return "".join(out)


def _emit_comfy(runs: list[Run], names: frozenset[str]) -> str:
    out: list[str] = []
    for k, (text, w) in enumerate(runs):
        body = _comfy_text(text, names)
        follows_group = k + 1 < len(runs) and runs[k + 1][1] != 1.0 and runs[k + 1][0].strip()
        if text.strip() and (w != 1.0 or (body.endswith("\\") and follows_group)):
            # A backslash before the next group's `(` would escape it: such text gets its own group, at w.
            out.append(f"({body}:{_number(w)})")
        else:
            out.append(body)
    return "".join(out)


def _flatten(text: str, negative: bool, steps: int, warnings: list[PromptWarning]) -> list[Run]:
    """A1111's reading as one list of runs, with what ComfyUI cannot express turned into warnings."""
    parts = a1111.read(text, negative, steps)
    if len(parts) > 1:
        warnings.append(PromptWarning("comfyui-and", f"AND: ComfyUI combines {len(parts)} prompts with "
                                      "Conditioning (Combine) nodes, not in the text; the parts are joined "
                                      "with commas and their weights dropped"))
    elif parts[0].weight != 1.0:
        warnings.append(PromptWarning("comfyui-and", f"the trailing `:{parts[0].weight:g}` is A1111's "
                                      "composable-diffusion weight (it scales the guidance); ComfyUI has no such "
                                      "weight in the text, so it is dropped"))
    if any(len(p.schedule) > 1 for p in parts):
        warnings.append(PromptWarning("comfyui-editing", "prompt editing or alternation: ComfyUI's text encoder "
                                      f"has no schedule; the text of the last of {steps} steps is kept"))
    runs: list[Run] = []
    for k, part in enumerate(parts):
        text = part.schedule[-1][1]
        if k:
            runs.append(("," if text[:1].isspace() else ", ", 1.0))
        runs += a1111.attention(text)
    if BREAK in runs:
        warnings.append(PromptWarning("comfyui-break", "BREAK: ComfyUI has no BREAK in the text (join chunks "
                                      "with a Conditioning (Concat) node); it is dropped"))
        runs = [(" ", 1.0) if run == BREAK else run for run in runs]
    # Spaces carry no tokens: no weight to keep. Weights are written to 6 digits, so runs whose weights
    # differ by rounding (1.1 and 1.1 * 1.1 / 1.1) are one group, as ComfyUI will read them.
    return merge_runs((t, float(_number(w)) if t.strip() else 1.0) for t, w in runs)


def from_a1111(text: str, negative: bool = False, steps: int = a1111.DEFAULT_STEPS,
               embeddings: Iterable[str] | None = None) -> Conversion:
    """`text`, written for A1111, rewritten for ComfyUI with the same weight on every character (see module
    docstring). `negative`: read as A1111 reads a negative (tags are text there, and there is no AND)."""
    names = frozenset(DEFAULT_EMBEDDINGS if embeddings is None else embeddings)
    warnings: list[PromptWarning] = []
    if not negative:
        tags = a1111.network_tags(text)
        if tags:
            warnings.append(PromptWarning("comfyui-networks", f"{', '.join(tags)}: ComfyUI loads LoRAs and "
                                          "hypernetworks with loader nodes, not from the prompt; removed"))
    runs = _flatten(text, negative, steps, warnings)
    out = _emit_comfy(runs, names)
    if not same_weights(attention(out), runs):
        warnings.append(PromptWarning("comfyui-inexact", "ComfyUI reads the converted prompt with different "
                                      "weights from A1111's reading of the original"))
    return Conversion(out, warnings)


# ---------------------------------------------------------------------------------------- ComfyUI -> A1111
_A1111_WORDS = re.compile(r"\b(BREAK|AND)\b")


def to_a1111(text: str, negative: bool = False) -> Conversion:
    """`text`, written for ComfyUI, rewritten for A1111 with the same weights: each run once, as `(text:w)`,
    A1111's brackets escaped. `BREAK`/`AND` are ComfyUI words, so they are lower-cased (CLIP lower-cases text,
    so the tokens are the same) and A1111 does not split there; `embedding:name` is kept as written."""
    runs = attention(text)
    out: list[str] = []
    for k, (t, w) in enumerate(runs):
        body = escape(_A1111_WORDS.sub(lambda m: m.group(0).lower(), t))
        last = k == len(runs) - 1
        if t.strip() and (w != 1.0 or (last and not negative and a1111.part_weight_start(body) is not None)):
            out.append(f"({body}:{_number(w)})")  # a trailing `:number` would be A1111's AND weight: bracket it
        else:
            out.append(body)
    prompt = "".join(out)
    warnings = []
    parts = a1111.read(prompt, negative)
    if len(parts) != 1 or len(parts[0].schedule) != 1 or not same_weights(a1111.attention(parts[0].schedule[0][1]),
                                                                         runs):
        warnings.append(PromptWarning("a1111-inexact", "A1111 reads the converted prompt with different weights "
                                      "from ComfyUI's reading of the original (a `<kind:args>` tag in a prompt "
                                      "is an extra network to A1111)"))
    return Conversion(prompt, warnings)


__all__ = ["Conversion", "attention", "char_weights", "from_a1111", "same_weights", "to_a1111"]
