"""A1111 PNG-info "parameters" text: parse and write it back.

Layout (A1111 `modules/infotext_utils.py`, `parse_generation_parameters` / `create_infotext`):
    prompt lines...
    Negative prompt: first line of the negative prompt
    more negative lines...
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: abc, Clip skip: 2
The last line holds `Key: value` pairs; a value with `,`, `:` or a newline is JSON-quoted. A last line
with fewer than 3 pairs is not a parameters line (A1111's own rule). Unknown keys are kept, in order.

Read as A1111's `parse_generation_parameters` reads it: every prompt and negative line is stripped (so CRLF
line ends lose their CR); once the negative has begun, any further line's `Negative prompt:` prefix is
stripped too; a key with an empty value is dropped (A1111's `v[0]` raises on it and the pair is skipped);
and `Hypernet: name` (with `Hypernet strength`, default 1.0) becomes a `<hypernet:name:strength>` tag at the
end of the prompt, where the prompt parser and the migration policy see it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# A1111 `re_param_code`, with the key bounded to 64 characters: unbounded, `[\w \-/]+` scanned to the end of a
# long line of words from every position and back (40k characters took 11 s, 80k 43 s). Real keys are a
# few words ("Denoising strength", "ADetailer model 2nd").
_PARAM = re.compile(r'\s*(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
NEGATIVE = "Negative prompt:"


@dataclass
class InfoText:
    prompt: str
    negative_prompt: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) from `Size: WxH`, or None."""
        m = _SIZE.match(self.params.get("Size", ""))
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def clip_skip(self) -> int | None:
        value = self.params.get("Clip skip")
        return int(value) if value and value.strip().isdigit() else None

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "parameters": dict(self.params)}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _quote(value: str) -> str:
    # A1111 `quote()`.
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def parse_infotext(text: str) -> InfoText:
    """Parse A1111 "parameters" text. Never raises: text without a parameters line is all prompt."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):  # the first starts the negative; a repeated prefix is stripped too
            line = line[len(NEGATIVE) :].strip()
            negative = [] if negative is None else negative
        (prompt if negative is None else negative).append(line)
    params = {key.strip(): _unquote(value.strip()) for key, value in _PARAM.findall(last) if value.strip()}
    prompt_text = "\n".join(prompt)
    if "Hypernet" in params:  # A1111 appends the tag to the prompt it pastes; the tag is then the one record
        hypernet, strength = params.pop("Hypernet"), params.pop("Hypernet strength", "1.0")
        prompt_text += f"<hypernet:{hypernet}:{strength}>"
    return InfoText(prompt_text, "\n".join(negative) if negative is not None else None, params)


def format_infotext(info: InfoText) -> str:
    """Write `info` the way A1111 writes it; `parse_infotext(format_infotext(x)) == x` for normal values."""
    out = [info.prompt]
    if info.negative_prompt is not None:
        out.append(f"{NEGATIVE} {info.negative_prompt}")
    if info.params:
        out.append(", ".join(f"{k}: {_quote(str(v))}" for k, v in info.params.items()))
    return "\n".join(out)
