"""Migration policy and the `syntax` strategy: what happens to SD1-only syntax when a prompt moves to SD2.

DESIGN §3: translate only leaf text; keep weights, escapes, BREAK/AND, editing, alternation, wildcards and
unknown tags. SD1 LoRAs, LyCORIS, hypernetworks and textual-inversion embeddings cannot load in SD2 (their
tensors are sized for a 768-d text encoder; SD2's is 1024-d): drop or keep them by option, always warn.
`Clip skip: 2` is warned about (SD2 already conditions on the penultimate layer), and so is a size that
does not fit the target preset.

The `syntax` strategy = this policy + whitespace/comma normalisation, no learned rewriting. It is what
`translate`/`migrate` use without an adapter and the second baseline in eval. It is idempotent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from bridge.syntax import comfyui
from bridge.syntax.infotext import InfoText
from bridge.syntax.prompt import (
    COMFY_EMBEDDING, DEFAULT_EMBEDDINGS, NETWORK_KINDS, Alternation, And, AndWeight, Break, Edit, Embedding, Emphasis, Network, Prompt, PromptWarning, Text,
    parse, serialize, walk,
)


SOURCE_SYNTAXES = ("a1111", "novelai", "comfyui")
OUTPUT_SYNTAXES = ("a1111", "comfyui")
FAITHFULNESS = ("strict", "lenient", "off")  # bridge.models.faithfulness reads them


@dataclass
class MigrationPolicy:
    """What to do with SD1-only syntax when migrating a prompt to the target model."""

    networks: Literal["drop", "keep", "map"] = field(
        default="drop", metadata={"help": "extra-network tags (<lora:…>, <lyco:…>, <hypernet:…>): drop, keep, or "
                                          "map through --network-map (unmapped ones are dropped)"})
    network_map: Path | None = field(
        default=None, metadata={"help": "JSON object {sd1_name: sd2_name} of SD2 equivalents, for --networks map"})
    embeddings: Literal["drop", "keep"] = field(
        default="drop", metadata={"help": "SD1 textual-inversion embeddings (from the known list): drop or keep"})
    known_embeddings: list[str] = field(
        default_factory=list, metadata={"help": "embedding names to recognise besides the built-in list"})
    syntax: Literal["a1111", "novelai", "comfyui"] = field(
        default="a1111", metadata={"help": "the dialect the prompts were written in: a1111 (braces {x} are text, as "
                                           "A1111 reads them), novelai (braces weight x1.05 each; converted to "
                                           "A1111's (x:1.05)) or comfyui ((x:w) sets the weight, [x] is text)"})
    to_syntax: Literal["a1111", "comfyui"] | None = field(
        default=None, metadata={"help": "the dialect to write translations in (default: comfyui for --syntax "
                                        "comfyui, else a1111); weights are kept, and what the dialect cannot say "
                                        "is warned about"})
    faithfulness: Literal["strict", "lenient", "off"] = field(
        default="strict", metadata={"help": "the guard on learned rewrites: strict (a rewrite may drop or add only "
                                            "the words its adapter learned to change, else the syntax output is "
                                            "used, with a rewrite-unfaithful warning), lenient (also lets an "
                                            "unseen word be replaced in place by any word the adapter learned "
                                            "to write) or off (rewrites unchecked)"})
    normalize: bool = field(default=True, metadata={
        "help": "collapse whitespace and empty comma items",
        "off_help": "keep whitespace and empty comma items as written"})

    def __post_init__(self):
        for name, allowed in (("syntax", SOURCE_SYNTAXES), ("to_syntax", (None,) + OUTPUT_SYNTAXES),
                              ("faithfulness", FAITHFULNESS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of "
                                 f"{', '.join(a for a in allowed if a)}")
        if self.network_map is not None:
            self.network_map = Path(self.network_map)
        if self.networks == "map" and self.network_map is None:
            raise ValueError("networks='map' needs network_map (a JSON file {sd1_name: sd2_name})")

    @property
    def output_syntax(self) -> str:
        """The dialect translations are written in: `to_syntax`, else ComfyUI's for ComfyUI prompts."""
        return self.to_syntax or ("comfyui" if self.syntax == "comfyui" else "a1111")

    def write_a1111(self, command: str) -> None:
        """For commands that render translations: the renderer reads A1111, so they are written in A1111."""
        if self.to_syntax not in (None, "a1111"):
            raise ValueError(f"`sd-bridge {command}` renders its translations, which it reads as A1111 prompts; "
                             f"--to-syntax {self.to_syntax} is for translate, migrate and inspect")
        self.to_syntax = "a1111"

    @classmethod
    def of(cls, cfg: "MigrationPolicy") -> "MigrationPolicy":
        """The MigrationPolicy part of a command config that extends it (flags map 1:1 onto its fields)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def embedding_names(self) -> frozenset[str]:
        return frozenset(DEFAULT_EMBEDDINGS) | frozenset(self.known_embeddings)

    def load_network_map(self) -> dict[str, str]:
        if self.network_map is None:
            return {}
        try:
            table = json.loads(Path(self.network_map).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"network map not found: {self.network_map}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"network map {self.network_map} is not valid JSON: {err}") from None
        if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise ValueError(f"network map {self.network_map} must be a JSON object of name -> name strings")
        return table


@dataclass
class SyntaxResult:
    prompt: str
    warnings: list[PromptWarning]


_SPACES = re.compile(r"(?<!\\)\s+")  # whitespace right after a backslash is escaped: leave it
_COMMAS = re.compile(r"\s*,(?:\s*,)+")
_SPACE_COMMA = re.compile(r"\s+,")


def _normalize_text(raw: str, first: bool, last: bool) -> str:
    raw = _SPACE_COMMA.sub(",", _COMMAS.sub(",", _SPACES.sub(" ", raw)))
    if first:
        raw = raw.lstrip(" ,")
    if last:  # trailing spaces and the empty item a dropped tag leaves: "blurry, EasyNegative" -> "blurry"
        stripped = raw.rstrip(" ,")
        if len(stripped) < len(raw) and (len(stripped) - len(stripped.rstrip("\\"))) % 2:
            stripped += raw[len(stripped)]  # that whitespace is escaped by the backslash before it
        raw = stripped
    return raw


def _is_empty(nodes: list) -> bool:
    return all(type(n) is Text and not n.raw.strip(" ,") for n in nodes)


class _Migrator:
    def __init__(self, policy: MigrationPolicy, mapping: dict[str, str]):
        self.policy = policy
        self.mapping = {k.lower(): v for k, v in mapping.items()}
        # Names that are already target equivalents stay, so applying the policy twice changes nothing.
        self.mapped = {v.lower() for v in mapping.values()}
        self.warnings: list[PromptWarning] = []

    def warn(self, code: str, message: str, node) -> None:
        raw = serialize([node])
        self.warnings.append(PromptWarning(code, message, (node.start, node.start + len(raw))))

    def network(self, node: Network) -> list:
        p = self.policy
        where = f"<{node.kind}:{node.name}>"
        if p.networks == "keep":
            self.warn("network-kept", f"{where} is an SD1 {node.kind}: it cannot load in the target model "
                                      "(768- vs 1024-d text encoder); kept by policy", node)
            return [node]
        if p.networks == "map" and node.name.lower() in self.mapped:
            return [node]
        if p.networks == "map" and node.name.lower() in self.mapping:
            new = self.mapping[node.name.lower()]
            args = node.args
            args[0] = new
            self.warn("network-mapped", f"{where} mapped to the target equivalent {new!r}", node)
            return [Network(f"<{node.kind}:{':'.join(args)}>", node.start)]
        self.warn("network-dropped", f"{where} dropped: SD1 {node.kind} weights cannot load in the target model", node)
        return []

    def nodes(self, nodes: list) -> list:
        out: list = []
        for node in nodes:
            t = type(node)
            if t is Network:
                if node.kind.lower() in NETWORK_KINDS:
                    out.extend(self.network(node))
                else:
                    out.append(node)  # unknown tags are kept verbatim
            elif t is Embedding:
                if self.policy.embeddings == "keep":
                    self.warn("embedding-kept", f"embedding {node.name!r} is SD1 textual inversion: it cannot "
                                                "load in the target model; kept by policy", node)
                    out.append(node)
                else:
                    self.warn("embedding-dropped", f"embedding {node.name!r} dropped: SD1 textual-inversion "
                                                   "vectors do not fit the target's text encoder", node)
            elif t is Emphasis:
                braces = node.open == "{" and node.close == "}"  # only parsed as emphasis from NovelAI syntax
                chain = _brace_chain(node) if braces else [node]
                inner = chain[-1].children
                children = self.nodes(inner)
                if _is_empty(children) and not _is_empty(inner):
                    continue  # everything inside was dropped: drop the brackets too
                converted = Emphasis("(", children, f":{round(1.05 ** len(chain), 4):g})", node.start)
                if braces and _reads_back(converted):
                    self.warn("braces-converted", "NovelAI braces {x} (x1.05) rewritten as A1111 (x:1.05): "
                                                  "A1111 reads braces as plain text", node)
                    out.append(converted)
                else:
                    for level in reversed(chain):
                        children = [Emphasis(level.open, children, level.close, level.start)]
                    out.extend(children)
            elif t is Edit:
                out.append(Edit([self.nodes(part) for part in node.parts], node.when_raw, node.start))
            elif t is Alternation:
                out.append(Alternation([self.nodes(o) for o in node.options], node.start))
            elif t is Text and out and type(out[-1]) is Text:
                out[-1] = Text(out[-1].raw + node.raw, out[-1].start)  # rejoin text split by a dropped node
            else:
                out.append(node)
        return out


def _reads_back(node: Emphasis) -> bool:
    """True when `node` serialized and parsed again is the same one bracket (a stray `)`, an unclosed
    bracket or a `<` inside could pair up with the new `(…:w)` differently)."""
    if any(type(n) is Text and "<" in n.raw for n, _, _ in walk(node.children)):
        return False  # `<…:1.05)` could start an extra-network tag that runs past the new bracket
    again = parse(serialize([node]))
    return len(again.nodes) == 1 and type(again.nodes[0]) is Emphasis and serialize(again.nodes[0].children) == \
        serialize(node.children) and not again.warnings


def _brace_chain(node: Emphasis) -> list[Emphasis]:
    """{{x}} -> [outer, inner]: directly nested closed braces, which multiply (1.05 each, as in NovelAI)."""
    chain = [node]
    while (len(chain[-1].children) == 1 and type(chain[-1].children[0]) is Emphasis
           and chain[-1].children[0].open == "{" and chain[-1].children[0].close == "}"):
        chain.append(chain[-1].children[0])
    return chain


def _normalize(nodes: list, first: bool = True, last: bool = True) -> list:
    out: list = []
    for k, node in enumerate(nodes):
        is_first, is_last = first and k == 0, last and k == len(nodes) - 1
        t = type(node)
        if t is Text:
            raw = _normalize_text(node.raw, is_first or (k > 0 and type(nodes[k - 1]) in (And, Break)),
                                  is_last or (k + 1 < len(nodes) and type(nodes[k + 1]) in (And, Break)))
            if raw:
                out.append(Text(raw, node.start))
        elif t is Emphasis:
            out.append(Emphasis(node.open, _normalize(node.children, True, True), node.close, node.start))
        elif t is Edit:
            out.append(Edit([_normalize(p, True, True) for p in node.parts], node.when_raw, node.start))
        elif t is Alternation:
            out.append(Alternation([_normalize(o, True, True) for o in node.options], node.start))
        else:
            out.append(node)
    return _space_separators(out)


def _space_separators(nodes: list) -> list:
    """Exactly one space on each inner side of BREAK/AND, so they stay separate words."""
    out: list = []
    for k, node in enumerate(nodes):
        if type(node) in (And, Break) and out:
            if type(out[-1]) is Text:
                out[-1] = Text(_normalize_text(out[-1].raw, False, True).rstrip(" ") + " ", out[-1].start)
            elif not serialize(out[-1:])[-1:].isspace():
                out.append(Text(" ", node.start))
        elif k > 0 and type(nodes[k - 1]) in (And, Break) and type(node) is not AndWeight:
            if type(node) is Text:
                node = Text(" " + node.raw.lstrip(" ,"), node.start)
            else:
                out.append(Text(" ", node.start))
        out.append(node)
    return out


def read_prompt(text: str, policy: MigrationPolicy, negative: bool = False) -> Prompt:
    """`text`, written in the policy's source dialect, as an A1111 prompt tree: everything downstream (the
    policy, the rewriter, token budgets, rendering) reads A1111. A ComfyUI prompt is converted first, keeping
    every weight (`bridge.syntax.comfyui.to_a1111`); its conversion warnings come first."""
    if policy.syntax != "comfyui":
        return parse(text, policy.embedding_names(), negative=negative, syntax=policy.syntax)
    converted = comfyui.to_a1111(text, negative)
    parsed = parse(converted.prompt, policy.embedding_names(), negative=negative)
    parsed.warnings = converted.warnings + parsed.warnings
    return parsed


def write_prompt(text: str, policy: MigrationPolicy, negative: bool = False) -> SyntaxResult:
    """An A1111 prompt (a translation) written in the policy's output dialect, with what that dialect cannot
    say as warnings."""
    if policy.output_syntax == "comfyui":
        converted = comfyui.from_a1111(text, negative, embeddings=policy.embedding_names())
        return SyntaxResult(converted.prompt, converted.warnings)
    if policy.syntax == "comfyui":  # A1111 names an embedding by its bare name
        text = COMFY_EMBEDDING.sub(r"\1", text)
    return SyntaxResult(text, [])


def apply_policy(prompt: Prompt | str, policy: MigrationPolicy | None = None,
                 network_map: dict[str, str] | None = None) -> SyntaxResult:
    """The `syntax` strategy for one prompt: policy decisions + normalisation, with structured warnings."""
    policy = policy or MigrationPolicy()
    if isinstance(prompt, str):
        prompt = read_prompt(prompt, policy)
    mapping = network_map if network_map is not None else policy.load_network_map()
    migrator = _Migrator(policy, mapping)
    nodes = migrator.nodes(prompt.nodes)
    if policy.normalize:
        nodes = _normalize(nodes)
    return SyntaxResult(serialize(nodes), list(prompt.warnings) + migrator.warnings)


# A1111 infotext keys that name or configure the SD1 checkpoint itself (modules/processing.py `create_infotext`):
# pasted into A1111 with an SD2 model loaded, "Model"/"Model hash" switch the checkpoint back to SD1 when it is
# installed, "VAE" loads an SD1 VAE, "Clip skip" changes which text layer is read. They are dropped for an SD2
# target. (Hypernet names are turned into a prompt tag by parse_infotext, where the network policy handles them.)
SD1_SETTINGS = ("Model", "Model hash", "VAE", "VAE hash", "Clip skip", "Hypernet hash")
# Hashes of the SD1 networks and embeddings a prompt used: stale once the policy has dropped them.
NETWORK_HASHES = {"Lora hashes": "networks", "TI hashes": "embeddings"}


def migrate_parameters(params: dict, target, policy: MigrationPolicy | None = None) -> tuple[dict, list[PromptWarning]]:
    """Generation parameters (A1111 infotext keys) fitted to `target`: for an SD2 target the SD1 checkpoint's
    settings are dropped, and the hashes of networks and embeddings the policy dropped go with them, all named
    in one `sd1-settings` warning; a `Size` that does not fit the target is kept and flagged (`size`) with a
    suggestion. Values are kept as given, in order."""
    policy = policy or MigrationPolicy()
    params = {str(k): v for k, v in params.items()}
    dropped = {}
    if target.family == "sd2":
        for key in list(params):
            setting = NETWORK_HASHES.get(key)
            if key in SD1_SETTINGS or (setting is not None and getattr(policy, setting) == "drop"):
                dropped[key] = params.pop(key)
    warnings = []
    if dropped:
        listed = ", ".join(f"{k}: {v}" for k, v in dropped.items())
        why = ("; SD2 already reads the penultimate text-encoder layer" if "Clip skip" in dropped else "")
        warnings.append(PromptWarning(
            "sd1-settings", f"SD1 settings dropped for {target.name}: {listed} (pasted into A1111 they would load "
                            f"SD1's model, VAE or text layer{why})"))
    size = InfoText("", None, {k: str(v) for k, v in params.items()}).size
    if size is not None and not size_fits(size, target.size):
        w, h = size
        warnings.append(PromptWarning(
            "size", f"Size {w}x{h} does not fit {target.name} (native {target.size}x{target.size}); "
                    f"suggested {suggest_size(size, target.size)}"))
    return params, warnings


def size_fits(size: tuple[int, int], native: int) -> bool:
    """A size fits when both sides are multiples of 8 and the short side is within 75–200% of native."""
    w, h = size
    return w % 8 == 0 and h % 8 == 0 and 0.75 * native <= min(w, h) and max(w, h) <= 2 * native


def suggest_size(size: tuple[int, int], native: int) -> str:
    """Same aspect ratio, short side at the native resolution, sides rounded to multiples of 64."""
    w, h = size
    scale = native / min(w, h)
    return f"{max(64, round(w * scale / 64) * 64)}x{max(64, round(h * scale / 64) * 64)}"


__all__ = ["MigrationPolicy", "SyntaxResult", "apply_policy", "migrate_parameters", "read_prompt", "size_fits",
           "suggest_size", "write_prompt"]
