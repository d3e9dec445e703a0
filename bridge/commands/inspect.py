"""`sd-bridge inspect`: what a prompt contains, what it costs in tokens, and what the `syntax` strategy makes of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from bridge.models import presets
from bridge.syntax import comfyui
from bridge.syntax.a1111 import BREAK, DEFAULT_STEPS, attention, read, schedule
from bridge.syntax.policy import MigrationPolicy, apply_policy, read_prompt, write_prompt
from bridge.syntax.prompt import Alternation, AndWeight, Edit, Emphasis, Variants, embeddings, networks, weighted_spans
from bridge.syntax.tokens import token_budget


@dataclass
class InspectConfig(MigrationPolicy):
    """Show a prompt's tree, weights, tags, embeddings, tokens per chunk, warnings and its `syntax` migration."""

    # The guard checks learned rewrites; inspect shows the syntax strategy's view of a prompt.
    faithfulness: Literal["strict", "lenient", "off"] = field(default="strict", metadata={"cli": False})

    prompt: str | None = field(default=None, metadata={"help": "the prompt", "positional": "?"})
    negative: str | None = field(default=None, metadata={"help": "a negative prompt to inspect too"})
    target: str = field(default=presets.DEFAULT_TARGET, metadata={"help": "target pipeline preset (token budget, size)"})
    steps: int = field(default=DEFAULT_STEPS, metadata={"help": "sampling steps to show the editing schedule for"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})

    def __post_init__(self):
        super().__post_init__()
        if self.prompt is None:
            raise ValueError("give a prompt: sd-bridge inspect \"(masterpiece:1.2), a cat\"")
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        presets.pipeline(self.target)


def analyse(text: str, policy: MigrationPolicy, target: presets.PipelinePreset, negative: bool = False,
            steps: int = DEFAULT_STEPS) -> dict:
    parsed = read_prompt(text, policy, negative)  # a ComfyUI prompt is read as its A1111 equivalent
    a1111_text = parsed.source
    counts, budget_warnings = token_budget(a1111_text, truncates=target.truncates, negative=negative, steps=steps)
    migrated = apply_policy(parsed, policy)
    written = write_prompt(migrated.prompt, policy, negative)
    return {
        "roundtrip": parsed.serialize(),
        **({"as_a1111": a1111_text} if policy.syntax == "comfyui" else {}),
        "tree": format_tree(parsed.nodes),
        "weights": intended_weights(text, policy, parsed, negative, steps),
        "schedule": schedule(a1111_text, steps, negative),
        "networks": networks(parsed.nodes),
        "embeddings": embeddings(parsed.nodes),
        "chunks": counts,
        "warnings": [w.to_dict() for w in migrated.warnings + budget_warnings + written.warnings],
        "syntax": written.prompt,
    }


def intended_weights(text: str, policy: MigrationPolicy, parsed, negative: bool, steps: int) -> list[dict]:
    """The weights the prompt was drawn with, as its own dialect reads them: A1111's reading at the last step
    (malformed brackets included), ComfyUI's, or for NovelAI the tree, which weighs its braces."""
    if policy.syntax == "novelai":
        return weighted_spans(parsed.nodes)
    if policy.syntax == "comfyui":
        return [{"text": t, "weight": round(w, 6)} for t, w in comfyui.attention(text) if t.strip() and w != 1.0]
    return a1111_weights(text, negative, steps)


def a1111_weights(text: str, negative: bool, steps: int) -> list[dict]:
    """`{text, weight}` of each non-blank run whose weight is not 1, as A1111 reads it at the last of `steps`."""
    return [{"text": t, "weight": round(w, 6)} for part in read(text, negative, steps)
            for t, w in attention(part.schedule[-1][1])
            if t.strip() and abs(w - 1.0) > 1e-9 and (t, w) != BREAK]


def format_tree(nodes, depth: int = 0, weight: float = 1.0) -> list[str]:
    lines = []
    pad = "  " * depth
    for node in nodes:
        t = type(node)
        if t is Emphasis:
            w = weight * node.factor
            close = node.close or "(unclosed)"
            lines.append(f"{pad}Emphasis {node.open}…{close}  x{node.factor:.4g} -> {w:.4g}")
            lines += format_tree(node.children, depth + 1, w)
        elif t is Edit:
            lines.append(f"{pad}Edit when={node.when_raw.strip()}")
            names = ["from", "to"] if len(node.parts) == 2 else ["to"]
            for name, part in zip(names, node.parts):
                lines.append(f"{pad}  {name}:")
                lines += format_tree(part, depth + 2, weight)
        elif t in (Alternation, Variants):
            lines.append(f"{pad}{t.__name__} ({len(node.options)} options)")
            for option in node.options:
                lines.append(f"{pad}  |")
                lines += format_tree(option, depth + 2, weight)
        elif t is AndWeight:
            lines.append(f"{pad}AndWeight {node.weight:g}")
        else:
            lines.append(f"{pad}{t.__name__} {node.raw!r}")
    return lines


def run_inspect(cfg: InspectConfig, log=print) -> dict:
    policy, target = MigrationPolicy.of(cfg), presets.pipeline(cfg.target)
    report = analyse(cfg.prompt, policy, target, steps=cfg.steps)
    if cfg.negative is not None:
        report["negative"] = analyse(cfg.negative, policy, target, negative=True, steps=cfg.steps)
    if cfg.json:
        log(json.dumps(report, ensure_ascii=False, indent=2))
        return report
    for title, part in [("prompt", report)] + ([("negative prompt", report["negative"])] if "negative" in report else []):
        log(f"== {title}")
        if "as_a1111" in part:
            log(f"as A1111: {part['as_a1111']}")
        log("\n".join(part["tree"]) or "(empty)")
        if part["weights"]:
            log("weights: " + ", ".join(f"{w['text'].strip()!r} x{w['weight']:.4g}" for w in part["weights"]))
        if part["networks"]:
            log("networks: " + ", ".join(f"<{n['type']}:{n['name']}> w={n['weight']}" for n in part["networks"]))
        if part["embeddings"]:
            log("embeddings: " + ", ".join(part["embeddings"]))
        sched = part["schedule"]
        show_parts = len(sched) > 1 or sched[0]["weight"] != 1
        if show_parts or len(sched[0]["steps"]) > 1:
            for k, p in enumerate(sched):
                head = f"AND part {k + 1} (weight {p['weight']:g})" if show_parts else "schedule"
                log(f"{head}, over {cfg.steps} steps:")
                for entry in p["steps"]:
                    log(f"  until step {entry['until_step']:>3}: {entry['text']!r}")
        log(f"tokens per chunk ({cfg.target}): {part['chunks']}")
        for w in part["warnings"]:
            log(f"warning [{w['code']}] {w['message']}")
        log(f"syntax: {part['syntax']}")
    return report
